"""Curation of Improvement-Sets with a teacher CLAP (paper Sec. 2.2): DU, DS and ADS.

- **DU** (domain-unspecific): every pool clip x every training caption; keep the pairs whose
  cosine similarity is >= sigma (paper: 0.7), optionally only the `max_captions_per_clip`
  best captions of each clip.
- **DS** (domain-specific): text-text cosine between each training caption and the prompts
  "this is a sound of {label}" of the target benchmark; keep the training pairs whose best label
  similarity is >= sigma.
- **ADS** (augmented DS): the DS captions x every pool clip, pairs >= sigma.

Pool clips that are in the teacher's training manifest (same `clip_id`) are left out, and a pool
that holds audio of a target benchmark is refused: the benchmark's audio is never read.

The audio-text search is a blocked matrix multiplication: only one `block_size x block_size`
block of the N x M similarity matrix exists at a time, and the threshold is applied inside the
block loop, so memory is bounded by the block size whatever N and M.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Iterator, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch

from .config import load_config
from .data.manifest import read_manifest, write_manifest
from .embed import embed_manifest, embed_texts, load_embeddings, text_key, unique_captions, unique_clips
from .errors import ClapcurateError, ConfigError
from .zeroshot import benchmark_labels, prompts

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 4096
HISTOGRAM_BINS = 65536
PAPER_SIGMA = 0.7


# --------------------------------------------------------------------------- blocked search


class SearchResult(NamedTuple):
    """Pairs (query_idx[i], key_idx[i]) with their cosine `similarity[i]`, sorted by query, then
    descending similarity, then key."""

    query_idx: np.ndarray  # int64 [K]
    key_idx: np.ndarray  # int64 [K]
    similarity: np.ndarray  # float32 [K]


def _rows_as_float32(matrix, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Rows [start, stop) of an array, memmap or tensor as a float32 tensor on `device`.

    Only these rows are read and converted, so float16 memmaps of any size stay on disk.
    """
    if isinstance(matrix, torch.Tensor):
        rows = matrix[start:stop]
    else:
        rows = torch.from_numpy(np.ascontiguousarray(matrix[start:stop], dtype=np.float32))
    return rows.to(device=device, dtype=torch.float32)


