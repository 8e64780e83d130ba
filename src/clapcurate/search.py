"""Exact blocked similarity search between two sets of L2-normalised embeddings, in one pass.

Only one `block_size x block_size` block of the N x M cosine-similarity matrix exists at a time,
so memory is bounded by the block size whatever N and M. One pass over the blocks
(`search_pass`) gives together: the pairs at or above a threshold sigma (optionally only each
query's k best), the histogram of the similarities, and, when sigma is given as the fraction of
all pairs to keep, sigma itself. For that fraction the pass keeps only candidates above a lower
bound of sigma read from the histogram of the blocks seen so far (the bound only rises), then
reads sigma from the full histogram and filters the candidates: the result is the one a second
pass with sigma known would give. Each query's best key (`best_key`) is its own small pass.

Inputs may be float16, as embeddings are stored: rows are converted block by block into reused
float32 buffers and each block is one float32 `torch.mm`, so a pair's similarity does not depend
on the block size. On the CPU one compiled kernel (`search_cpu`) reads each block once for the
histogram, the counts and each row's candidates; on other devices the same is done with torch
operations and everything stays on the device until the end of the pass.

Selection criteria (`SELECTIONS`) besides the raw cosine correct for hubs, rows or columns
close to everything: `csls` scores a pair by 2 cos(a, t) - r_a - r_t (cross-domain similarity
local scaling, Conneau et al. 2018), with r_a the mean cosine of query a's k nearest keys and r_t
the mean cosine of key t's k nearest queries; `mutual` keeps a pair only when each side is among
the other's k nearest (cosine at least the k-th largest of its row and of its column), scored by
its cosine. Both need each row's and each column's k largest cosines first (`neighbourhoods`:
one more pass with a streaming top-k per row and per column); the pass then scores each block
before reading it, so sigma, keep_fraction, top_k and the histogram apply to the score.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from . import device as devices
from .errors import ClapcurateError

DEFAULT_BLOCK_SIZE = 4096
HISTOGRAM_BINS = 65536
CANDIDATE_CAPACITY = 1 << 21  # candidate pairs held before those below the bound are dropped
ROW_CANDIDATES = 64  # candidates per row the CPU kernel holds; a row with more is searched again
from .method import DEFAULT_SELECTION_K, SELECTIONS  # noqa: E402 (the criteria, named without torch)


class SearchResult(NamedTuple):
    """Pairs (query_idx[i], key_idx[i]) with their score `similarity[i]` (the cosine, or the CSLS
    score under `csls`), sorted by query, then descending similarity, then key."""

    query_idx: np.ndarray  # int64 [K]
    key_idx: np.ndarray  # int64 [K]
    similarity: np.ndarray  # float32 [K]


def _as_tensor(matrix) -> torch.Tensor:
    """`matrix` as a tensor without a copy: numpy arrays and memmaps are wrapped (a memmap stays on
    disk until its rows are read), tensors are returned as they are."""
    if isinstance(matrix, torch.Tensor):
        return matrix
    array = np.asarray(matrix)
    if any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmaps: the search never writes to its inputs
        return torch.from_numpy(array)


class _Float32Rows:
    """Rows [start, stop) of a matrix as float32 on `device`, converted into one reused buffer (the
    rows themselves when the matrix is float32 there already)."""

    def __init__(self, matrix: torch.Tensor, max_rows: int, device: torch.device):
        self.matrix = matrix
        self.buffer = None
        if matrix.dtype != torch.float32 or matrix.device != device:
            self.buffer = torch.empty((min(max_rows, len(matrix)), matrix.shape[1]), device=device)

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        rows = self.matrix[start:stop]
        if self.buffer is None:
            return rows
        return self.buffer[: len(rows)].copy_(rows)


def _check_pair_shapes(queries, keys) -> None:
    if len(queries.shape) != 2 or len(keys.shape) != 2 or queries.shape[1] != keys.shape[1]:
        raise ClapcurateError(
            f"similarity search needs two matrices of the same width, got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )


def similarity_blocks(queries, keys, block_size: int = DEFAULT_BLOCK_SIZE,
                      device: str | torch.device | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield `(query_start, key_start, block)` with block = queries[q:q+b] @ keys[k:k+b].T.

    Blocks come query block by query block, each over all key blocks in order. The keys are
    moved to `device` once, in their own dtype; query rows block by block. The block lives in one
    reused buffer: a consumer must take what it needs before asking for the next block.
    """
    _check_pair_shapes(queries, keys)
    if block_size < 1:
        raise ClapcurateError(f"block_size must be at least 1, got {block_size}")
    device = devices.resolve_device(device)
    queries, keys = _as_tensor(queries), _as_tensor(keys).to(device)
    n_queries, n_keys = len(queries), len(keys)
    query_rows, key_rows = _Float32Rows(queries, block_size, device), _Float32Rows(keys, block_size, device)
    buffer = torch.empty(min(block_size, n_queries) * min(block_size, n_keys), device=device)
    for q_start in range(0, n_queries, block_size):
        query_block = query_rows(q_start, q_start + block_size)  # [bq, d]
        for k_start in range(0, n_keys, block_size):
            key_block = key_rows(k_start, k_start + block_size)  # [bk, d]
            block = buffer[: len(query_block) * len(key_block)].view(len(query_block), len(key_block))
            torch.mm(query_block, key_block.T, out=block)  # [bq, bk]
            yield q_start, k_start, block


