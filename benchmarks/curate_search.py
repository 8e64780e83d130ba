"""Blocked threshold search: FLOP rate against a bare `torch.mm` of the same shapes, and peak RSS.

Default: 200k query x 20k key embeddings, d = 1024 (random, L2-normalised float32), sigma chosen
so that only a few thousand pairs pass. The bare matmul cannot hold the full 200k x 20k output
(16 GB), so the baseline multiplies the same query rows against all keys in chunks of
`--block-size` rows into one reused [block, M] buffer: the same FLOPs, no thresholding.
The machine's cores may be shared, so the two are timed alternately on consecutive slices of
the queries (`--slices`; query rows are independent, so the slices' results together are the
whole search's) and their times summed.

    python benchmarks/curate_search.py                       # paper-sized (a few minutes on 2 cores)
    python benchmarks/curate_search.py --queries 20000       # quick run

Targets: search FLOP rate >= 0.7 of the baseline; peak RSS <= 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from clapcurate.search import DEFAULT_BLOCK_SIZE, threshold_search
from train_step import synchronize


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def random_unit_rows(n: int, d: int, seed: int, chunk: int = 8192) -> np.ndarray:
    """[n, d] float32 rows, L2-normalised, generated in chunks so no temporary copy exists."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        part = rows[start:start + chunk]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return rows


def bare_matmul_seconds(queries: torch.Tensor, keys: torch.Tensor, block_size: int) -> float:
    """Time of queries @ keys.T in [block_size, M] chunks into one reused output buffer (on the
    inputs' device, in their dtype)."""
    out = torch.empty(min(block_size, len(queries)), len(keys), device=queries.device, dtype=queries.dtype)
    synchronize(queries.device)
    start = time.perf_counter()
    for q_start in range(0, len(queries), block_size):
        query_block = queries[q_start:q_start + block_size]
        torch.mm(query_block, keys.T, out=out[: len(query_block)])
    synchronize(queries.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--sigma", type=float, default=None,
                        help="threshold (default: 5 standard deviations of a random cosine, 5/sqrt(d))")
    args = parser.parse_args()
    sigma = args.sigma if args.sigma is not None else 5.0 / np.sqrt(args.dim)

    queries = torch.from_numpy(random_unit_rows(args.queries, args.dim, seed=0))
    keys = torch.from_numpy(random_unit_rows(args.keys, args.dim, seed=1))
    rss_before = peak_rss_gb()
    threshold_search(queries[: args.block_size], keys, sigma, args.block_size)  # warm-up

    search_seconds = baseline_seconds = 0.0
    pairs = 0
    for query_slice in torch.tensor_split(queries, args.slices):
        start = time.perf_counter()
        pairs += len(threshold_search(query_slice, keys, sigma, args.block_size).query_idx)
        search_seconds += time.perf_counter() - start
        baseline_seconds += bare_matmul_seconds(query_slice, keys, args.block_size)
    rss_search = peak_rss_gb()  # the baseline's [block, M] buffer included
    flops = 2.0 * args.queries * args.keys * args.dim
    search_rate, baseline_rate = flops / search_seconds / 1e9, flops / baseline_seconds / 1e9

    print(f"threshold search {args.queries} x {args.keys}, d={args.dim}, block {args.block_size}, "
          f"sigma {sigma:.4f}, torch threads {torch.get_num_threads()}")
    print(f"  pairs found             {pairs}")
    print(f"  search                  {search_seconds:8.2f} s  {search_rate:8.1f} GFLOP/s")
    print(f"  bare torch.mm baseline  {baseline_seconds:8.2f} s  {baseline_rate:8.1f} GFLOP/s")
    print(f"  FLOP rate ratio         {search_rate / baseline_rate:8.3f}  (target >= 0.7)")
    print(f"  peak RSS, whole run     {rss_search:8.3f} GB  (target <= 2 GB; inputs "
          f"{(queries.nbytes + keys.nbytes) / 2**30:.3f} GB, growth while searching "
          f"{rss_search - rss_before:.3f} GB)")


if __name__ == "__main__":
    main()
