"""The CPU kernel of the blocked similarity search (`clapcurate.search`): one read of a block of
the similarity matrix counts it into the histogram and collects each row's candidate pairs.

Compiled with numba on first use (cached on disk) and run on as many threads as torch uses, each
on its own rows of the block with its own histogram. The threads are plain Python threads that
sleep while the GEMM runs (the kernel releases the GIL): a second OpenMP pool beside torch's
would spin between blocks and take the cores from the GEMM. The bins are those of `torch.histc`
over the clamped values (the same float32 arithmetic), so the counts equal
`SimilarityHistogram.add`'s. A second kernel (`largest_of_rows_and_columns`) keeps each row's and
each column's k largest values for the hub-aware selections.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch


class BlockScanner:
    """`scan_rows` over a whole block, its rows split between `threads` threads (torch's number by
    default); thread t counts into row t of the [threads, bins] histograms."""

    def __init__(self, threads: int | None = None):
        self.threads = max(1, threads or torch.get_num_threads())
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def _on_threads(self, n_rows: int, scan) -> list:
        """[scan(t, rows of thread t) for each thread t], the rows split into equal runs."""
        rows_per_thread = -(-n_rows // self.threads)
        parts = [(thread, slice(thread * rows_per_thread, (thread + 1) * rows_per_thread))
                 for thread in range(self.threads)]
        if self.pool is None:
            return [scan(*parts[0])]
        return list(self.pool.map(lambda part: scan(*part), parts))

    def __call__(self, block: np.ndarray, histogram_rows, low, high, span, edges, counts, below, above,
                 exact_from, floor, top_k, at_least, cand_values, cand_cols, cand_count, overflow) -> int:
        """Scan `block` [bq, bk] as `scan_rows` does; returns how many entries are >= `at_least`."""
        return sum(self._on_threads(len(block), lambda thread, rows: scan_rows(
            block[rows], histogram_rows[rows], low, high, span, edges, counts[thread], below[thread], above[thread],
            exact_from, floor, top_k, at_least, cand_values[rows], cand_cols[rows], cand_count[rows], overflow[rows])))

    def largest(self, block: np.ndarray, row_top: np.ndarray, column_top: np.ndarray) -> None:
        """`largest_of_rows_and_columns` over `block` [bq, bk]: rows split between the threads,
        thread t keeps the columns' values in column_top[t] [bk, k] (merged by the caller)."""
        self._on_threads(len(block), lambda thread, rows: largest_of_rows_and_columns(
            block[rows], row_top[rows], column_top[thread]))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@numba.njit(cache=True, nogil=True)
def _keep_best(values, cols, n, top_k, floor):
    """Keep, in place and in order, the entries of values[:n] that are >= max(floor, their k-th
    largest value); returns (entries kept, that new floor)."""
    kth = np.sort(values[:n])[n - top_k]
    if kth > floor:
        floor = kth
    kept = 0
    for r in range(n):
        if values[r] >= floor:
            values[kept] = values[r]
            cols[kept] = cols[r]
            kept += 1
    return kept, floor


@numba.njit(cache=True, nogil=True)
def scan_rows(block, histogram_rows, low, high, span, edges, counts, below, above, exact_from,
              floor, top_k, at_least, cand_values, cand_cols, cand_count, overflow):
    """Scan float32 rows [r, bk] once; returns how many of their entries are >= `at_least`.

    Histogram (rows i with `histogram_rows[i]`): each value, clamped into [low, high], is counted in
    bin int((x - low) * bins / span) of `counts` (the last bin also holds `high`; NaN is not
    counted). Where a value is >= `exact_from` and lies below its bin's lower edge (`edges`,
    float32) it is also counted in `below[bin]`, where it reaches the upper edge in `above[bin]`:
    with these, the number of values >= an edge is exact.

    Candidates: row i's entries >= floor, or with `top_k` > 0 those >= max(floor, the row's k-th
    largest entry), go to cand_values[i, :n] / cand_cols[i, :n] in column order, n =
    cand_count[i]. A row with more than fit (`cand_values.shape[1]`) is marked in `overflow`, with
    cand_count[i] = 0: its candidates must be found again by the caller.
    """
    n_rows, n_cols = block.shape
    n_bins = counts.shape[0]
    capacity = cand_values.shape[1]
    no_floor = np.float32(np.inf)
    position = np.empty(n_cols, np.int64)
    at_least_count = 0
    for i in range(n_rows):
        row = block[i]
        row_max = -no_floor
        for j in range(n_cols):
            x = row[j]
            if x > row_max:
                row_max = x
            if x >= at_least:
                at_least_count += 1
        if histogram_rows[i]:
            for j in range(n_cols):
                y = min(max(row[j], low), high)
                if y != y:
                    y = low
                position[j] = np.int64((y - low) * np.float32(n_bins) / span)
            for j in range(n_cols):
                x = row[j]
                if x == x:
                    p = min(position[j], n_bins - 1)
                    counts[p] += 1
                    if x >= exact_from:
                        if x < edges[p]:
                            below[p] += 1
                        elif x >= edges[p + 1]:
                            above[p] += 1
        n = 0
        full = False
        if row_max >= floor:
            row_floor = floor
            if top_k == 1 and row_max > row_floor:
                row_floor = row_max
            values, cols = cand_values[i], cand_cols[i]
            for j in range(n_cols):
                x = row[j]
                if x >= row_floor:
                    if n == capacity and 0 < top_k < capacity:
                        n, row_floor = _keep_best(values, cols, n, top_k, row_floor)
                        if x < row_floor:
                            continue
                    if n == capacity:
                        full = True
                        break
                    values[n] = x
                    cols[n] = j
                    n += 1
            if not full and 0 < top_k < n:
                n, row_floor = _keep_best(values, cols, n, top_k, row_floor)
        cand_count[i] = 0 if full else n
        overflow[i] = full
    return at_least_count


@numba.njit(cache=True, nogil=True, inline="always")
def _insert_descending(top, x):
    """Put x into `top` (descending) in place of its last value, which x exceeds."""
    i = len(top) - 1
    while i > 0 and top[i - 1] < x:
        top[i] = top[i - 1]
        i -= 1
    top[i] = x


@numba.njit(cache=True, nogil=True)
def largest_of_rows_and_columns(block, row_top, column_top):
    """Keep in row_top[i] [k] the k largest values seen in row i (of this and earlier blocks), in
    column_top[j] [k] those of column j, both descending (start them at -inf). NaN is skipped."""
    n_rows, n_cols = block.shape
    column_floor = np.empty(n_cols, block.dtype)  # each column's k-th largest, contiguous for the scan
    last = column_top.shape[1] - 1
    for j in range(n_cols):
        column_floor[j] = column_top[j, last]
    row_last = row_top.shape[1] - 1
    for i in range(n_rows):
        row = block[i]
        top = row_top[i]
        floor = top[row_last]
        for j in range(n_cols):
            x = row[j]
            if x > floor:
                _insert_descending(top, x)
                floor = top[row_last]
            if x > column_floor[j]:
                _insert_descending(column_top[j], x)
                column_floor[j] = column_top[j, last]