# --------------------------------------------------------------------------- hub-aware scores

class Neighbourhoods(NamedTuple):
    """Each query's k largest cosines over the keys and each key's k largest over the queries,
    in descending order (k at most the other side's size)."""

    query_top: torch.Tensor  # float32 [N, min(k, M)]
    key_top: torch.Tensor  # float32 [M, min(k, N)]

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_query [N], r_key [M]): each row's mean, summed in float64 in descending order and
        rounded to float32."""
        return tuple((top.double().sum(dim=1) / top.shape[1]).float() for top in (self.query_top, self.key_top))

    def kth(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(each query's k-th largest cosine [N], each key's [M])."""
        return self.query_top[:, -1], self.key_top[:, -1]


def _merge_largest(running: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """The running.shape[1] largest values of each row of `running` and `block` together, descending."""
    k = running.shape[1]
    if block.shape[1] > k:
        block = torch.topk(block, k, dim=1).values
    return torch.topk(torch.cat([running, block], dim=1), k, dim=1).values


def neighbourhoods(queries, keys, k: int = DEFAULT_SELECTION_K, block_size: int = DEFAULT_BLOCK_SIZE,
                   device: str | torch.device | None = None) -> Neighbourhoods:
    """Each query's and each key's k largest cosines on the other side, in one blocked pass with
    a streaming top-k per row and per column (kept on `device` until the end)."""
    if k < 1:
        raise ClapcurateError(f"selection_k must be at least 1, got {k}")
    _check_pair_shapes(queries, keys)
    device = devices.resolve_device(device)
    n_queries, n_keys = queries.shape[0], keys.shape[0]
    query_top = torch.full((n_queries, min(k, n_keys)), -np.inf, device=device)
    key_top = torch.full((n_keys, min(k, n_queries)), -np.inf, device=device)
    if _use_cpu_kernel(device):  # one read of each block by the compiled kernel, each thread its own columns
        from . import search_cpu

        kernel = search_cpu.BlockScanner()
        thread_key_top = np.full((kernel.threads, *key_top.shape), -np.inf, np.float32)
        try:
            for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
                kernel.largest(block.numpy(), query_top[q_start:q_start + len(block)].numpy(),
                               thread_key_top[:, k_start:k_start + block.shape[1]])
        finally:
            kernel.close()
        key_top = torch.from_numpy(thread_key_top.transpose(1, 0, 2).reshape(n_keys, -1))
        return Neighbourhoods(query_top, torch.topk(key_top, min(k, n_queries), dim=1).values)
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
        rows, cols = slice(q_start, q_start + block.shape[0]), slice(k_start, k_start + block.shape[1])
        query_top[rows] = _merge_largest(query_top[rows], block)
        key_top[cols] = _merge_largest(key_top[cols], block.T)
    return Neighbourhoods(query_top, key_top)


class _Scores:
    """A selection's score of each similarity block, computed in place (the block is the pass's
    reused buffer), and the range the histogram bins it over.

    - cosine: the block as it is, over [-1, 1];
    - csls: (2 cos - r_query) - r_key in float32, over [-4, 4];
    - mutual: the cosine where it is at least the k-th largest of its row and of its column,
      -inf elsewhere (never >= any sigma; counted in the histogram's lowest bin), over [-1, 1].
    """

    def __init__(self, selection: str, queries, keys, k: int, block_size: int, device: torch.device):
        if selection not in SELECTIONS:
            raise ClapcurateError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.selection = selection
        self.low, self.high = (-4.0, 4.0) if selection == "csls" else (-1.0, 1.0)
        if selection == "cosine":
            return
        near = neighbourhoods(queries, keys, k, block_size, device)
        self.query_side, self.key_side = near.means() if selection == "csls" else near.kth()

    def __call__(self, q_start: int, k_start: int, block: torch.Tensor) -> torch.Tensor:
        if self.selection == "cosine":
            return block
        query_side = self.query_side[q_start:q_start + block.shape[0], None]  # [bq, 1]
        key_side = self.key_side[None, k_start:k_start + block.shape[1]]  # [1, bk]
        if self.selection == "csls":
            return block.mul_(2).sub_(query_side).sub_(key_side)
        return block.masked_fill_(block < torch.maximum(query_side, key_side), -np.inf)


# --------------------------------------------------------------------------- pairs on the device

Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # query int64 [K], key int64 [K], similarity float32 [K]


def _concat(parts: list[Pairs], device: torch.device) -> Pairs:
    if not parts:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.clone(), torch.zeros(0, device=device)
    return tuple(torch.cat(columns) for columns in zip(*parts))


def _select(pairs: Pairs, keep: torch.Tensor) -> Pairs:
    return tuple(column[keep] for column in pairs)


def _sort_pairs(pairs: Pairs) -> Pairs:
    """Order by query, then descending similarity, then key."""
    query, key, similarity = pairs
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(-similarity[order], stable=True)]
    order = order[torch.argsort(query[order], stable=True)]
    return _select(pairs, order)


