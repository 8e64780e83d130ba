"""The `clapcurate` command: argument parsing only; the work is done by the library.

User errors (missing files, bad configs) print one message and exit with status 2. SIGINT and
SIGTERM end any command with 130 and 143 (128 + the signal's number) and one line saying how to
resume.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from .device import PRECISIONS
from .errors import ClapcurateError

EXIT_USER_ERROR = 2


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


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
    from .model import checkpoints, imports

    model = imports.import_checkpoint(Path(args.checkpoint), text_encoder=args.text_encoder, families=families,
                                      **_audio_settings(args.set))
    out = checkpoints.save(model, args.out_dir)
    audio = model.config.audio
    _console().print(f"{args.checkpoint} ({audio.encoder}, {audio.sample_rate} Hz, {audio.clip_seconds:g} s clips) "
                     f"saved as a clapcurate checkpoint in {out}")


def cmd_export(args):
    from .export import export

    exported = export(args.model, args.out, args.format, text_encoder=args.text_encoder)
    for warning in exported.warnings:
        _console().print(f"warning: {warning}")
    _console().print(f"{args.model} written as {exported.format} to {exported.weights} (model card: "
                     f"{exported.folder / 'README.md'})")


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
    from .train.config import load_teacher_config

    overrides = _overrides(args)
    if args.subset is not None:
        overrides.append(f"data.subset={args.subset}")
    config = load_teacher_config(args.config, overrides)  # checked before torch is imported
    from .train.fit import first_process, fit_teacher

    run_dir = fit_teacher(config)
    if first_process():  # the other processes of a multi-process fit say nothing
        _console().print(f"teacher checkpoints in {run_dir}")


def cmd_pretrain_audio(args):
    from .train.config import load_tagger_config

    config = load_tagger_config(args.config, _overrides(args))
    from .train.fit import first_process, fit_tagger
    from .train.module import TAGGER_CHECKPOINT

    run_dir = fit_tagger(config)
    if first_process():
        _console().print(f"pretrained audio encoder: {run_dir / 'best' / TAGGER_CHECKPOINT} "
                         "(start a teacher from it with init_audio_encoder)")


def cmd_fit_student(args):
    from .train.config import load_student_config

    config = load_student_config(args.config, _overrides(args))
    from .train.fit import first_process, fit_student

    run_dir = fit_student(config)
    if first_process():
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
    from .content import EMBEDDED_DUPLICATES_MAX, embedded_duplicates
    from .data.readers import read_data
    from .embed import load_embeddings, unique_clips

    ids, embeddings = load_embeddings(folder)
    path_of = dict(zip(*unique_clips(read_data(data))[["clip_id", "audio_path"]].to_numpy().T))
    groups = embedded_duplicates(embeddings, [path_of[clip_id] for clip_id in ids], device)
    if groups is None:
        _console().print(f"{len(ids):,} clips: more than {EMBEDDED_DUPLICATES_MAX:,}, so duplicate audio is not looked "
                         f"for here (pairwise); `clapcurate inspect` finds it by content", highlight=False)
    elif groups:
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
    from .curate.config import load_curation_config

    config = load_curation_config(args.config, _overrides(args, "device"))
    config.check_inputs(args.method)  # config and data paths checked before torch is imported
    from .curate.stage import STATS_FILE, run_curation
    from .curate.summary import summary_text

    out = run_curation(args.method, config)
    stats = json.loads((out.parent / STATS_FILE).read_text())
    console = _console()
    console.print(summary_text(stats), highlight=False, soft_wrap=True)
    for warning in stats["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    console.print(f"Improvement-Set written to {out} (the numbers above are in {STATS_FILE} beside it)",
                  soft_wrap=True)


def cmd_evaluate(args):
    import pandas as pd

    from .evaluate import evaluate_models, model_names, read_tasks
    from .files import check_output_file, check_output_folder
    from .model.checkpoints import require_model_path
    from .tasks import parse_task

    models = model_names(args.model)
    for path in models.values():
        require_model_path(path, "--model")
    device = _device(args)
    skipped_file = args.skipped or (_beside(args.out, "skipped") if args.out else None)
    for path, what in ((args.out, "results file"), (skipped_file, "list of skipped files")):
        if path:
            check_output_file(path, what)
    if args.feature_cache:
        check_output_folder(args.feature_cache, "feature cache folder")
    settings = {key: value for key, value in (("template", args.template), ("label_words", args.label_words),
                                              ("recording_column", args.recording_column)) if value}
    try:
        specs = [parse_task(text, **settings) for text in args.dataset]
    except ValueError as exc:
        raise ClapcurateError(f"--template: {exc}") from None
    tasks = read_tasks(specs)  # every task read and checked before a model loads
    evaluation = evaluate_models(models, tasks, args.text_encoder, device, args.batch_size, args.num_workers,
                                 args.feature_cache, tuple(args.top_k or ()), progress=args.format == "table")
    rows = evaluation.rows(per_class=args.per_class)
    if args.format == "json":
        import json

        sys.stdout.write(json.dumps(evaluation.as_json(per_class=args.per_class), indent=2) + "\n")
    elif args.format == "csv":
        rows.to_csv(sys.stdout, index=False, lineterminator="\n")
    else:
        _print_evaluation(evaluation, args.per_class)
    console = _console(stderr=args.format != "table")  # stdout holds the CSV or JSON alone
    if args.out:
        rows.to_csv(args.out, index=False)
        console.print(f"results written to {args.out}", soft_wrap=True)
    skipped = pd.DataFrame([(r.task.name, r.model, path, reason) for r in evaluation.results
                            for path, reason in zip(r.skipped["audio_path"], r.skipped["reason"])],
                           columns=["task", "model", "audio_path", "reason"])
    _report_skipped(console, skipped.drop_duplicates(["task", "audio_path"]), skipped_file)


def _print_evaluation(evaluation, per_class: bool) -> None:
    """One table per task (correct / clips, accuracy and its 95% interval, top-k, the difference
    against the first model), the per-class table with `per_class`, and a verdict per comparison."""
    from rich.table import Table

    console = _console()
    versus = {(c.task, c.model): c for c in evaluation.comparisons}
    for task in evaluation.tasks:
        results = [r for r in evaluation.results if r.task is task]
        paper = f", the paper's {task.paper_benchmark}" if task.paper_benchmark else ""
        console.print(f"[bold]zero-shot accuracy on {task.name}[/bold]: {len(task.labels)} classes, "
                      f"chance {100 * task.chance:.1f}%{paper}", soft_wrap=True, highlight=False)
        table = Table()
        skipped = any(len(result.skipped) for result in results)
        columns = ["model", "correct", "accuracy % [95%]", *(f"top-{k} %" for k in evaluation.top_k),
                   *(["vs first, points [95%]"] if len(results) > 1 else []), *(["skipped"] if skipped else [])]
        for column in columns:
            table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
        for result in results:
            comparison = versus.get((task.name, result.model))
            interval = comparison.interval if comparison else None
            cells = [result.model, f"{int(result.correct.sum())} / {result.clips}", str(result.accuracy()),
                     *(f"{100 * result.top_k(k):.1f}" for k in evaluation.top_k)]
            if len(results) > 1:
                cells.append(f"{interval.difference:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]"
                             if interval else "(first)")
            table.add_row(*cells, *([str(len(result.skipped))] if skipped else []))
        console.print(table)
        if per_class:
            console.print(f"{task.name}: correct / clips per class", soft_wrap=True, highlight=False)
            classes = Table()
            classes.add_column("class", no_wrap=True)
            for result in results:
                classes.add_column(result.model, justify="right")
            frames = [result.per_class() for result in results]
            for i, label in enumerate(task.labels):
                classes.add_row(label, *(f"{f.correct[i]} / {f.clips[i]}" for f in frames))
            console.print(classes)
        for result in results[1:]:
            comparison = versus[(task.name, result.model)]
            interval = comparison.interval
            verdict = ("no difference beyond noise" if interval.holds_zero else
                       "better than the first" if interval.difference > 0 else "worse than the first")
            console.print(f"{task.name}: {result.model} - {comparison.baseline} = {interval.difference:+.1f} points "
                          f"[{interval.low:+.1f}, {interval.high:+.1f}] on {comparison.clips} shared clips: {verdict}",
                          soft_wrap=True, markup=False, highlight=False)
        resampled = "recordings (clips of one recording together)" if task.has_recordings else \
            "clips (no recording ids in the data: each clip its own recording)"
        console.print(f"intervals: 95% bootstrap over {resampled}", soft_wrap=True, style="dim")


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
    from .study.config import load_study_config

    config = load_study_config(args.config, _overrides(args, "device"))  # checked before torch is imported
    from .study.pipeline import run_study

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
    page = write_browser(args.curated, args.out, limit=args.limit, right=right, windows=windows, audio=args.audio,
                         overwrite=args.overwrite)
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

    def with_wait(p):
        p.add_argument("--wait", action="store_true",
                       help="when another run is writing the same output folder, wait for it instead of stopping")

    def with_config(p, resume: bool = True, device_key: str = "trainer.device"):
        with_wait(p)
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

    p = sub.add_parser("export", help="write a model as transformers, msclap or laion_clap load it")
    p.add_argument("model", help="a checkpoint folder (e.g. a student's last/), or any model --model takes")
    p.add_argument("out", help="the folder to write (the weights and a model card README.md)")
    p.add_argument("--format", choices=["hf", "msclap", "laion"],
                   help="hf: a transformers ClapModel folder, msclap: an MS CLAP 2022/2023 .pth, laion: a "
                        "LAION-CLAP .pt (default: the form the model's teacher came from)")
    p.add_argument("--text-encoder", help="a weights-file model's text encoder (name or folder)")
    p.set_defaults(func=cmd_export)

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
    p.add_argument("--model", required=True, help="checkpoint folder, transformers ClapModel folder, or MS CLAP / LAION-CLAP weights")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--manifest", required=True, help="a manifest file or a dataset spec KIND:PATH")
    p.add_argument("--out", required=True)
    p.add_argument("--modality", choices=["audio", "text"], default="audio")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=50_000)
    with_wait(p)
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
    p.add_argument("--out", help="output folder (default: CURATED/browser): new, empty or an earlier page, whose "
                                 "recorded files (browse_files.json) are replaced")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder holding other files: they are kept, never replaced")
    p.add_argument("--limit", type=int, default=100, help="pairs (audio players) per page")
    p.add_argument("--audio", choices=["link", "copy"], default="link",
                   help="link the clips next to the page (relative symbolic links) or copy them")
    p.add_argument("--teacher", help="the teacher (any model --model takes): long clips play the window that matched "
                                     "the caption (one forward pass per window of the long clips)")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--world", help="embedded world folder: mark each pair right or wrong from its ground truth")
    p.add_argument("--train-manifest", help="with --world: the training data the captions came from "
                                            "(a manifest file or a dataset spec)")
    with_device(p)
    p.set_defaults(func=cmd_browse)

    p = sub.add_parser("evaluate", help="zero-shot accuracy of one or more models on labelled tasks, "
                                         "with 95%% intervals and paired differences against the first model")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]MODEL",
                   help="checkpoint folder, transformers ClapModel folder, or MS CLAP / LAION-CLAP weights, optionally named (repeatable: each "
                        "later model is compared with the first, e.g. --model teacher=T --model student=S)")
    p.add_argument("--dataset", action="append", required=True, metavar="[NAME=]DATA",
                   help="a labelled task: a manifest file or KIND:PATH (esc50:, urbansound8k:, tut2017:, "
                        "csv:FILE with a label column, classes:DIR with one subfolder per class), optionally "
                        "named, e.g. birds=classes:/data/birds (repeatable)")
    p.add_argument("--template", help='the class prompt, {label} standing for the class (default '
                                      '"this is a sound of {label}")')
    p.add_argument("--label-words", metavar="FILE",
                   help="a YAML file mapping class labels to their words in the prompt (crying_baby: a crying baby); "
                        "other labels read with _ and / as spaces")
    p.add_argument("--recording-column", metavar="COLUMN",
                   help="the manifest column naming each clip's recording, resampled as one by the bootstrap "
                        "(default recording_id when present; else each clip is its own recording)")
    p.add_argument("--per-class", action="store_true", help="also show each class's correct / clips")
    p.add_argument("--top-k", type=int, action="append", metavar="K",
                   help="also show top-K accuracy (the class among the K best prompts; repeatable)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), or csv / json on stdout for scripts")
    p.add_argument("--text-encoder", help="text encoder name or path for published checkpoint files")
    p.add_argument("--batch-size", type=int, default=64)
    with_workers(p)
    with_device(p)
    p.add_argument("--out", help="also write the results as CSV (one row per task and model; with --per-class "
                                 "one more per class; accuracies in percent)")
    p.add_argument("--skipped", help="write the skipped files (task, model, audio_path, reason) as CSV here "
                                     "(default with --out: OUT's name with .skipped.csv)")
    p.add_argument("--feature-cache", metavar="DIR",
                   help="keep the clips' log-mels here: later evaluations of models with the same front-end "
                        "read them instead of decoding the audio (same numbers)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("classify", help="zero-shot classification of audio files")
    p.add_argument("--model", required=True, help="checkpoint folder, transformers ClapModel folder, or MS CLAP / LAION-CLAP weights")
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
    with_wait(p)
    with_device(p, None, "device")
    p.set_defaults(func=cmd_study)
    return parser


FITS = ("fit-teacher", "fit-student", "pretrain-audio")  # resumed with --resume; other commands by a plain rerun


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException like KeyboardInterrupt, so no `except Exception`
    swallows it, but not one: Lightning turns a KeyboardInterrupt into exit status 1."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def _stopped_by_signals():
    """SIGINT and SIGTERM raise `Stopped` in the main thread while the command runs; the earlier
    handlers come back afterwards (`main` also runs inside other programs, tests among them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    earlier = {signum: signal.signal(signum, _raise_stopped) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in earlier.items():
            signal.signal(signum, handler)


def _resume_hint(command: str) -> str:
    if command in FITS:
        return "run the same command with --resume to continue from the last validation"
    return "run the same command again to continue (finished parts are kept)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .locks import waiting

    waiting(getattr(args, "wait", False))
    try:
        with _stopped_by_signals():
            args.func(args)
    except ClapcurateError as exc:
        print(f"clapcurate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # paths and permissions the checks before the work could not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"clapcurate {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Stopped, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        print(f"clapcurate {args.command}: stopped by {signal.Signals(signum).name}; {_resume_hint(args.command)}",
              file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
