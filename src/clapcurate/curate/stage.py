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

from ..data.manifest import write_manifest
from ..data.readers import read_data
from ..embed import embed_manifest, embed_texts, embedding_rows, load_embeddings, text_key, unique_captions, unique_clips
from ..errors import ClapcurateError
from ..model.checkpoints import require_model_path
from ..files import check_output_folder, write_atomically, write_text_atomically
from ..prompts import prompts
from ..search import DEFAULT_BLOCK_SIZE, SimilarityHistogram
from ..tasks import read_task
from .config import CurationConfig, data_keys
from .leakage import refuse_benchmark_audio, training_clip_mask
from .methods import PLOT_SAMPLE_QUERIES, ImprovementSet, curate_ads, curate_ds, curate_du

log = logging.getLogger("clapcurate.curate")

PLOT_BINS = 256


def improvement_set_stats(improvement_set: ImprovementSet, **context) -> dict:
    """The counts of an Improvement-Set (pairs as in the paper's Table 1; distinct clips and
    captions), the pairs of the search >= sigma before and after the per-clip cap (exact), the
    sigma used, the similarity range, and `context` (benchmark, pool size, ...)."""
    rows = improvement_set.rows
    similarity = rows["similarity"]
    return {
        "method": improvement_set.method,
        **context,
        "pairs": len(rows),
        "pairs_at_sigma": {"before_cap": improvement_set.pairs_before_cap, "after_cap": len(rows)},
        "clips": int(rows["clip_id"].nunique()),
        "captions": int(rows["caption"].nunique()),
        "sigma": improvement_set.sigma,
        "similarity": None if rows.empty else {
            "min": float(similarity.min()), "mean": float(similarity.mean()), "max": float(similarity.max())},
    }


def histogram_title(improvement_set: ImprovementSet, max_captions_per_clip: int | None = None) -> str:
    """The plot's title: the pairs >= sigma, and the ones kept when a per-clip cap bit."""
    kept, before_cap = len(improvement_set.rows), improvement_set.pairs_before_cap
    title = f"{improvement_set.method.upper()}: {before_cap:,} pairs >= sigma"
    if before_cap != kept:
        per_clip = "caption" if max_captions_per_clip == 1 else "captions"
        title += f", {kept:,} kept (at most {max_captions_per_clip} {per_clip} per clip)"
    return title


def plot_similarity_histogram(histogram: SimilarityHistogram, sigma: float, path: Path, title: str,
                              ylabel: str = "pairs") -> Path:
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
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


STATS_FILE = "stats.json"
HISTOGRAM_FILE = "similarity_histogram.png"
HISTOGRAM_DATA_FILE = "similarity_histogram.npz"  # counts [bins] (int64), low, high


def read_histogram(path: str | Path) -> SimilarityHistogram:
    """The histogram a curated folder's `similarity_histogram.npz` holds."""
    return SimilarityHistogram.read(path)


def write_improvement_set(improvement_set: ImprovementSet, out_dir, manifest_name: str = "improvement_set.csv",
                          **context) -> Path:
    """Write the Improvement-Set manifest, `similarity_histogram.png`, its data
    `similarity_histogram.npz` and, last, `stats.json` into `out_dir`; returns the manifest's path.

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
                              histogram_title(improvement_set, context.get("max_captions_per_clip")), ylabel)
    write_atomically(out_dir / HISTOGRAM_DATA_FILE, improvement_set.histogram.save, "wb")
    write_text_atomically(out_dir / STATS_FILE, json.dumps(stats, indent=2) + "\n")
    return path


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
    train on. The pool is checked against the benchmark before any of its audio is read."""
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
    in_training = training_clip_mask(clips, data.get("teacher_train_manifest", data["train_manifest"]))
    counts = {"pool_clips": len(all_clips), "unreadable_pool_clips": len(all_clips) - len(ids),
              "excluded_training_clips": int(in_training.sum())}
    return embeddings[~in_training], clips[~in_training].reset_index(drop=True), counts


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
    search = dict(sigma=config.sigma, keep_fraction=config.keep_fraction,
                  max_captions_per_clip=config.max_captions_per_clip,
                  block_size=config.block_size or DEFAULT_BLOCK_SIZE,
                  device=resolve_device(config.device))
    train = data["train_manifest"]
    if method == "du":
        captions = unique_captions(train)
        improvement_set = curate_du(pool_embeddings, pool_clips, _caption_embeddings(config, train, captions),
                                    captions, **search)
    else:
        captions = data["ds_manifest"]
        improvement_set = curate_ads(captions, _caption_embeddings(config, train, captions), pool_embeddings,
                                     pool_clips, **search)
    return improvement_set, {**counts, "candidate_captions": int(captions["caption"].nunique())}


def check_curation_inputs(method: str, config: CurationConfig) -> None:
    """Every key `method` needs is given and every path exists (`CurationConfig.check_inputs`),
    the teacher too, and the device is there, before any data is read or model loaded;
    `ConfigError` naming the key otherwise."""
    from ..device import resolve_device

    config.check_inputs(method)
    require_model_path(config.teacher, "teacher")
    resolve_device(config.device)  # a GPU this machine lacks is refused before any work


def run_curation(method: Literal["du", "ds", "ads"], config: CurationConfig) -> Path:
    """Curate the `method` Improvement-Set of `config` into `config.out_dir`; returns the manifest.

    Beside the manifest: `stats.json` (counts, sigma) and `similarity_histogram.png`.
    """
    check_curation_inputs(method, config)
    out_dir = check_output_folder(config.out_dir)
    if (out_dir / STATS_FILE).is_file() and not config.overwrite:
        raise ClapcurateError(f"{out_dir} holds a finished Improvement-Set ({STATS_FILE}): replace it with "
                              "--overwrite or choose another out_dir")
    data = {key: read_data(getattr(config, key)) for key in data_keys(method) if getattr(config, key)}
    if method == "ds":
        improvement_set, counts = _curate_ds_stage(config, data)
    else:
        improvement_set, counts = _curate_pool_stage(method, config, data)
    log.info("%s Improvement-Set: %d pairs at sigma = %.4f", method.upper(), len(improvement_set.rows),
             improvement_set.sigma)
    return write_improvement_set(
        improvement_set, config.out_dir, config.manifest_name,
        benchmark=config.target_task().name if config.benchmark_manifest else None,
        keep_fraction=config.keep_fraction, max_captions_per_clip=config.max_captions_per_clip, **counts)