def _first_k_per_query(pairs: Pairs, k: int) -> Pairs:
    """The first k pairs of each query of sorted pairs."""
    query = pairs[0]
    if len(query) == 0:
        return pairs
    starts = torch.ones_like(query, dtype=torch.bool)
    starts[1:] = query[1:] != query[:-1]
    position = torch.arange(len(query), device=query.device)
    group_start = torch.where(starts, position, 0).cummax(0).values
    return _select(pairs, position - group_start < k)


def _candidates(block: torch.Tensor, floor: torch.Tensor, top_k: int | None) -> Pairs:
    """(row, column, value) of the entries of `block` >= their row's floor, row-major order.

    The floor is `floor`, and with `top_k` at least the row's k-th largest value: an entry below
    it cannot be among the row's k best overall, while every entry tied with the k-th stays a
    candidate (ties are broken later by key index). Rows whose maximum is below the floor are
    dismissed first, so a block with few hits costs a row-maximum pass and not a full scan.
    """
    row_floor = floor.to(block.dtype).expand(block.shape[0])
    if top_k is not None and block.shape[1] >= top_k:
        kth_largest = torch.topk(block, top_k, dim=1, sorted=False).values.amin(dim=1)  # [bq]
        row_floor = torch.maximum(row_floor, kth_largest)
    hit_rows = torch.nonzero(block.amax(dim=1) >= row_floor).squeeze(1)  # [h]
    sub_block = block[hit_rows]  # [h, bk]
    sub_rows, cols = torch.nonzero(sub_block >= row_floor[hit_rows, None], as_tuple=True)
    return hit_rows[sub_rows], cols, sub_block[sub_rows, cols]


# --------------------------------------------------------------------------- the histogram

