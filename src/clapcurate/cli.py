"""The `clapcurate` command: argument parsing only; the work is done by the library.

User errors (missing files, bad configs) print one message and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .device import PRECISIONS
from .errors import ClapcurateError

EXIT_USER_ERROR = 2


def _console():
    from rich.console import Console

    return Console()


def _audio_settings(assignments: list[str] | None) -> dict:
    """`KEY=VALUE` pairs (values parsed as YAML) -> AudioConfig keywords."""
    import yaml

    settings = {}
    for assignment in assignments or []:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise ClapcurateError(f"--set expects KEY=VALUE (an audio setting, e.g. fmax=18000), got {assignment!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def _import_published(args, families: tuple[str, ...]):
    from .model import checkpoints

    model = checkpoints.import_checkpoint(Path(args.checkpoint), text_encoder=args.text_encoder, families=families,
                                          **_audio_settings(args.set))
    out = checkpoints.save(model, args.out_dir)
    audio = model.config.audio
    _console().print(f"{args.checkpoint} ({audio.encoder}, {audio.sample_rate} Hz, {audio.clip_seconds:g} s clips) "
                     f"saved as a clapcurate checkpoint in {out}")


def cmd_import_msclap(args):
    _import_published(args, ("msclap-2022", "msclap-2023"))


def cmd_import_laion_clap(args):
    _import_published(args, ("laion-clap",))


def cmd_synth(args):
    from .data.synth import generate_world

    paths = generate_world(args.out_dir, seed=args.seed, scale=args.scale, progress=True)
    _console().print(f"[bold]embedded world written to[/bold] {Path(args.out_dir).resolve()}")
    _console().print(paths)


def _overrides(args, device_key: str = "trainer.device") -> list[str]:
    """`--set` overrides plus the run flags (`--resume`, `--overwrite`) and `--device` (as
    `device_key`) as config keys."""
    flags = [f"{flag}=true" for flag in ("resume", "overwrite") if getattr(args, flag, False)]
    device = [f"{device_key}={args.device}"] if getattr(args, "device", None) else []
    return list(args.set or []) + flags + device


def _device(args):
    """The `torch.device` of `--device` (a GPU this machine lacks is a one-line error)."""
    from .device import resolve_device

    return resolve_device(args.device)


def cmd_fit_teacher(args):
    from . import train

    overrides = _overrides(args)
    if args.subset is not None:
        overrides.append(f"data.subset={args.subset}")
    config = train.load_teacher_config(args.config, overrides)
    run_dir = train.fit_teacher(config)
    if train.fit.first_process():  # the other processes of a multi-process fit say nothing
        _console().print(f"teacher checkpoints in {run_dir}")


def cmd_pretrain_audio(args):
    from . import train

    config = train.load_tagger_config(args.config, _overrides(args))
    run_dir = train.fit_tagger(config)
    if train.fit.first_process():
        _console().print(f"pretrained audio encoder: {run_dir / 'best' / train.module.TAGGER_CHECKPOINT} "
                         "(start a teacher from it with init_audio_encoder)")


def cmd_fit_student(args):
    from . import train

    config = train.load_student_config(args.config, _overrides(args))
    run_dir = train.fit_student(config)
    if train.fit.first_process():
        _console().print(f"student checkpoints in {run_dir}")


def cmd_embed(args):
    from .data.readers import check_data
    from .embed import SKIPPED_FILE, embed_manifest, embedding_counts
    from .model.checkpoints import require_model_path

    require_model_path(args.model, "--model")
    device = _device(args)
    check_data(args.manifest, "--manifest")
    out = embed_manifest(args.model, args.manifest, args.out, modality=args.modality,
                         batch_size=args.batch_size, shard_size=args.shard_size,
                         num_workers=args.num_workers, progress=True, text_encoder=args.text_encoder,
                         device=device, precision=args.precision)
    rows, skipped = embedding_counts(out)
    note = f"; {skipped} skipped, listed in {out / SKIPPED_FILE}" if skipped else ""
    _console().print(f"{rows} {args.modality} embeddings in {out}{note}")
    if args.modality == "audio":
        _report_embedded_duplicates(out, args.manifest, device)


def _report_embedded_duplicates(folder, data, device) -> None:
    from .content import embedded_duplicates
    from .data.readers import read_data
    from .embed import load_embeddings, unique_clips

    ids, embeddings = load_embeddings(folder)
    path_of = dict(zip(*unique_clips(read_data(data))[["clip_id", "audio_path"]].to_numpy().T))
    groups = embedded_duplicates(embeddings, [path_of[clip_id] for clip_id in ids], device)
    if groups:
        repeats = sum(len(group) - 1 for group in groups)
        _console().print(f"[yellow]warning:[/yellow] {repeats} embedded clip(s) repeat the audio of another "
                         f"({len(groups)} group(s), e.g. {' = '.join(groups[0])}); `clapcurate inspect` lists "
                         f"them all", highlight=False, soft_wrap=True)


def cmd_manifest(args):
    from .data.manifest import manifest_counts, write_manifest
    from .data.readers import MANIFEST_SUFFIXES, check_data, read_data
    from .files import check_output_file

    check_data(args.data, "DATA")
    if Path(args.out).suffix.lower() not in MANIFEST_SUFFIXES:
        raise ClapcurateError(f"{args.out}: a manifest is written as {' or '.join(MANIFEST_SUFFIXES)}")
    if Path(args.out).exists() and not args.overwrite:
        raise ClapcurateError(f"{args.out} exists: replace it with --overwrite or choose another file")
    check_output_file(args.out, "manifest")
    manifest = read_data(args.data)
    out = write_manifest(manifest, args.out)
    counts = manifest_counts(manifest)
    _console().print(f"{out}: {counts['rows']} rows, {counts['clips']} clips, {counts['captions']} captions, "
                     f"{counts['labels']} labels (use it wherever {args.data} goes)")


def cmd_inspect(args):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .content import PROBLEMS, inspect_files, inspection_tables
    from .data.readers import check_data, read_data
    from .files import check_output_file

    check_data(args.data, "DATA")
    if args.csv:
        check_output_file(args.csv, "inspection table")
    paths = list(dict.fromkeys(read_data(args.data)["audio_path"]))
    console = _console()
    with Progress(TextColumn("inspecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("files", total=len(paths))
        table = inspect_files(paths, advance=lambda n: bar.advance(task, n))
    for rich_table in inspection_tables(table):
        console.print(rich_table)
    problems = table["problem"].value_counts()
    summary = ", ".join(f"{problems[problem]} {problem}" for problem in PROBLEMS if problem in problems)
    summary = summary or "no problem files"
    copies = int((table["duplicate_group"] > 0).sum())
    console.print(f"{len(table)} files of {args.data}: {summary}; {copies} files in "
                  f"{table['duplicate_group'].max() if copies else 0} group(s) of duplicate content", highlight=False)
    if args.csv:
        table.to_csv(args.csv, index=False, lineterminator="\n")
        console.print(f"one row per file in {args.csv}")


def cmd_curate(args):
    from . import curate

    config = curate.load_curation_config(args.config, _overrides(args, "device"))
    out = curate.run_curation(args.method, config)
    stats = json.loads((out.parent / curate.STATS_FILE).read_text())
    console = _console()
    console.print(curate.summary_text(stats), highlight=False, soft_wrap=True)
    for warning in stats["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"Improvement-Set written to {out} (the numbers above are in {curate.STATS_FILE} beside it)",
                  soft_wrap=True)


def cmd_evaluate(args):
    import pandas as pd
    from rich.table import Table

    from .data.readers import check_data, read_data
    from .files import check_output_file, check_output_folder
    from .model import load_model
    from .model.checkpoints import require_model_path
    from .zeroshot import evaluate

    require_model_path(args.model, "--model")
    device = _device(args)
    skipped_file = args.skipped or (_beside(args.out, "skipped") if args.out else None)
    for path, what in ((args.out, "results file"), (skipped_file, "list of skipped files")):
        if path:
            check_output_file(path, what)
    if args.feature_cache:
        check_output_folder(args.feature_cache, "feature cache folder")
    for spec in args.dataset:
        check_data(spec, "--dataset")
    manifests = {}
    for spec in args.dataset:  # every dataset is read and checked before the model loads
        manifests[spec] = read_data(spec)
        if not (manifests[spec]["label"] != "").any():
            raise ClapcurateError(f"{spec}: no class labels; zero-shot evaluation needs a labelled dataset "
                                  "(esc50:, urbansound8k:, tut2017:, or csv: with a label column)")
    model = load_model(args.model, args.text_encoder, device=device)
    table = Table(title=f"zero-shot accuracy of {args.model}")
    for column in ("dataset", "clips", "classes", "accuracy %", "skipped"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    rows, skipped = [], []
    for spec, manifest in manifests.items():
        result = evaluate(model, manifest, batch_size=args.batch_size, num_workers=args.num_workers,
                          progress=True, feature_cache=args.feature_cache)
        table.add_row(spec, str(result.n_clips), str(len(result.labels)),
                      f"{100 * result.accuracy:.1f}", str(len(result.skipped)))
        rows.append({"dataset": spec, "clips": result.n_clips, "classes": len(result.labels),
                     "accuracy_percent": round(100 * result.accuracy, 4), "skipped": len(result.skipped)})
        skipped += [(spec, r.audio_path, r.reason) for r in result.skipped.itertuples()]
    console = _console()
    console.print(table)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)
        console.print(f"results written to {args.out}", soft_wrap=True)
    _report_skipped(console, pd.DataFrame(skipped, columns=["dataset", "audio_path", "reason"]), skipped_file)


SKIPPED_SHOWN = 20  # skipped files listed on the console; all of them go to the --skipped file


def _beside(path: str, suffix: str) -> str:
    """`results.csv` -> `results.skipped.csv`."""
    path = Path(path)
    return str(path.with_name(f"{path.stem}.{suffix}.csv"))


def _report_skipped(console, skipped, path: str | None) -> None:
    """Name the skipped files (path and reason) on the console, and write them all to `path`."""
    if path:
        skipped.to_csv(path, index=False)
    if skipped.empty:
        return
    console.print(f"[yellow]{len(skipped)} file(s) skipped (unreadable, or audio the model cannot represent); "
                  "accuracy is over the others:[/yellow]", soft_wrap=True)
    for row in skipped.head(SKIPPED_SHOWN).itertuples():
        console.print(f"  {row.audio_path}: {row.reason}", soft_wrap=True, markup=False, highlight=False)
    if path:
        console.print(f"the list of skipped files is {path}", soft_wrap=True)
    elif len(skipped) > SKIPPED_SHOWN:
        console.print(f"  ... and {len(skipped) - SKIPPED_SHOWN} more (--skipped FILE writes them all)", soft_wrap=True)


def cmd_classify(args):
    import numpy as np
    import pandas as pd

    from .embed import embed_audio
    from .zeroshot import class_embeddings, similarity

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        raise ClapcurateError("--labels needs at least one label, e.g. --labels 'dog,rain,siren'")
    for f in args.files:
        if not Path(f).is_file():
            raise ClapcurateError(f"audio file not found: {f}")
    from .model import load_model

    model = load_model(args.model, args.text_encoder, device=_device(args))
    manifest = pd.DataFrame({"id": args.files, "clip_id": args.files,
                             "audio_path": [str(Path(f).resolve()) for f in args.files]})
    audio = embed_audio(model, manifest)
    scores = similarity(audio.embeddings, class_embeddings(model, labels))
    results = [{"file": clip_id, "top": [{"label": labels[i], "score": round(float(row[i]), 6)}
                                        for i in np.argsort(-row, kind="stable")[: args.top]], "skipped": None}
               for clip_id, row in zip(audio.ids, scores)]
    results += [{"file": str(r.id), "top": [], "skipped": r.reason} for r in audio.skipped.itertuples()]
    order = {path: i for i, path in enumerate(args.files)}
    results.sort(key=lambda result: order[result["file"]])  # the order the files were given in
    _print_classification(results, args.format)


def _print_classification(results: list[dict], output_format: str) -> None:
    """`classify`'s results as a table (full paths, never folded), CSV (one row per file and
    rank: file, rank, label, score, skipped) or JSON (a list of {file, top: [{label, score}],
    skipped}) on stdout."""
    if output_format == "json":
        import json

        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    elif output_format == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", "rank", "label", "score", "skipped"])
        for result in results:
            if result["skipped"] is not None:
                writer.writerow([result["file"], "", "", "", result["skipped"]])
            for rank, top in enumerate(result["top"], start=1):
                writer.writerow([result["file"], rank, top["label"], f"{top['score']:.6f}", ""])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="zero-shot classification (cosine similarity)")
        table.add_column("file", no_wrap=True)
        table.add_column("top labels")
        for result in results:
            text = (f"[red]skipped: {result['skipped']}[/red]" if result["skipped"] is not None
                    else ", ".join(f"{top['label']} {top['score']:.3f}" for top in result["top"]))
            table.add_row(result["file"], text)
        console = Console()
        if not console.is_terminal:  # a pipe or a file: as wide as the longest path needs
            widest = max((len(result["file"]) for result in results), default=0)
            console = Console(width=max(console.width, widest + 60))
        console.print(table)


def cmd_study(args):
    from .study import load_study_config, run_study

    config = load_study_config(args.config, _overrides(args, "device"))
    run_study(config)


def cmd_browse(args):
    from .browse import matched_windows, read_curated_set, write_browser

    if bool(args.world) != bool(args.train_manifest):
        raise ClapcurateError("--world and --train-manifest go together (ground truth of the embedded world)")
    rows = read_curated_set(args.curated).rows if (args.world or args.teacher) else None
    right = windows = None
    if args.world:
        from .study.groundtruth import WorldTruth

        benchmark = read_curated_set(args.curated).stats.get("benchmark")
        right = WorldTruth(args.world).pair_is_right(rows, args.train_manifest, benchmark)
    if args.teacher:
        from .model import load_model

        windows = matched_windows(rows, load_model(args.teacher, args.text_encoder, device=_device(args)))
    page = write_browser(args.curated, args.out, limit=args.limit, right=right, windows=windows, audio=args.audio)
    _console().print(f"Improvement-Set browser written to {page} (open it in a browser; no server needed)")


def _device_setting(text: str) -> str:
    """argparse type of `--device`."""
    from .device import check_device

    try:
        return check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _workers(text: str) -> int | str:
    """argparse type of `--num-workers`: auto or a number >= 0."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected auto or a number >= 0, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clapcurate",
        description="Improve a CLAP model without new labels: curate pairs with a teacher, "
                    "train a student with soft labels and replay, evaluate zero-shot.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_device(p, default: str | None = "auto", key: str | None = None):
        p.add_argument("--device", default=default, type=_device_setting,
                       help="where the models run: auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N"
                            + (f" (sets the config key {key})" if key else ""))

    def with_workers(p):
        p.add_argument("--num-workers", type=_workers, default="auto",
                       help="DataLoader workers decoding audio: a number, or auto (several on a GPU, none on the CPU)")

    def with_config(p, resume: bool = True, device_key: str = "trainer.device"):
        p.add_argument("--config", required=True, help="YAML config file")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
        if resume:
            p.add_argument("--resume", action="store_true", help="continue an interrupted run in out_dir")
        p.add_argument("--overwrite", action="store_true", help="replace a finished output in out_dir")
        with_device(p, None, device_key)

    def with_import_options(p, text_encoders: str):
        p.add_argument("out_dir")
        p.add_argument("--text-encoder",
                       help=f"name or folder of the text encoder whose architecture and tokenizer the weights fit "
                            f"(default {text_encoders})")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="an audio setting the weights do not reveal (e.g. fmax=18000, clip_seconds=20)")

    p = sub.add_parser("import-msclap", help="convert MS CLAP 2022 or 2023 weights into a checkpoint folder")
    p.add_argument("checkpoint", help="CLAP_weights_2022.pth or CLAP_weights_2023.pth")
    with_import_options(p, "bert-base-uncased for 2022, gpt2 for 2023")
    p.set_defaults(func=cmd_import_msclap)

    p = sub.add_parser("import-laion-clap", help="convert LAION-CLAP weights into a checkpoint folder")
    p.add_argument("checkpoint", help="e.g. 630k-audioset-best.pt, music_speech_audioset_epoch_15_esc_89.98.pt")
    with_import_options(p, "roberta-base")
    p.set_defaults(func=cmd_import_laion_clap)

    p = sub.add_parser("synth", help="write the embedded synthetic world")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("pretrain-audio", help="pretrain an audio encoder as a tagger on labelled clips")
    with_config(p)
    p.set_defaults(func=cmd_pretrain_audio)

    p = sub.add_parser("fit-teacher", help="train a CLAP teacher on captioned pairs")
    with_config(p)
    p.add_argument("--subset", type=float, help="train on this random fraction of the pairs (e.g. 0.1)")
    p.set_defaults(func=cmd_fit_teacher)

    p = sub.add_parser("fit-student", help="train a student on an Improvement-Set with replay")
    with_config(p)
    p.set_defaults(func=cmd_fit_student)

    p = sub.add_parser("manifest", help="write the manifest of a dataset spec (to inspect, edit and pass on)")
    p.add_argument("data", help="a dataset spec KIND:PATH (e.g. folder:/data/pool) or a manifest file")
    p.add_argument("out", help="the manifest to write (.csv or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("inspect", help="look at a dataset's audio files: formats, rates, channels, durations, "
                                       "unreadable / near-empty / silent files, duplicate content")
    p.add_argument("data", help="a dataset spec KIND:PATH (e.g. folder:/data/pool) or a manifest file")
    p.add_argument("--csv", help="write one row per file (format, rate, channels, duration, peak, problem, "
                                 "content hash, duplicate group) to this CSV")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("embed", help="embed a manifest's audio or captions into resumable shards")
    p.add_argument("--model", required=True, help="checkpoint folder, or MS CLAP / LAION-CLAP weights")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--manifest", required=True, help="a manifest file or a dataset spec KIND:PATH")
    p.add_argument("--out", required=True)
    p.add_argument("--modality", choices=["audio", "text"], default="audio")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=50_000)
    with_workers(p)
    with_device(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (bf16 autocast on a GPU, float32 on the CPU), 32 or bf16-mixed")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("curate", help="curate a DU, DS or ADS Improvement-Set")
    p.add_argument("method", choices=["du", "ds", "ads"])
    with_config(p, resume=False, device_key="device")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("browse", help="write a static page to look at and listen to a curated set")
    p.add_argument("curated", help="curated folder (improvement_set.csv, stats.json, histogram data)")
    p.add_argument("--out", help="output folder (default: CURATED/browser)")
    p.add_argument("--limit", type=int, default=100, help="pairs (audio players) per page")
    p.add_argument("--audio", choices=["link", "copy"], default="link",
                   help="link the clips next to the page (relative symbolic links) or copy them")
    p.add_argument("--teacher", help="the teacher (checkpoint folder or published weights file): long clips play the window "
                                     "that matched the caption (one forward pass per window of the long clips)")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--world", help="embedded world folder: mark each pair right or wrong from its ground truth")
    p.add_argument("--train-manifest", help="with --world: the training data the captions came from "
                                            "(a manifest file or a dataset spec)")
    with_device(p)
    p.set_defaults(func=cmd_browse)

    p = sub.add_parser("evaluate", help="zero-shot accuracy on benchmark datasets")
    p.add_argument("--model", required=True, help="checkpoint folder, or MS CLAP / LAION-CLAP weights")
    p.add_argument("--dataset", action="append", required=True,
                   help="KIND:DIR, e.g. esc50:/data/ESC-50, or a manifest file (repeatable)")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--batch-size", type=int, default=64)
    with_workers(p)
    with_device(p)
    p.add_argument("--out", help="also write the table as CSV (accuracy in percent: column accuracy_percent)")
    p.add_argument("--skipped", help="write the skipped files (dataset, audio_path, reason) as CSV here "
                                     "(default with --out: OUT's name with .skipped.csv)")
    p.add_argument("--feature-cache", metavar="DIR",
                   help="keep the clips' log-mels here: later evaluations of models with the same front-end "
                        "read them instead of decoding the audio (same numbers)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("classify", help="zero-shot classification of audio files")
    p.add_argument("--model", required=True, help="checkpoint folder, or MS CLAP / LAION-CLAP weights")
    p.add_argument("--labels", required=True, help="comma-separated labels")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), or csv / json on stdout for scripts")
    p.add_argument("files", nargs="+")
    with_device(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("study", help="run the paper's study end to end (resumable)")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    with_device(p, None, "device")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClapcurateError as exc:
        print(f"clapcurate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # paths and permissions the checks before the work could not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"clapcurate {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; finished stages are kept and a re-run resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
