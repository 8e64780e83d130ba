"""The curation stage: read a config, the manifests and the teacher's embeddings (computing
what is missing), select an Improvement-Set with `curate.methods`, and write it with its
`stats.json`, histogram plot and histogram data."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..content import embedded_duplicates
from ..data.manifest import split_by_clip, write_manifest
from ..data.readers import read_data
from ..embed import embed_manifest, embed_texts, embedding_rows, load_embeddings, text_key, unique_captions, unique_clips
from ..errors import ClapcurateError, ManifestError
from ..files import check_checksum, checksum, naming_failed_writes, write_atomically, write_text_atomically
from ..locks import one_writer
from ..model.checkpoints import require_model_path
from ..prompts import prompts
from ..search import DEFAULT_BLOCK_SIZE, SimilarityHistogram
from ..tasks import read_task
from .config import CurationConfig, data_keys
from .leakage import refuse_benchmark_audio, shared_source_mask, training_clip_mask
from .methods import PLOT_SAMPLE_QUERIES, ImprovementSet, curate_ads, curate_ds, curate_du
from .summary import SUGGESTED_PAIRS, TeacherReference, curation_warnings, sigma_keeping, top_shares

log = logging.getLogger("clapcurate.curate")

PLOT_BINS = 256


def improvement_set_stats(improvement_set: ImprovementSet, sigma_from: str = "given",
                          reference: TeacherReference | None = None, pairs_searched: int | None = None,
                          duplicates: list[list[str]] = (),
                          **context) -> dict:
    """The counts of an Improvement-Set (pairs as in the paper's Table 1; distinct clips and
    captions), the pairs of the search >= sigma before and after the per-clip cap (exact), the
    sigma used and where it came from (`sigma_from`: given, keep_fraction or default, the
    method's), the similarity range and the highest similarity the search saw, the captions (and
    DS / ADS labels) holding the largest shares of the pairs (`top_captions`, `top_labels`), the
    teacher's held-out pairs (`teacher_reference`; `estimated_precision` stays None:
    `curate.summary` says why), the pairs the search compared, the sigma keeping
    about `SUGGESTED_PAIRS` pairs, the curated clips repeating another's audio (`duplicates`: groups
    of paths), `context` (benchmark, pool size, ...) and, last, the `warnings`.
    `pairs_searched`: the pairs the search compared (pool clips x captions; default the
    histogram's count)."""
    rows = improvement_set.rows
    similarity = rows["similarity"]
    histogram = improvement_set.histogram
    pairs_searched = histogram.total if pairs_searched is None else pairs_searched
    occupied = np.flatnonzero(histogram.counts)
    seen = [float(histogram.edges[occupied[-1] + 1])] if len(occupied) else []  # the histogram's, to a bin
    highest = float(similarity.max()) if len(rows) else max(seen, default=float("nan"))
    stats = {
        "method": improvement_set.method,
        **context,
        "pairs": len(rows),
        "pairs_at_sigma": {"before_cap": improvement_set.pairs_before_cap, "after_cap": len(rows)},
        "clips": int(rows["clip_id"].nunique()),
        "captions": int(rows["caption"].nunique()),
        "sigma": improvement_set.sigma,
        "sigma_from": sigma_from,
        "similarity": None if rows.empty else {
            "min": float(similarity.min()), "mean": float(similarity.mean()), "max": float(similarity.max())},
        "highest_similarity": highest,
        "top_captions": top_shares(rows["caption"], "caption"),
        "estimated_precision": None,
        "pairs_searched": pairs_searched,
        "sigma_keeping_suggested_pairs": sigma_keeping(histogram, SUGGESTED_PAIRS, pairs_searched),
    }
    if duplicates:
        stats["duplicate_clips"] = sum(len(group) - 1 for group in duplicates)
        stats["duplicate_examples"] = [list(group) for group in duplicates[:3]]
    if improvement_set.method != "du" and "best_label" in rows:
        stats["top_labels"] = top_shares(rows["best_label"], "label")
    if reference is not None:
        stats["teacher_reference"] = reference.summary(improvement_set.sigma)
    stats["warnings"] = curation_warnings(stats, reference)
    return stats


def histogram_title(improvement_set: ImprovementSet, max_captions_per_clip: int | None = None) -> str:
    """The plot's title: the pairs >= sigma, and the ones kept when a per-clip cap bit."""
    kept, before_cap = len(improvement_set.rows), improvement_set.pairs_before_cap
    title = f"{improvement_set.method.upper()}: {before_cap:,} pairs >= sigma"
    if before_cap != kept:
        per_clip = "caption" if max_captions_per_clip == 1 else "captions"
        title += f", {kept:,} kept (at most {max_captions_per_clip} {per_clip} per clip)"
    return title


def plot_similarity_histogram(histogram: SimilarityHistogram, sigma: float, path: Path, title: str,
                              ylabel: str = "pairs", xlabel: str = "cosine similarity") -> Path:
    """A PNG of the similarity distribution with the threshold sigma marked: counts on a log
    scale, or on a linear scale of whole numbers when no bin holds more than 50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    coarse = histogram.coarsened(PLOT_BINS) if len(histogram.counts) % PLOT_BINS == 0 else histogram
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.stairs(coarse.counts, coarse.edges, fill=True, alpha=0.6)
    axes.axvline(sigma, color="crimson", linestyle="--", label=f"sigma = {sigma:.4f}")
    occupied = coarse.edges[np.r_[np.flatnonzero(coarse.counts), np.flatnonzero(coarse.counts) + 1]]
    low, high = min(occupied.min(initial=sigma), sigma), max(occupied.max(initial=sigma), sigma)
    margin = 0.05 * (high - low) + coarse.bin_width
    axes.set_xlim(low - margin, high + margin)  # zoom on the occupied range and sigma
    if coarse.counts.max(initial=0) > 50:
        axes.set_yscale("symlog", linthresh=1)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    else:
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(bottom=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_teacher_reference(reference: TeacherReference, histogram: SimilarityHistogram, sigma: float, path: Path,
                           title: str) -> Path:
    """A PNG of the distributions the precision estimate compares, as densities on one axis: the
    teacher's held-out matched and mismatched pairs and the search's similarities, sigma marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coarse = histogram.coarsened(PLOT_BINS)
    values = np.concatenate([reference.matched, reference.mismatched, [sigma]])
    # a few hundred held-out pairs: wider bins, over the search's range and every held-out cosine
    reference_edges = np.linspace(min(values.min(), histogram.edges[0]), max(values.max(), histogram.edges[-1]),
                                  PLOT_BINS // 4 + 1)
    figure, axes = plt.subplots(figsize=(7, 4))
    for pairs, label in ((reference.mismatched, f"teacher's held-out mismatched pairs ({len(reference.mismatched):,})"),
                         (reference.matched, f"teacher's held-out matched pairs ({len(reference.matched):,})")):
        if len(pairs):
            axes.hist(pairs, bins=reference_edges, density=True, histtype="step", linewidth=1.5, label=label)
    if coarse.total:
        density = coarse.counts / (coarse.total * coarse.bin_width)
        axes.stairs(density, coarse.edges, fill=True, alpha=0.35, label="this search's pairs")
    axes.axvline(sigma, color="crimson", linestyle="--", label=f"sigma = {sigma:.4f}")
    axes.set_xlim(values.min() - 0.05, values.max() + 0.05)
    axes.set_yscale("symlog", linthresh=0.1)
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


SCORE_NAMES = {"cosine": "cosine similarity", "csls": "CSLS score (2 cos - r_audio - r_text)",
               "mutual": "cosine similarity of mutual nearest neighbours (others at -1)"}
STATS_FILE = "stats.json"
REFERENCE_PLOT_FILE = "teacher_reference.png"
HISTOGRAM_FILE = "similarity_histogram.png"
HISTOGRAM_DATA_FILE = "similarity_histogram.npz"  # counts [bins] (int64), low, high


def read_histogram(path: str | Path) -> SimilarityHistogram:
    """The histogram a curated folder's `similarity_histogram.npz` holds."""
    return SimilarityHistogram.read(path)


def write_improvement_set(improvement_set: ImprovementSet, out_dir, manifest_name: str = "improvement_set.csv",
                          **context) -> Path:
    """Write the Improvement-Set manifest, `similarity_histogram.png`, its data
    `similarity_histogram.npz`, `teacher_reference.png` (with a `reference` in `context`) and,
    last, `stats.json` into `out_dir`; returns the manifest's path.

    `stats.json` marks a complete set: it is removed first and written only after the rest, each
    file through a partial file, so an interrupted write never looks finished."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATS_FILE).unlink(missing_ok=True)
    path = out_dir / manifest_name
    partial = write_manifest(improvement_set.rows, out_dir / f".partial-{manifest_name}")
    os.replace(partial, path)
    stats = improvement_set_stats(improvement_set, **context)
    ylabel = "pairs"
    if improvement_set.histogram_sampled:
        ylabel = f"pairs (of {PLOT_SAMPLE_QUERIES:,} sampled pool clips)"
    plot_similarity_histogram(improvement_set.histogram, improvement_set.sigma, out_dir / HISTOGRAM_FILE,
                              histogram_title(improvement_set, context.get("max_captions_per_clip")), ylabel,
                              SCORE_NAMES[improvement_set.selection])
    if context.get("reference") is not None:
        plot_teacher_reference(context["reference"], improvement_set.histogram, improvement_set.sigma,
                               out_dir / REFERENCE_PLOT_FILE, f"{improvement_set.method.upper()}: the teacher's "
                               f"held-out pairs and this search's")
    write_atomically(out_dir / HISTOGRAM_DATA_FILE, improvement_set.histogram.save, "wb")
    stats["checksums"] = {name: checksum((out_dir / name).read_bytes()) for name in (manifest_name, HISTOGRAM_DATA_FILE)}
    write_text_atomically(out_dir / STATS_FILE, json.dumps(stats, indent=2) + "\n")
    return path


def check_curated_file(path: str | os.PathLike) -> None:
    """A curated set's file (its manifest, its histogram data) against the checksum its folder's
    `stats.json` recorded when the set was written; `ClapcurateError` naming the file when its
    bytes changed. A file no `stats.json` records is not checked."""
    path = Path(path)
    stats_path = path.parent / STATS_FILE
    if not path.is_file() or not stats_path.is_file():
        return
    recorded = json.loads(stats_path.read_text()).get("checksums", {}).get(path.name)
    check_checksum(path, path.read_bytes(), recorded,
                   "curate the set again, or save an edited set under another name in another folder")


def _embed(config: CurationConfig, data: pd.DataFrame, folder, modality: str) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings) of the teacher's embedding folder of `data`, computing what is missing."""
    embed_manifest(config.teacher, data, folder, modality, config.batch_size, config.shard_size, config.num_workers,
                   config.progress, device=config.device, text_encoder=config.text_encoder)
    return load_embeddings(folder, dtype=np.float16)


def _caption_embeddings(config: CurationConfig, train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Teacher text embeddings [len(rows), d] of `rows`' captions (the training captions `train`
    are embedded first where the folder is missing or unfinished)."""
    folder = config.caption_embeddings or Path(config.out_dir) / "embeddings" / "caption_text"
    ids, embeddings = _embed(config, train, folder, "text")
    return embedding_rows([text_key(caption) for caption in rows["caption"]], ids, embeddings, folder,
                          "it was made from another manifest")


def _pool(config: CurationConfig, data: dict[str, pd.DataFrame]) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """(embeddings [P, d], clips [P], counts) of the pool's readable clips that the teacher did not
    train on: neither the same clip or file (`excluded_training_clips`) nor another clip of a
    source recording it trained on (`excluded_training_sources`). The pool is checked against
    the benchmark before any of its audio is read."""
    pool, benchmark = data["pool_manifest"], data.get("benchmark_manifest")
    if len(pool) == 0:
        raise ClapcurateError(f"{config.pool_manifest}: the pool has no clips")
    if benchmark is not None:
        refuse_benchmark_audio(pool, benchmark, config.benchmark or config.benchmark_manifest)
    folder = config.pool_embeddings or Path(config.out_dir) / "embeddings" / "pool_audio"
    ids, embeddings = _embed(config, pool, folder, "audio")
    if not ids:
        raise ClapcurateError(f"{config.pool_manifest}: none of the pool's clips could be read "
                              f"(the list is {Path(folder) / 'skipped.csv'})")
    all_clips = unique_clips(pool)
    clips = all_clips.set_index("clip_id").loc[ids].reset_index()
    teacher_train = data.get("teacher_train_manifest", data["train_manifest"])
    same_clip = training_clip_mask(clips, teacher_train)
    same_source = shared_source_mask(clips, teacher_train) & ~same_clip
    if same_source.any():
        log.warning("%d pool clip(s) come from source recordings the teacher trained on (e.g. %s) and are left out "
                    "(excluded_training_sources in %s)", int(same_source.sum()),
                    clips.loc[same_source, "recording_id"].iloc[0], STATS_FILE)
    keep = ~(same_clip | same_source)
    counts = {"pool_clips": len(all_clips), "unreadable_pool_clips": len(all_clips) - len(ids),
              "excluded_training_clips": int(same_clip.sum()), "excluded_training_sources": int(same_source.sum())}
    return embeddings[keep], clips[keep].reset_index(drop=True), counts


def _curate_ds_stage(config: CurationConfig, data: dict[str, pd.DataFrame]) -> tuple[ImprovementSet, dict]:
    from ..device import resolve_device
    from ..model.checkpoints import load_model

    train = data["train_manifest"]
    captioned = train[train["caption"] != ""].reset_index(drop=True)
    task = read_task(config.target_task(), data["benchmark_manifest"])
    labels = config.labels or task.labels
    caption_embeddings = _caption_embeddings(config, train, captioned)
    teacher = load_model(config.teacher, config.text_encoder, device=resolve_device(config.device))
    improvement_set = curate_ds(captioned, caption_embeddings,
                                embed_texts(teacher, prompts(labels, config.template, task.words)),
                                labels, config.sigma, config.keep_fraction, config.block_size or DEFAULT_BLOCK_SIZE,
                                config.device)
    return improvement_set, {"labels": len(labels), "training_pairs": len(captioned)}


def _curate_pool_stage(method: str, config: CurationConfig,
                       data: dict[str, pd.DataFrame]) -> tuple[ImprovementSet, dict]:
    from ..device import resolve_device

    pool_embeddings, pool_clips, counts = _pool(config, data)
    reference = _teacher_reference(config, data["train_manifest"])
    search = dict(sigma=config.sigma, keep_fraction=config.keep_fraction,
                  max_captions_per_clip=config.max_captions_per_clip,
                  block_size=config.block_size or DEFAULT_BLOCK_SIZE,
                  device=resolve_device(config.device), selection=config.selection, selection_k=config.selection_k)
    train = data["train_manifest"]
    if method == "du":
        captions = unique_captions(train)
        improvement_set = curate_du(pool_embeddings, pool_clips, _caption_embeddings(config, train, captions),
                                    captions, **search)
    else:
        captions = data["ds_manifest"]
        improvement_set = curate_ads(captions, _caption_embeddings(config, train, captions), pool_embeddings,
                                     pool_clips, **search)
    n_captions = int(captions["caption"].nunique())
    return improvement_set, {**counts, "candidate_captions": n_captions, "reference": reference,
                             "pairs_searched": len(pool_clips) * n_captions,
                             "duplicates": _curated_duplicates(pool_embeddings, pool_clips, improvement_set.rows,
                                                               search["device"])}


def _curated_duplicates(pool_embeddings, pool_clips: pd.DataFrame, rows: pd.DataFrame, device) -> list[list[str]]:
    """Groups of curated clips holding the same audio (`content.embedded_duplicates`; none looked
    for, and said in the log, among more curated clips than it compares)."""
    curated = np.flatnonzero(pool_clips["clip_id"].isin(set(rows["clip_id"])).to_numpy())
    groups = embedded_duplicates(pool_embeddings[curated], pool_clips["audio_path"].to_numpy()[curated], device)
    if groups is None:
        log.info("%d curated clips: duplicate audio among them is not looked for (`clapcurate inspect` finds it)",
                 len(curated))
    return groups or []


def _benchmark_heard_by_teacher(config: CurationConfig, data: dict[str, pd.DataFrame]) -> dict:
    """`benchmark_clips_from_teacher_sources`: the benchmark's clips that are, or were cut from a
    recording of, the teacher's training data (its zero-shot score on them is not zero-shot);
    warned about when there are any."""
    benchmark = data.get("benchmark_manifest")
    if benchmark is None:
        return {}
    teacher_train = data.get("teacher_train_manifest", data["train_manifest"])
    heard = training_clip_mask(benchmark, teacher_train) | shared_source_mask(benchmark, teacher_train)
    if heard.any():
        log.warning("%d of the %d clips of the benchmark %r come from recordings the teacher trained on: its "
                    "zero-shot score on them is not zero-shot (benchmark_clips_from_teacher_sources in %s)",
                    int(heard.sum()), len(benchmark), config.benchmark or config.benchmark_manifest, STATS_FILE)
    return {"benchmark_clips_from_teacher_sources": int(heard.sum())}


def _teacher_reference(config: CurationConfig, train: pd.DataFrame) -> TeacherReference | None:
    """The teacher's held-out pairs (`curate.summary`): the first `reference_clips` clips of
    `train`'s captioned rows that `split_by_clip` holds out, embedded (audio) into
    `reference_embeddings`; None when there are none or none is readable."""
    captioned = train[train["caption"] != ""]
    held_out = split_by_clip(captioned, config.held_out_fraction, config.held_out_seed)[1]
    clips = unique_clips(held_out).head(config.reference_clips)
    if clips.empty:
        return None
    folder = config.reference_embeddings or Path(config.out_dir) / "embeddings" / "reference_audio"
    ids, audio = _embed(config, clips, folder, "audio")
    rows = held_out[held_out["clip_id"].isin(set(ids))].reset_index(drop=True)
    if rows.empty:
        return None
    position = {clip_id: i for i, clip_id in enumerate(ids)}
    return TeacherReference.of(audio, _caption_embeddings(config, train, rows),
                               [position[clip_id] for clip_id in rows["clip_id"]])


def check_curation_inputs(method: str, config: CurationConfig) -> None:
    """Every key `method` needs is given and every path exists (`CurationConfig.check_inputs`),
    the teacher too, and the device is there, before any data is read or model loaded;
    `ConfigError` naming the key otherwise."""
    from ..device import resolve_device

    config.check_inputs(method)
    require_model_path(config.teacher, "teacher")
    resolve_device(config.device)  # a GPU this machine lacks is refused before any work


def _require_captions(method: str, config: CurationConfig, data: dict[str, pd.DataFrame]) -> None:
    """The manifest whose captions `method` searches with holds some, checked before any audio is
    embedded; `ManifestError` naming its key otherwise."""
    key = "ds_manifest" if method == "ads" else "train_manifest"
    if key in data and not (data[key]["caption"] != "").any():
        raise ManifestError(f"{key}: {getattr(config, key)} holds no captions; curation {method} searches with "
                            "the captions of this manifest (a non-empty caption column)")


def run_curation(method: Literal["du", "ds", "ads"], config: CurationConfig) -> Path:
    """Curate the `method` Improvement-Set of `config` into `config.out_dir`; returns the manifest.

    Beside the manifest: `stats.json` (counts, sigma) and `similarity_histogram.png`.
    """
    check_curation_inputs(method, config)
    if config.ds_manifest:
        check_curated_file(config.ds_manifest)
    data = {key: read_data(getattr(config, key)) for key in data_keys(method) if getattr(config, key)}
    _require_captions(method, config, data)
    # one writer at a time, once the inputs are checked; a full disk names the folder, whichever file was being written
    with one_writer(config.out_dir, "curated folder") as out_dir, naming_failed_writes(out_dir):
        if (out_dir / STATS_FILE).is_file() and not config.overwrite:
            raise ClapcurateError(f"{out_dir} holds a finished Improvement-Set ({STATS_FILE}): replace it with "
                                  "--overwrite or choose another out_dir")
        if method == "ds":
            improvement_set, counts = _curate_ds_stage(config, data)
        else:
            improvement_set, counts = _curate_pool_stage(method, config, data)
        counts.update(_benchmark_heard_by_teacher(config, data))
        sigma_from = ("keep_fraction" if config.keep_fraction is not None else
                      "given" if config.sigma is not None else "default")
        log.info("%s Improvement-Set: %d pairs at sigma = %.4f", method.upper(), len(improvement_set.rows),
                 improvement_set.sigma)
        return write_improvement_set(
            improvement_set, config.out_dir, config.manifest_name, sigma_from=sigma_from,
            benchmark=config.target_task().name if config.benchmark_manifest else None,
            keep_fraction=config.keep_fraction, max_captions_per_clip=config.max_captions_per_clip,
            **({} if method == "ds" else {"selection": config.selection, "selection_k": config.selection_k}), **counts)