def _pairs_to_keep(keep_fraction: float, total: int) -> int:
    """ceil(keep_fraction * total): the pairs a `keep_fraction` keeps at least."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ClapcurateError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if total == 0:
        raise ClapcurateError("cannot resolve keep_fraction: no similarities were counted")
    return int(np.ceil(keep_fraction * total))


def _bin_reaching(counts: torch.Tensor, wanted: int) -> torch.Tensor:
    """The bin (0-dim tensor) in which the count from the top reaches `wanted`; -1 where the counts
    never reach it. Adding counts can only move it up."""
    from_bin_up = counts.sum() - counts.cumsum(0) + counts  # values in each bin and above: non-increasing
    return torch.count_nonzero(from_bin_up >= wanted) - 1


@dataclasses.dataclass
class SimilarityHistogram:
    """Counts of cosine similarities (or of a selection's scores, `SELECTIONS`) in `len(counts)`
    equal bins over [low, high]; values outside the range are counted in the edge bins."""

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
        wanted = _pairs_to_keep(keep_fraction, self.total)
        return float(self.edges[int(_bin_reaching(torch.from_numpy(self.counts), wanted))])

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


class _Bins:
    """The bins of a `SimilarityHistogram` as the scans compute them: in float32, as `torch.histc`
    does over the clamped values, with the edges in float32 for exact comparisons."""

    def __init__(self, bins: int, low: float, high: float, device: torch.device):
        self.bins = bins
        self.low, self.high = np.float32(low), np.float32(high)
        self.span = np.float32(self.high - self.low)
        self.edges = np.linspace(low, high, bins + 1).astype(np.float32)  # f32(edge) = what a compare with an edge uses
        self.device_edges = torch.from_numpy(self.edges).to(device)

    def count(self, values: torch.Tensor, counts: torch.Tensor, below: torch.Tensor, above: torch.Tensor) -> None:
        """Add `values` (float32, any shape) to `counts` [bins], and to `below` / `above` those
        under their bin's lower edge / at or over its upper edge."""
        values = values.reshape(-1)
        values = values[~torch.isnan(values)]
        clamped = values.clamp(float(self.low), float(self.high))
        position = ((clamped - float(self.low)) * self.bins / float(self.span)).long().clamp_(max=self.bins - 1)
        counts += torch.bincount(position, minlength=self.bins)
        below += torch.bincount(position[values < self.device_edges[position]], minlength=self.bins)
        above += torch.bincount(position[values >= self.device_edges[position + 1]], minlength=self.bins)


def _count_at_least(counts: np.ndarray, below: np.ndarray, above: np.ndarray, edge: int) -> int:
    """The exact number of counted values >= the (float32) lower edge of bin `edge`: those of the
    bins from `edge` up, less the ones of bin `edge` under that edge, plus the ones of the bin
    before that reach it (a value can be binned one bin off its edges by float32 rounding)."""
    at_least = int(counts[edge:].sum()) - int(below[edge])
    return at_least + (int(above[edge - 1]) if edge > 0 else 0)


# --------------------------------------------------------------------------- one pass

class _CpuScan:
    """One read of each block by the compiled kernel: histogram, counts and each row's candidates;
    rows with more candidates than `ROW_CANDIDATES` (more than fit) are returned to be searched
    again."""

    def __init__(self, bins: _Bins, block_rows: int, block_cols: int, top_k: int | None):
        from . import search_cpu

        self.kernel, self.bins = search_cpu.BlockScanner(), bins
        threads = self.kernel.threads
        self.counts, self.below, self.above = (np.zeros((threads, bins.bins), np.int64) for _ in range(3))
        capacity = min(block_cols, max(ROW_CANDIDATES, 2 * (top_k or 0)))
        self.values = np.empty((block_rows, capacity), np.float32)
        self.cols = np.empty((block_rows, capacity), np.int64)
        self.count = np.empty(block_rows, np.int64)
        self.overflow = np.empty(block_rows, np.bool_)
        self.reached = 0

    def __call__(self, block: torch.Tensor, histogram_rows: np.ndarray, exact_from: torch.Tensor,
                 floor: torch.Tensor, top_k: int | None, at_least: torch.Tensor) -> tuple[Pairs, torch.Tensor | None]:
        n = len(block)
        self.reached += int(self.kernel(
            block.numpy(), histogram_rows, self.bins.low, self.bins.high, self.bins.span, self.bins.edges,
            self.counts, self.below, self.above, np.float32(exact_from.item()), np.float32(floor.item()),
            top_k or 0, np.float32(at_least.item()), self.values[:n], self.cols[:n], self.count[:n], self.overflow[:n]))
        count = self.count[:n]
        held = np.arange(self.values.shape[1]) < count[:, None]  # [n, capacity]
        found = (torch.from_numpy(np.repeat(np.arange(n), count)), torch.from_numpy(self.cols[:n][held]),
                 torch.from_numpy(self.values[:n][held]))
        return found, torch.from_numpy(np.flatnonzero(self.overflow[:n]))

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(part.sum(axis=0)) for part in (self.counts, self.below, self.above))

    def close(self) -> None:
        self.kernel.close()


