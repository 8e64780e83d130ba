"""Exact blocked similarity search between two sets of L2-normalised embeddings.

Only one `block_size x block_size` block of the N x M cosine-similarity matrix exists at a time,
so memory is bounded by the block size whatever N and M. On top of the blocks: all pairs above a
threshold (optionally only each query's k best), each query's best key, and the histogram of all
similarities (from which a quantile threshold is read).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from .errors import ClapcurateError

DEFAULT_BLOCK_SIZE = 4096
HISTOGRAM_BINS = 65536

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
    return counted_threshold_search(queries, keys, sigma, block_size, top_k, device)[0]


def counted_threshold_search(queries, keys, sigma: float, block_size: int = DEFAULT_BLOCK_SIZE,
                             top_k: int | None = None, device: str | torch.device | None = None
                             ) -> tuple[SearchResult, int]:
    """(`threshold_search`'s result, the exact number of pairs >= sigma before the `top_k` cap),
    counted in the same pass over the blocks."""
    if top_k is not None and top_k < 1:
        raise ClapcurateError(f"top_k must be at least 1, got {top_k}")
    found: list[SearchResult] = []
    pending: list[SearchResult] = []  # candidates of the current query block
    at_sigma = 0
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
        if k_start == 0 and pending:
            found.append(_finish_query_block(pending, top_k))
            pending = []
        if top_k is not None:
            at_sigma += int((block >= sigma).sum())
        rows, cols, values = _block_candidates(block, _block_floor(block, sigma, top_k))
        pending.append(SearchResult(rows + q_start, cols + k_start, values))
        if top_k is not None:
            pending = [_finish_query_block(pending, top_k)]
    if pending:
        found.append(_finish_query_block(pending, top_k))
    result = _concat(found)
    return result, at_sigma if top_k is not None else len(result.query_idx)


def _finish_query_block(pending: list[SearchResult], top_k: int | None) -> SearchResult:
    result = _sort_pairs(_concat(pending))
    return result if top_k is None else _first_k_per_query(result, top_k)




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

    def save(self, file) -> None:
        """Counts and range as `.npz` (`counts` int64 [bins], `low`, `high`) into a path ending in
        `.npz` or an open binary file."""
        np.savez(file, counts=self.counts, low=self.low, high=self.high)

    @classmethod
    def read(cls, path: str | Path) -> "SimilarityHistogram":
        with np.load(path) as data:
            return cls(data["counts"].astype(np.int64), float(data["low"]), float(data["high"]))


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


def best_key(queries, keys, block_size: int = DEFAULT_BLOCK_SIZE,
             device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index [N] of each query's most similar key, that similarity [N]); ties: the lower key."""
    best_index = np.zeros(len(queries), dtype=np.int64)
    best_value = np.full(len(queries), -np.inf, dtype=np.float32)
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
        values, indices = block.max(dim=1)  # [bq]
        values, indices = values.cpu().numpy(), indices.cpu().numpy()
        rows = slice(q_start, q_start + len(values))
        better = values > best_value[rows]
        best_value[rows] = np.where(better, values, best_value[rows])
        best_index[rows] = np.where(better, indices + k_start, best_index[rows])
    return best_index, best_value