def _check_pair_shapes(queries, keys) -> None:
    if len(queries.shape) != 2 or len(keys.shape) != 2 or queries.shape[1] != keys.shape[1]:
        raise ClapcurateError(
            f"similarity search needs two matrices of the same width, got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )


def similarity_blocks(queries, keys, block_size: int = DEFAULT_BLOCK_SIZE,
                      device: str | torch.device | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield `(query_start, key_start, block)` with block = queries[q:q+b] @ keys[k:k+b].T.

    Blocks come query block by query block, each over all key blocks in order. The block lives
    in one reused buffer: a consumer must take what it needs before asking for the next block.
    """
    _check_pair_shapes(queries, keys)
    if block_size < 1:
        raise ClapcurateError(f"block_size must be at least 1, got {block_size}")
    device = torch.device(device or "cpu")
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    buffer = torch.empty(min(block_size, n_queries) * min(block_size, n_keys), device=device)
    for q_start in range(0, n_queries, block_size):
        query_block = _rows_as_float32(queries, q_start, q_start + block_size, device)  # [bq, d]
        for k_start in range(0, n_keys, block_size):
            key_block = _rows_as_float32(keys, k_start, k_start + block_size, device)  # [bk, d]
            block = buffer[: len(query_block) * len(key_block)].view(len(query_block), len(key_block))
            torch.mm(query_block, key_block.T, out=block)  # [bq, bk]
            yield q_start, k_start, block


def _block_floor(block: torch.Tensor, sigma: float, top_k: int | None) -> torch.Tensor:
    """Per-row lower bound [bq] of the entries a block can contribute.

    Without top-k it is sigma. With top-k it is max(sigma, k-th largest value of the row): an
    entry below its row's k-th largest in this block cannot be among the row's k best overall,
    while every entry tied with the k-th stays a candidate (ties are broken later by key index).
    """
    floor = torch.full((block.shape[0],), float(sigma), device=block.device)
    if top_k is not None and block.shape[1] >= top_k:
        kth_largest = torch.topk(block, top_k, dim=1, sorted=False).values.amin(dim=1)  # [bq]
        floor = torch.maximum(floor, kth_largest)
    return floor


def _block_candidates(block: torch.Tensor, floor: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of the entries of `block` >= their row's `floor`, row-major order.

    Rows whose maximum is below the floor are dismissed first, so a block with few hits costs a
    row-maximum pass and not a full scan for indices.
    """
    hit_rows = torch.nonzero(block.amax(dim=1) >= floor).squeeze(1)  # [h]
    if len(hit_rows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    sub_block = block[hit_rows]  # [h, bk]
    sub_rows, cols = torch.nonzero(sub_block >= floor[hit_rows, None], as_tuple=True)
    values = sub_block[sub_rows, cols]
    return hit_rows[sub_rows].cpu().numpy(), cols.cpu().numpy(), values.float().cpu().numpy()


def _sort_pairs(result: SearchResult) -> SearchResult:
    """Order by query, then descending similarity, then key."""
    order = np.lexsort((result.key_idx, -result.similarity, result.query_idx))
    return SearchResult(*(column[order] for column in result))


def _first_k_per_query(result: SearchResult, k: int) -> SearchResult:
    """The first k pairs of each query of a sorted result."""
    if len(result.query_idx) == 0:
        return result
    group_start = np.r_[0, np.flatnonzero(np.diff(result.query_idx)) + 1]
    group_size = np.diff(np.r_[group_start, len(result.query_idx)])
    rank_in_group = np.arange(len(result.query_idx)) - np.repeat(group_start, group_size)
    keep = rank_in_group < k
    return SearchResult(*(column[keep] for column in result))


def _concat(results: list[SearchResult]) -> SearchResult:
    if not results:
        empty = np.zeros(0, dtype=np.int64)
        return SearchResult(empty, empty.copy(), np.zeros(0, dtype=np.float32))
    return SearchResult(*(np.concatenate(columns) for columns in zip(*results)))


def threshold_search(queries, keys, sigma: float, block_size: int = DEFAULT_BLOCK_SIZE,
                     top_k: int | None = None, device: str | torch.device | None = None) -> SearchResult:
    """All pairs with cosine similarity >= sigma (inclusive) between rows of `queries` [N, d] and
    `keys` [M, d] (L2-normalised; numpy arrays, float16 memmaps or tensors).

    With `top_k`, only each query's k most similar keys are candidates (ties at the k-th
    similarity go to the lower key index), and of those only the ones >= sigma are kept. The
    result equals a brute-force computation over the full N x M matrix, but only one block of
    that matrix exists at a time. Sorted by query, then descending similarity, then key.
    """
    if top_k is not None and top_k < 1:
        raise ClapcurateError(f"top_k must be at least 1, got {top_k}")
    found: list[SearchResult] = []
    pending: list[SearchResult] = []  # candidates of the current query block
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
        if k_start == 0 and pending:
            found.append(_finish_query_block(pending, top_k))
            pending = []
        rows, cols, values = _block_candidates(block, _block_floor(block, sigma, top_k))
        pending.append(SearchResult(rows + q_start, cols + k_start, values))
        if top_k is not None:
            pending = [_finish_query_block(pending, top_k)]
    if pending:
        found.append(_finish_query_block(pending, top_k))
    return _concat(found)


def _finish_query_block(pending: list[SearchResult], top_k: int | None) -> SearchResult:
    result = _sort_pairs(_concat(pending))
    return result if top_k is None else _first_k_per_query(result, top_k)


# --------------------------------------------------------------------------- similarity distribution


@dataclasses.dataclass
class SimilarityHistogram:
    """Counts of cosine similarities in `len(counts)` equal bins over [low, high]; values outside
    the range are counted in the edge bins."""

    counts: np.ndarray  # int64 [bins]
    low: float = -1.0
    high: float = 1.0

    @classmethod
    def empty(cls, bins: int = HISTOGRAM_BINS, low: float = -1.0, high: float = 1.0) -> "SimilarityHistogram":
        return cls(np.zeros(bins, dtype=np.int64), low, high)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, len(self.counts) + 1)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / len(self.counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, values: torch.Tensor) -> None:
        """Count `values` (any shape; clamped in place into [low, high])."""
        clamped = values.clamp_(self.low, self.high)
        counts = torch.histc(clamped, bins=len(self.counts), min=self.low, max=self.high)
        self.counts += counts.cpu().numpy().astype(np.int64)

    def value_at_keep_fraction(self, keep_fraction: float) -> float:
        """The sigma that keeps `keep_fraction` of the counted values (those >= sigma).

        It is the lower edge of the bin in which the count from the top reaches
        ceil(keep_fraction * total): at least that many values lie at or above it, and it is
        within one bin width ((high - low) / bins, 3.1e-5 by default) of the exact quantile.
        """
        if not 0.0 < keep_fraction <= 1.0:
            raise ClapcurateError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if self.total == 0:
            raise ClapcurateError("cannot resolve keep_fraction: no similarities were counted")
        wanted = int(np.ceil(keep_fraction * self.total))
        count_from_top = np.cumsum(self.counts[::-1])
        bin_from_top = int(np.searchsorted(count_from_top, wanted))
        return float(self.edges[len(self.counts) - 1 - bin_from_top])

    def coarsened(self, bins: int) -> "SimilarityHistogram":
        """The same counts in `bins` wider bins (`bins` must divide the number of bins)."""
        if len(self.counts) % bins:
            raise ValueError(f"{bins} does not divide {len(self.counts)} bins")
        return SimilarityHistogram(self.counts.reshape(bins, -1).sum(axis=1), self.low, self.high)


def similarity_histogram(queries, keys, block_size: int = DEFAULT_BLOCK_SIZE, bins: int = HISTOGRAM_BINS,
                         max_queries: int | None = None,
                         device: str | torch.device | None = None) -> SimilarityHistogram:
    """Histogram of all query x key cosine similarities, computed block by block.

    With `max_queries`, only that many evenly spaced query rows are used: a cheap estimate of the
    distribution's shape (for plots) instead of a full pass over the N x M matrix.
    """
    if max_queries is not None and max_queries < len(queries):
        rows = np.linspace(0, len(queries) - 1, max_queries).round().astype(np.int64)
        queries = queries[torch.from_numpy(rows)] if isinstance(queries, torch.Tensor) else queries[rows]
    histogram = SimilarityHistogram.empty(bins)
    for _, _, block in similarity_blocks(queries, keys, block_size, device):
        histogram.add(block)
    return histogram


def threshold_from(sigma: float | None, keep_fraction: float | None,
                   histogram: SimilarityHistogram | None) -> float:
    """The absolute threshold: `sigma`, the value keeping `keep_fraction` of the `histogram`'s
    similarities, or without either the paper's sigma = 0.7. The resolved value is logged."""
    if sigma is not None and keep_fraction is not None:
        raise ConfigError("give either sigma or keep_fraction, not both")
    if keep_fraction is None:
        return PAPER_SIGMA if sigma is None else float(sigma)
    resolved = histogram.value_at_keep_fraction(keep_fraction)
    log.info("keep_fraction %.6g of %d similarities resolved to sigma = %.6f",
             keep_fraction, histogram.total, resolved)
    return resolved


def resolve_sigma(queries, keys, sigma: float | None, keep_fraction: float | None,
                  block_size: int = DEFAULT_BLOCK_SIZE,
                  device: str | torch.device | None = None) -> tuple[float, SimilarityHistogram | None]:
    """(sigma, histogram): the threshold of `threshold_from` over all query x key pairs; with
    `keep_fraction` it costs one blocked histogram pass, whose histogram is returned too."""
    if keep_fraction is None:
        return threshold_from(sigma, None, None), None
    histogram = similarity_histogram(queries, keys, block_size, device=device)
    return threshold_from(sigma, keep_fraction, histogram), histogram


# --------------------------------------------------------------------------- Improvement-Sets

PLOT_BINS = 256
PLOT_SAMPLE_QUERIES = 4096


@dataclasses.dataclass
class ImprovementSet:
    """Curated pairs as manifest rows, the threshold sigma that selected them and the histogram
    of the similarities they were selected from (for the plot)."""

    method: str
    rows: pd.DataFrame  # manifest columns + similarity + method, source_id, best_label
    sigma: float
    histogram: SimilarityHistogram


def _check_aligned(embeddings, n_rows: int, what: str) -> None:
    if len(embeddings) != n_rows:
        raise ClapcurateError(f"{what}: {len(embeddings)} embeddings for {n_rows} rows")


def _pool_caption_pairs(method: str, pool_embeddings, pool_clips: pd.DataFrame, caption_embeddings,
                        caption_rows: pd.DataFrame, sigma: float | None, keep_fraction: float | None,
                        max_captions_per_clip: int | None, block_size: int, device) -> ImprovementSet:
    """Every (pool clip, distinct caption) pair with cosine >= sigma, at most
    `max_captions_per_clip` per clip. `caption_rows` needs `caption`, `source_id`, `best_label`."""
    _check_aligned(pool_embeddings, len(pool_clips), "pool")
    _check_aligned(caption_embeddings, len(caption_rows), "captions")
    first_of_caption = np.flatnonzero(~caption_rows["caption"].duplicated().to_numpy())
    captions = caption_rows.iloc[first_of_caption].reset_index(drop=True)
    caption_embeddings = caption_embeddings[first_of_caption]  # [C, d]
    threshold, histogram = resolve_sigma(pool_embeddings, caption_embeddings, sigma, keep_fraction,
                                         block_size, device)
    if histogram is None:
        histogram = similarity_histogram(pool_embeddings, caption_embeddings, block_size,
                                         max_queries=PLOT_SAMPLE_QUERIES, device=device)
    found = threshold_search(pool_embeddings, caption_embeddings, threshold, block_size,
                             top_k=max_captions_per_clip, device=device)
    clips = pool_clips.iloc[found.query_idx].reset_index(drop=True)
    matched = captions.iloc[found.key_idx].reset_index(drop=True)
    rows = pd.DataFrame({
        "id": [f"{method}:{clip}:{source}" for clip, source in zip(clips["clip_id"], matched["source_id"])],
        "clip_id": clips["clip_id"],
        "audio_path": clips["audio_path"],
        "caption": matched["caption"],
        "source": clips["source"] if "source" in clips else "",
        "similarity": found.similarity.astype(np.float64),
        "method": method,
        "source_id": matched["source_id"],
        "best_label": matched["best_label"],
    })
    return ImprovementSet(method, rows, threshold, histogram)


def curate_du(pool_embeddings, pool_clips: pd.DataFrame, caption_embeddings, caption_rows: pd.DataFrame,
              sigma: float | None = None, keep_fraction: float | None = None,
              max_captions_per_clip: int | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
              device: str | torch.device | None = None) -> ImprovementSet:
    """DU: every pool clip x every distinct training caption, pairs with cosine >= sigma.

    `pool_embeddings` [P, d] align with `pool_clips` (clip_id, audio_path, source);
    `caption_embeddings` [R, d] with `caption_rows` (training manifest rows: id, caption). A
    caption shared by several rows is matched once, credited to its first row. sigma defaults
    to the paper's 0.7; `keep_fraction` sets it to the quantile of all pair similarities.
    """
    captions = caption_rows.assign(source_id=caption_rows["id"], best_label="")
    return _pool_caption_pairs("du", pool_embeddings, pool_clips, caption_embeddings, captions,
                               sigma, keep_fraction, max_captions_per_clip, block_size, device)


def curate_ads(ds_manifest: pd.DataFrame, caption_embeddings, pool_embeddings, pool_clips: pd.DataFrame,
               sigma: float | None = None, keep_fraction: float | None = None,
               max_captions_per_clip: int | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
               device: str | torch.device | None = None) -> ImprovementSet:
    """ADS: the DS Improvement-Set's captions x every pool clip, pairs with cosine >= sigma.

    `caption_embeddings` [R, d] align with `ds_manifest`'s rows; each output row keeps the DS
    row's provenance (the training row id in `source_id`, the `best_label`).
    """
    return _pool_caption_pairs("ads", pool_embeddings, pool_clips, caption_embeddings, ds_manifest,
                               sigma, keep_fraction, max_captions_per_clip, block_size, device)


def _best_key(queries, keys, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(index [N] of each query's most similar key, that similarity [N]); ties: the lower key."""
    best_index = np.zeros(len(queries), dtype=np.int64)
    best_value = np.full(len(queries), -np.inf, dtype=np.float32)
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size):
        values, indices = block.max(dim=1)  # [bq]
        rows = slice(q_start, q_start + len(values))
        better = values.numpy() > best_value[rows]
        best_value[rows] = np.where(better, values.numpy(), best_value[rows])
        best_index[rows] = np.where(better, indices.numpy() + k_start, best_index[rows])
    return best_index, best_value


def curate_ds(train_manifest: pd.DataFrame, caption_embeddings, prompt_embeddings, labels,
              sigma: float | None = None, keep_fraction: float | None = None,
              block_size: int = DEFAULT_BLOCK_SIZE) -> ImprovementSet:
    """DS: the training pairs whose caption is close to a prompt of the target benchmark.

    `caption_embeddings` [R, d] align with `train_manifest`'s rows, `prompt_embeddings` [L, d]
    with `labels` (prompts "this is a sound of {label}", `zeroshot.prompts`). A row is kept when
    its best label's text-text cosine is >= sigma; the label is recorded in `best_label`.
    """
    _check_aligned(caption_embeddings, len(train_manifest), "captions")
    _check_aligned(prompt_embeddings, len(labels), "prompts")
    if len(labels) == 0:
        raise ClapcurateError("DS curation needs the benchmark's class labels, got none")
    best_label, best_similarity = _best_key(caption_embeddings, prompt_embeddings, block_size)
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.from_numpy(best_similarity.copy()))
    threshold = threshold_from(sigma, keep_fraction, histogram)
    keep = best_similarity >= threshold
    kept = train_manifest[keep].reset_index(drop=True)
    rows = kept.assign(
        id=["ds:" + row_id for row_id in kept["id"]],
        similarity=best_similarity[keep].astype(np.float64),
        method="ds",
        source_id=kept["id"],
        best_label=[str(labels[i]) for i in best_label[keep]],
    )
    return ImprovementSet("ds", rows, threshold, histogram)


# --------------------------------------------------------------------------- exclusion


def training_clip_mask(pool_clips: pd.DataFrame, teacher_train_manifest: pd.DataFrame) -> np.ndarray:
    """True [P] where a pool clip's `clip_id` is in the teacher's training manifest."""
    return pool_clips["clip_id"].isin(set(teacher_train_manifest["clip_id"])).to_numpy()


def _resolved_paths(manifest: pd.DataFrame) -> pd.Series:
    return pd.Series([os.path.realpath(path) if path else "" for path in manifest["audio_path"]],
                     index=manifest.index)


def refuse_benchmark_audio(pool: pd.DataFrame, benchmark: pd.DataFrame, benchmark_name: str) -> None:
    """Raise `ClapcurateError` if the pool holds audio of the benchmark: a shared `clip_id`, or
    an `audio_path` resolving (symbolic links followed) to one of the benchmark's files."""
    shared_ids = pool["clip_id"].isin(set(benchmark["clip_id"]))
    benchmark_paths = set(_resolved_paths(benchmark)) - {""}
    shared_paths = _resolved_paths(pool).isin(benchmark_paths)
    clash = pool[shared_ids.to_numpy() | shared_paths.to_numpy()]
    if len(clash):
        example = clash.iloc[0]
        raise ClapcurateError(
            f"the pool holds {len(clash)} clip(s) of the target benchmark {benchmark_name!r} "
            f"(e.g. clip_id {example['clip_id']!r}, file {example['audio_path']}); curation never "
            f"reads a benchmark's audio: remove these rows from the pool manifest"
        )


# --------------------------------------------------------------------------- output


def improvement_set_stats(improvement_set: ImprovementSet, **context) -> dict:
    """The counts of an Improvement-Set (pairs as in the paper's Table 1; distinct clips and
    captions), the sigma used, the similarity range, and `context` (benchmark, pool size, ...)."""
    rows = improvement_set.rows
    similarity = rows["similarity"]
    return {
        "method": improvement_set.method,
        **context,
        "pairs": len(rows),
        "clips": int(rows["clip_id"].nunique()),
        "captions": int(rows["caption"].nunique()),
        "sigma": improvement_set.sigma,
        "similarity": None if rows.empty else {
            "min": float(similarity.min()), "mean": float(similarity.mean()), "max": float(similarity.max())},
    }


def plot_similarity_histogram(histogram: SimilarityHistogram, sigma: float, path: Path, title: str) -> Path:
    """A PNG of the similarity distribution (log counts) with the threshold sigma marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coarse = histogram.coarsened(PLOT_BINS) if len(histogram.counts) % PLOT_BINS == 0 else histogram
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.stairs(coarse.counts, coarse.edges, fill=True, alpha=0.6)
    axes.axvline(sigma, color="crimson", linestyle="--", label=f"sigma = {sigma:.4f}")
    occupied = coarse.edges[np.r_[np.flatnonzero(coarse.counts), np.flatnonzero(coarse.counts) + 1]]
    low, high = min(occupied.min(initial=sigma), sigma), max(occupied.max(initial=sigma), sigma)
    margin = 0.05 * (high - low) + coarse.bin_width
    axes.set_xlim(low - margin, high + margin)  # zoom on the occupied range and sigma
    axes.set_yscale("symlog", linthresh=1)
    axes.set_xlabel("cosine similarity")
    axes.set_ylabel("count")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


STATS_FILE = "stats.json"
HISTOGRAM_FILE = "similarity_histogram.png"
HISTOGRAM_DATA_FILE = "similarity_histogram.npz"  # counts [bins] (int64), low, high


def save_histogram(histogram: SimilarityHistogram, path: Path) -> Path:
    """The histogram's counts and range as `.npz` (for browsing a set without a new search)."""
    with open(path, "wb") as handle:
        np.savez(handle, counts=histogram.counts, low=histogram.low, high=histogram.high)
    return path


def read_histogram(path: str | Path) -> SimilarityHistogram:
    with np.load(path) as data:
        return SimilarityHistogram(data["counts"].astype(np.int64), float(data["low"]), float(data["high"]))


def write_improvement_set(improvement_set: ImprovementSet, out_dir, manifest_name: str = "improvement_set.csv",
                          **context) -> Path:
    """Write the Improvement-Set manifest, `stats.json`, `similarity_histogram.png` and its data
    `similarity_histogram.npz` into `out_dir`; returns the manifest's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_manifest(improvement_set.rows, out_dir / manifest_name)
    stats = improvement_set_stats(improvement_set, **context)
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    title = f"{improvement_set.method.upper()}: {stats['pairs']} pairs >= sigma"
    plot_similarity_histogram(improvement_set.histogram, improvement_set.sigma, out_dir / HISTOGRAM_FILE, title)
    save_histogram(improvement_set.histogram, out_dir / HISTOGRAM_DATA_FILE)
    return path


# --------------------------------------------------------------------------- the stage


@dataclasses.dataclass
class CurationConfig:
    """What `clapcurate curate du|ds|ads --config CFG` reads.

    Embedding folders default to `{out_dir}/embeddings/...` and are computed (or finished) with
    `embed_manifest` when needed; an existing folder must have been made with this teacher and
    these manifests.
    """

    teacher: str  # checkpoint folder of the teacher CLAP
    train_manifest: str  # captioned pairs: the captions of DU, the pairs DS selects from
    out_dir: str
    teacher_train_manifest: str = ""  # pool clips in it are left out (default: train_manifest)
    pool_manifest: str = ""  # unlabelled in-the-wild audio (DU, ADS)
    benchmark: str = ""  # target benchmark's name (DS, ADS)
    benchmark_manifest: str = ""  # its labels make the prompts; its audio must not be in the pool
    labels: list[str] = dataclasses.field(default_factory=list)  # default: the benchmark's labels
    ds_manifest: str = ""  # ADS: the DS Improvement-Set whose captions are matched to the pool
    pool_embeddings: str = ""  # default {out_dir}/embeddings/pool_audio
    caption_embeddings: str = ""  # default {out_dir}/embeddings/caption_text
    sigma: float | None = None  # default: the paper's 0.7
    keep_fraction: float | None = None  # instead of sigma: keep this fraction of all similarities
    max_captions_per_clip: int | None = None  # DU, ADS: only the best k captions of each clip
    block_size: int = DEFAULT_BLOCK_SIZE
    batch_size: int = 64
    shard_size: int = 10_000
    num_workers: int = 0
    device: str | None = None  # default: cuda when available
    manifest_name: str = "improvement_set.csv"  # .csv or .parquet
    progress: bool = True


def load_curation_config(path=None, overrides: list[str] | None = None, data: dict | None = None) -> CurationConfig:
    """A `CurationConfig` from YAML `path` (or a mapping `data`) with `key=value` overrides,
    validated as `clapcurate.config.load_config` does."""
    return load_config(CurationConfig, path, overrides, data)


def _aligned(keys, ids: list[str], embeddings: np.ndarray, folder) -> np.ndarray:
    """Rows of `embeddings` [len(keys), d] for `keys`, looked up in the folder's `ids`."""
    row_of = {key: row for row, key in enumerate(ids)}
    missing = [key for key in keys if key not in row_of]
    if missing:
        raise ClapcurateError(f"{folder}: no embedding for {len(missing)} of {len(keys)} items "
                              f"(e.g. {missing[0]!r}); it was made from another manifest")
    return embeddings[[row_of[key] for key in keys]]


def _caption_embeddings(config: CurationConfig, rows: pd.DataFrame) -> np.ndarray:
    """Teacher text embeddings [len(rows), d] of `rows`' captions (the training captions are
    embedded first where the folder is missing or unfinished)."""
    folder = config.caption_embeddings or Path(config.out_dir) / "embeddings" / "caption_text"
    embed_manifest(config.teacher, config.train_manifest, folder, "text", config.batch_size,
                   config.shard_size, config.num_workers, config.progress, device=config.device)
    ids, embeddings = load_embeddings(folder, dtype=np.float16)
    return _aligned([text_key(caption) for caption in rows["caption"]], ids, embeddings, folder)


def _pool(config: CurationConfig, benchmark: pd.DataFrame | None) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """(embeddings [P, d], clips [P], counts) of the pool's readable clips that the teacher did not
    train on. The pool is checked against the benchmark before any of its audio is read."""
    pool = read_manifest(config.pool_manifest)
    if benchmark is not None:
        refuse_benchmark_audio(pool, benchmark, config.benchmark or config.benchmark_manifest)
    folder = config.pool_embeddings or Path(config.out_dir) / "embeddings" / "pool_audio"
    embed_manifest(config.teacher, config.pool_manifest, folder, "audio", config.batch_size,
                   config.shard_size, config.num_workers, config.progress, device=config.device)
    ids, embeddings = load_embeddings(folder, dtype=np.float16)
    all_clips = unique_clips(pool)
    clips = all_clips.set_index("clip_id").loc[ids].reset_index()
    in_training = training_clip_mask(clips, read_manifest(config.teacher_train_manifest or config.train_manifest))
    counts = {"pool_clips": len(all_clips), "unreadable_pool_clips": len(all_clips) - len(ids),
              "excluded_training_clips": int(in_training.sum())}
    return embeddings[~in_training], clips[~in_training].reset_index(drop=True), counts


def _curate_ds_stage(config: CurationConfig, benchmark: pd.DataFrame) -> tuple[ImprovementSet, dict]:
    from .model.checkpoints import load

    train = read_manifest(config.train_manifest)
    captioned = train[train["caption"] != ""].reset_index(drop=True)
    labels = config.labels or benchmark_labels(benchmark)
    teacher = load(config.teacher, device=config.device or "cpu")
    improvement_set = curate_ds(captioned, _caption_embeddings(config, captioned), embed_texts(teacher, prompts(labels)),
                                labels, config.sigma, config.keep_fraction, config.block_size)
    return improvement_set, {"labels": len(labels), "training_pairs": len(captioned)}


def _curate_pool_stage(method: str, config: CurationConfig,
                       benchmark: pd.DataFrame | None) -> tuple[ImprovementSet, dict]:
    pool_embeddings, pool_clips, counts = _pool(config, benchmark)
    search = dict(sigma=config.sigma, keep_fraction=config.keep_fraction,
                  max_captions_per_clip=config.max_captions_per_clip, block_size=config.block_size,
                  device=config.device)
    if method == "du":
        captions = unique_captions(read_manifest(config.train_manifest))
        improvement_set = curate_du(pool_embeddings, pool_clips, _caption_embeddings(config, captions), captions,
                                    **search)
    else:
        captions = read_manifest(config.ds_manifest)
        improvement_set = curate_ads(captions, _caption_embeddings(config, captions), pool_embeddings, pool_clips,
                                     **search)
    return improvement_set, {**counts, "candidate_captions": int(captions["caption"].nunique())}


REQUIRED_KEYS = {"du": ["pool_manifest"], "ds": ["benchmark_manifest"],
                 "ads": ["pool_manifest", "benchmark_manifest", "ds_manifest"]}


def run_curation(method: Literal["du", "ds", "ads"], config: CurationConfig) -> Path:
    """Curate the `method` Improvement-Set of `config` into `config.out_dir`; returns the manifest.

    Beside the manifest: `stats.json` (counts, sigma) and `similarity_histogram.png`.
    """
    if method not in REQUIRED_KEYS:
        raise ConfigError(f"curation method must be du, ds or ads, got {method!r}")
    missing = [key for key in REQUIRED_KEYS[method] if not getattr(config, key)]
    if missing:
        raise ConfigError(f"curate {method}: missing config key(s) {', '.join(missing)}")
    benchmark = read_manifest(config.benchmark_manifest) if config.benchmark_manifest else None
    if method == "ds":
        improvement_set, counts = _curate_ds_stage(config, benchmark)
    else:
        improvement_set, counts = _curate_pool_stage(method, config, benchmark)
    log.info("%s Improvement-Set: %d pairs at sigma = %.4f", method.upper(), len(improvement_set.rows),
             improvement_set.sigma)
    return write_improvement_set(
        improvement_set, config.out_dir, config.manifest_name, benchmark=config.benchmark or None,
        keep_fraction=config.keep_fraction, max_captions_per_clip=config.max_captions_per_clip, **counts)