class _TorchScan:
    """Histogram and counts of each block with torch operations on its device; every row's
    candidates are left to the caller (returned as all rows to search)."""

    def __init__(self, bins: _Bins, device: torch.device, count_reached: bool):
        self.bins, self.count_reached = bins, count_reached
        self.counts, self.below, self.above = (torch.zeros(bins.bins, dtype=torch.int64, device=device)
                                               for _ in range(3))
        self.reached = torch.zeros((), dtype=torch.int64, device=device)

    def __call__(self, block: torch.Tensor, histogram_rows: torch.Tensor, exact_from: torch.Tensor,
                 floor: torch.Tensor, top_k: int | None, at_least: torch.Tensor) -> tuple[Pairs, torch.Tensor | None]:
        if len(histogram_rows) == len(block):
            self.bins.count(block, self.counts, self.below, self.above)
        elif len(histogram_rows):
            self.bins.count(block[histogram_rows], self.counts, self.below, self.above)
        if self.count_reached:
            self.reached += torch.count_nonzero(block >= at_least)
        return _concat([], block.device), None

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.counts, self.below, self.above

    def close(self) -> None:
        pass


def _use_cpu_kernel(device: torch.device) -> bool:
    return device.type == "cpu"


@contextlib.contextmanager
def _one_torch_thread(active: bool):
    """Torch on one thread inside (when `active`): on the CPU, operations on the few thousand
    candidates of a block cost far more in waking torch's threads than they save (tens of ms
    each on a busy machine, against the GEMM's few hundred)."""
    if not active:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class PassResult:
    """What one pass over the similarity blocks found."""

    pairs: SearchResult  # the pairs >= sigma (at most top_k per query), sorted as SearchResult says
    sigma: float | None  # the threshold: as given, or read from the histogram for a keep_fraction
    pairs_at_sigma: int  # the pairs >= sigma before the top_k cap, counted exactly
    histogram: SimilarityHistogram | None  # of the rows `histogram_queries` chose
    histogram_queries: int  # how many query rows the histogram counts


def _histogram_rows(n_queries: int, histogram_queries: int | None) -> np.ndarray:
    """Which query rows the histogram counts: all (None), none (0) or `histogram_queries` evenly
    spaced ones (all when there are no more)."""
    if histogram_queries is None or histogram_queries >= n_queries:
        return np.ones(n_queries, dtype=np.bool_)
    rows = np.zeros(n_queries, dtype=np.bool_)
    if histogram_queries > 0:
        rows[np.linspace(0, n_queries - 1, histogram_queries).round().astype(np.int64)] = True
    return rows


class _Pass:
    """The state of `search_pass` between blocks: the scan's counts, the floor candidates must
    reach (sigma, or for a keep_fraction the bound sigma is known to reach so far), and the
    candidates, those of the current query block (`pending`) apart."""

    def __init__(self, n_queries: int, n_keys: int, sigma: float | None, keep_fraction: float | None,
                 top_k: int | None, histogram_queries: int | None, block_size: int, device: torch.device,
                 bins: int, candidate_capacity: int, score_range: tuple[float, float] = (-1.0, 1.0)):
        self.device, self.sigma, self.keep_fraction, self.top_k = device, sigma, keep_fraction, top_k
        self.wanted = None if keep_fraction is None else _pairs_to_keep(keep_fraction, n_queries * n_keys)
        if self.wanted is not None and histogram_queries is not None and histogram_queries < n_queries:
            raise ClapcurateError("keep_fraction reads sigma from the histogram of all pairs: "
                                  "histogram_queries must be None")
        self.histogram_rows = _histogram_rows(n_queries, histogram_queries)
        self.bins = _Bins(bins, *score_range, device)
        self.on_cpu = _use_cpu_kernel(device)
        self.count_reached = sigma is not None and top_k is not None  # pairs >= sigma before the cap
        self.scan = (_CpuScan(self.bins, min(block_size, n_queries), min(block_size, n_keys), top_k) if self.on_cpu
                     else _TorchScan(self.bins, device, self.count_reached))
        self.searching = sigma is not None or keep_fraction is not None
        self.no_bound = self._scalar(-np.inf)
        self.floor = self._scalar(sigma if sigma is not None else (-np.inf if self.searching else np.inf))
        self.exact_from = self.no_bound if self.wanted is not None and top_k is not None else self._scalar(np.inf)
        self.at_least = self._scalar(sigma) if self.count_reached else self._scalar(np.inf)
        self.capacity = candidate_capacity
        self.found: list[Pairs] = []  # candidates of finished query blocks
        self.pending: list[Pairs] = []  # candidates of the current query block

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=self.device)

    def add(self, q_start: int, k_start: int, block: torch.Tensor) -> None:
        if k_start == 0:
            with _one_torch_thread(self.on_cpu):
                self._finish_query_block()
            self.block_histogram_rows = self.histogram_rows[q_start:q_start + len(block)]
            if not self.on_cpu:  # as row indices on the device
                self.block_histogram_rows = torch.from_numpy(np.flatnonzero(self.block_histogram_rows)).to(self.device)
        candidates, search_again = self.scan(block, self.block_histogram_rows, self.exact_from, self.floor,
                                             self.top_k, self.at_least)
        if not self.searching:
            return
        whole_block = search_again is None or len(search_again) == len(block)
        with _one_torch_thread(self.on_cpu):
            if self.wanted is not None:  # the bound sigma reaches, from the counts so far
                reaching = _bin_reaching(self.scan.totals()[0], self.wanted)
                edges = self.bins.device_edges
                self.floor = torch.where(reaching >= 0, edges[reaching.clamp(min=0)], self.no_bound)
                if self.top_k is not None:
                    self.exact_from = torch.where(reaching >= 1, edges[(reaching - 1).clamp(min=0)], self.no_bound)
                candidates = _select(candidates, candidates[2] >= self.floor)
            if not whole_block and len(search_again):
                search_again = search_again.to(self.device)
                rows, cols, values = _candidates(block[search_again], self.floor, self.top_k)
                candidates = _concat([tuple(column.to(self.device) for column in candidates),
                                      (search_again[rows], cols, values)], self.device)
        if whole_block:
            candidates = _candidates(block, self.floor, self.top_k)
        with _one_torch_thread(self.on_cpu):
            rows, cols, values = (column.to(self.device) for column in candidates)
            self.pending.append((rows + q_start, cols + k_start, values))
            if self.top_k is not None:
                self.pending = [_first_k_per_query(_sort_pairs(_concat(self.pending, self.device)), self.top_k)]
            if self.wanted is not None and self._held() > self.capacity:
                self.found, self.pending = ([_select(part, part[2] >= self.floor) for part in parts]
                                            for parts in (self.found, self.pending))
                self.capacity = max(self.capacity, 2 * self._held())

    def _held(self) -> int:
        return sum(len(part[0]) for part in self.found + self.pending)

    def _finish_query_block(self) -> None:
        if self.pending:
            pairs = _sort_pairs(_concat(self.pending, self.device))
            self.found.append(pairs if self.top_k is None else _first_k_per_query(pairs, self.top_k))
            self.pending = []

    def result(self) -> PassResult:
        self._finish_query_block()
        counts, below, above = (part.cpu().numpy() for part in self.scan.totals())
        counted_rows = int(self.histogram_rows.sum())
        histogram = (SimilarityHistogram(counts.astype(np.int64), float(self.bins.low), float(self.bins.high))
                     if counted_rows else None)
        pairs, sigma, reached = _concat(self.found, self.device), self.sigma, None  # None: as many as found
        if self.wanted is not None:
            sigma = histogram.value_at_keep_fraction(self.keep_fraction)
            pairs = _select(pairs, pairs[2] >= self._scalar(sigma))
            if self.top_k is not None:
                edge = int(_bin_reaching(torch.from_numpy(counts), self.wanted))
                reached = _count_at_least(counts, below, above, edge)
        elif self.count_reached:
            reached = int(self.scan.reached)
        query, key, similarity = (column.cpu().numpy() for column in _sort_pairs(pairs))
        return PassResult(SearchResult(query, key, similarity), sigma, len(query) if reached is None else reached,
                          histogram, counted_rows)


def search_pass(queries, keys, sigma: float | None = None, keep_fraction: float | None = None,
                top_k: int | None = None, histogram_queries: int | None = None,
                block_size: int = DEFAULT_BLOCK_SIZE, device: str | torch.device | None = None,
                bins: int = HISTOGRAM_BINS, candidate_capacity: int | None = None, selection: str = "cosine",
                selection_k: int = DEFAULT_SELECTION_K) -> PassResult:
    """One blocked pass over queries [N, d] x keys [M, d] (L2-normalised; numpy arrays, float16
    memmaps or tensors): the pairs with cosine similarity >= sigma (inclusive), the histogram
    of the similarities, and the exact number of pairs >= sigma.

    With `selection` csls or mutual (`SELECTIONS`, k = `selection_k`), everything below applies
    to the selection's score instead of the raw cosine (`_Scores`): one pass (`neighbourhoods`)
    comes first; keep_fraction is then the fraction of all N x M scores, so the criteria keep as
    many pairs at one keep_fraction (mutual: at most its mutual pairs); the histogram of a csls
    pass spans [-4, 4].

    sigma is given, or with `keep_fraction` it is `SimilarityHistogram.value_at_keep_fraction` of
    the histogram of all N x M similarities (which the pass counts); with neither, no pairs are
    searched. With `top_k`, only each query's k most similar keys are candidates (ties at the
    k-th similarity go to the lower key index), and of those the ones >= sigma are kept. The
    histogram (`bins` bins over [-1, 1]) counts all query rows (`histogram_queries` None), none
    (0) or that many evenly spaced ones; a keep_fraction needs all.

    The result equals a brute-force computation over the full N x M matrix, with one block of it
    in memory at a time. For a keep_fraction the candidates are held in a buffer of
    `candidate_capacity` pairs (default `CANDIDATE_CAPACITY`): when it is full, those below the
    bound sigma is known to reach are dropped, and it grows only when more than half are left.
    Runs on `device` (default: the GPU when there is one).
    """
    if sigma is not None and keep_fraction is not None:
        raise ClapcurateError("give either sigma or keep_fraction, not both")
    if top_k is not None and top_k < 1:
        raise ClapcurateError(f"top_k must be at least 1, got {top_k}")
    _check_pair_shapes(queries, keys)
    device = devices.resolve_device(device)
    scores = _Scores(selection, queries, keys, selection_k, block_size, device)
    one_pass = _Pass(queries.shape[0], keys.shape[0], sigma, keep_fraction, top_k, histogram_queries, block_size,
                     device, bins, CANDIDATE_CAPACITY if candidate_capacity is None else candidate_capacity,
                     (scores.low, scores.high))
    try:
        for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
            one_pass.add(q_start, k_start, scores(q_start, k_start, block))
    finally:
        one_pass.scan.close()
    return one_pass.result()


def threshold_search(queries, keys, sigma: float, block_size: int = DEFAULT_BLOCK_SIZE,
                     top_k: int | None = None, device: str | torch.device | None = None) -> SearchResult:
    """All pairs with cosine similarity >= sigma (inclusive) between rows of `queries` [N, d] and
    `keys` [M, d]: `search_pass` without a histogram. With `top_k`, of each query's k most
    similar keys (ties at the k-th similarity go to the lower key index) the ones >= sigma.
    Sorted by query, then descending similarity, then key."""
    return search_pass(queries, keys, sigma, top_k=top_k, histogram_queries=0, block_size=block_size,
                       device=device).pairs


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
    return search_pass(queries, keys, block_size=block_size, device=device, bins=bins).histogram


def best_key(queries, keys, block_size: int = DEFAULT_BLOCK_SIZE,
             device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index [N] of each query's most similar key, that similarity [N]); ties: the lower key.
    Kept on `device` until the end of the pass."""
    device = devices.resolve_device(device)
    best_index = torch.zeros(len(queries), dtype=torch.int64, device=device)
    best_value = torch.full((len(queries),), -np.inf, device=device)
    for q_start, k_start, block in similarity_blocks(queries, keys, block_size, device):
        values, indices = block.max(dim=1)  # [bq]
        rows = slice(q_start, q_start + len(values))
        better = values > best_value[rows]
        best_value[rows] = torch.where(better, values, best_value[rows])
        best_index[rows] = torch.where(better, indices + k_start, best_index[rows])
    return best_index.cpu().numpy(), best_value.cpu().numpy()
