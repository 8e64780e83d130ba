"""`clapcurate curate du` as users run it, against a bare GEMM over the same blocks in the same process.

The pool's audio embeddings and the captions' text embeddings are float16 shards on disk, written
as `embed_manifest` writes them (random L2-normalised rows, owned by a tiny teacher that is
loaded but embeds nothing), and curation runs through `run_curation`, the function behind
`clapcurate curate du --config ...`: manifests read, embeddings loaded from disk, the search, the
plot, the manifest, the histogram and stats files written. Two settings are timed:
- `keep_fraction` (configs/demo.yaml's DU: keep_fraction 0.00025, one caption per clip): sigma is
  read from the histogram of all pairs, which is also the plot's;
- `sigma`: the sigma the first setting resolved to, given as a number (the plot then shows the
  histogram of a sample of the pool's rows), the same pairs;
- `keep_fraction, csls` and `keep_fraction, mutual`: the first setting under the hub-aware
  selections (`--selections`), which add a pass for each side's k nearest neighbours and score
  every block before reading it.
The baseline is a bare float32 `torch.mm` over the same [block, d] x [d, block] blocks into one
reused buffer, from inputs already float32 in memory: the least any exact search must compute.
Command and baseline alternate (`--repeats`; the machine may be shared) and their times are summed.
Memory: the peak RSS growth of a first, untimed run of the command, and of its search
(`curate.methods._pool_caption_pairs`) alone, beside the block buffer's size.

    python benchmarks/curate_search.py            # 100k audio x 20k captions, d = 1024 (minutes)
    python benchmarks/curate_search.py --quick    # 40k x 10k, d = 512 (under a minute)

Target: bare GEMM time / command time >= 0.8 with keep_fraction at the default size; the search's
memory bounded by the block size (plus the pairs it keeps). The hub-aware selections have no
target: they read every block twice, so about 0.5 is their bound.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clapcurate.curate import methods
from clapcurate.curate import load_curation_config, run_curation
from clapcurate.data.manifest import manifest_hash, write_manifest
from clapcurate.data.readers import read_data
from clapcurate.embed import META_FORMAT, _claim_folder, _items_to_embed, _write_shard, _write_skipped_list
from clapcurate.model.checkpoints import model_hash, save
from clapcurate.model.clap import CLAP, AudioConfig, CLAPConfig, TextConfig
from clapcurate.search import DEFAULT_BLOCK_SIZE

from record import record

SHARD_SIZE = 10_000  # CurationConfig's default


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


@contextlib.contextmanager
def peak_rss_growth(result: dict, key: str):
    """Store in result[key] the peak RSS (GiB) reached inside the block less the RSS on entry (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    yield
    result[key] = (_status_kib("VmHWM") - before) / 2**20


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    rows = rng.standard_normal((n, d), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def write_embeddings(folder: Path, teacher: Path, manifest_path: Path, modality: str, dim: int, seed: int) -> None:
    """An embeddings folder of the manifest's unique clips or captions, as `embed_manifest` leaves it."""
    manifest = read_data(str(manifest_path))
    items = _items_to_embed(manifest, modality, manifest_path)
    num_shards = (len(items) + SHARD_SIZE - 1) // SHARD_SIZE
    folder.mkdir(parents=True)
    _claim_folder(folder, {"format": META_FORMAT, "modality": modality, "model_hash": model_hash(teacher),
                           "manifest_hash": manifest_hash(manifest), "num_items": len(items),
                           "shard_size": SHARD_SIZE, "num_shards": num_shards, "dimension": dim})
    rng = np.random.default_rng(seed)
    for index in range(num_shards):
        keys = list(items["key"][index * SHARD_SIZE:(index + 1) * SHARD_SIZE])
        _write_shard(folder, index, keys, unit_rows(len(keys), dim, rng), pd.DataFrame(columns=["id", "audio_path", "reason"]))
    _write_skipped_list(folder, num_shards)


def make_study(root: Path, n_pool: int, n_captions: int, dim: int) -> dict:
    """Manifests, a tiny teacher and its float16 embeddings of them; returns the config's keys."""
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(n_pool)], "clip_id": [f"p{i}" for i in range(n_pool)],
                         "audio_path": [f"/pool/p{i}.wav" for i in range(n_pool)], "source": "pool"})
    train = pd.DataFrame({"id": [f"t{i}" for i in range(n_captions)], "clip_id": [f"c{i}" for i in range(n_captions)],
                          "audio_path": [f"/train/c{i}.wav" for i in range(n_captions)],
                          "caption": [f"caption number {i}" for i in range(n_captions)]})
    pool_path, train_path = write_manifest(pool, root / "pool.csv"), write_manifest(train, root / "train.csv")
    teacher = save(CLAP(CLAPConfig(
        audio=AudioConfig(encoder="cnn6", sample_rate=16000, window_size=512, hop_size=320, mel_bins=32, fmax=8000,
                          base_channels=4, clip_seconds=1.0),
        text=TextConfig(name_or_path="minilm", pooling="mean"), d_proj=dim)), root / "teacher")
    write_embeddings(root / "embeddings" / "pool_audio", teacher, pool_path, "audio", dim, seed=0)
    write_embeddings(root / "embeddings" / "caption_text", teacher, train_path, "text", dim, seed=1)
    return {"teacher": str(teacher), "train_manifest": str(train_path), "pool_manifest": str(pool_path),
            "pool_embeddings": str(root / "embeddings" / "pool_audio"),
            "caption_embeddings": str(root / "embeddings" / "caption_text"),
            "out_dir": str(root / "du"), "progress": False, "overwrite": True}


class Clock:
    """Wall time and CPU time of the process (all its threads), summed over the `with` blocks: on a
    shared machine the CPU time is the steadier measure of the work done."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self.started = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self.started[0]
        self.cpu += time.process_time() - self.started[1]


def bare_matmul(queries: torch.Tensor, keys: torch.Tensor, block_size: int) -> None:
    """queries @ keys.T block by block, [block, d] x [d, block], into one reused buffer (on the
    inputs' device, in their dtype)."""
    out = torch.empty(min(block_size, len(queries)) * min(block_size, len(keys)), device=queries.device,
                      dtype=queries.dtype)
    for q_start in range(0, len(queries), block_size):
        query_block = queries[q_start:q_start + block_size]
        for k_start in range(0, len(keys), block_size):
            key_block = keys[k_start:k_start + block_size]
            torch.mm(query_block, key_block.T, out=out[: len(query_block) * len(key_block)].view(
                len(query_block), len(key_block)))


def measure_search(clocks: dict, memory: dict) -> None:
    """Make the DU/ADS search of `curate.methods` add its time to clocks['search'] and store its
    peak RSS growth in memory['search']."""
    search = methods._pool_caption_pairs

    def measured(*args, **kwargs):
        with clocks["search"], peak_rss_growth(memory, "search"):
            return search(*args, **kwargs)
    methods._pool_caption_pairs = measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40k x 10k, d = 512: under a minute")
    parser.add_argument("--pool", type=int, default=None, help="pool clips (default 100000; quick 40000)")
    parser.add_argument("--captions", type=int, default=None, help="distinct captions (default 20000; quick 10000)")
    parser.add_argument("--dim", type=int, default=None, help="embedding width (default 1024; quick 512)")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--keep-fraction", type=float, default=0.00025)
    parser.add_argument("--max-captions-per-clip", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--selections", default="csls,mutual",
                        help="hub-aware selections timed beside cosine (comma-separated; empty: none)")
    args = parser.parse_args()
    n_pool = args.pool or (40_000 if args.quick else 100_000)
    n_captions = args.captions or (10_000 if args.quick else 20_000)
    dim = args.dim or (512 if args.quick else 1024)

    root = Path(tempfile.mkdtemp(prefix="curate_bench_"))
    try:
        keys = make_study(root, n_pool, n_captions, dim)
        # the pool's audio is not there (the embeddings are drawn at random), so the teacher's held-out
        # pairs, whose audio the command would embed for its summary, are left out (reference_clips 0)
        common = {**keys, "block_size": args.block_size, "max_captions_per_clip": args.max_captions_per_clip,
                  "reference_clips": 0}
        memory: dict = {}
        clocks = {"search": Clock()}
        measure_search(clocks, memory)
        # a first run: the memory figure, and the warm-up (compiled kernels, file caches)
        manifest = run_curation("du", load_curation_config(data={**common, "keep_fraction": args.keep_fraction}))
        first_run_search_memory = memory["search"]
        stats = pd.read_json(Path(manifest).parent / "stats.json", typ="series")
        settings = {"keep_fraction": {"keep_fraction": args.keep_fraction}, "sigma": {"sigma": float(stats["sigma"])}}
        settings.update({f"keep_fraction, {selection}": {"keep_fraction": args.keep_fraction, "selection": selection}
                         for selection in filter(None, args.selections.split(","))})

        rng_queries = torch.from_numpy(unit_rows(n_pool, dim, np.random.default_rng(2)))
        rng_keys = torch.from_numpy(unit_rows(n_captions, dim, np.random.default_rng(3)))
        flops = 2.0 * n_pool * n_captions * dim
        print(f"clapcurate curate du: {n_pool} pool clips x {n_captions} captions, d={dim}, float16 shards, "
              f"block {args.block_size}, at most {args.max_captions_per_clip} caption(s) per clip, "
              f"torch threads {torch.get_num_threads()}")
        print(f"  kept {int(stats['pairs'])} pairs of {int(stats['pairs_at_sigma']['before_cap'])} >= sigma "
              f"{float(stats['sigma']):.6f} (keep_fraction {args.keep_fraction})")
        for name, setting in settings.items():
            clocks.update(search=Clock(), command=Clock(), bare=Clock())
            for _ in range(args.repeats):
                with clocks["bare"]:
                    bare_matmul(rng_queries, rng_keys, args.block_size)
                with clocks["command"]:
                    run_curation("du", load_curation_config(data={**common, **setting}))
            bare = clocks["bare"]
            print(f"  [{name}]                    wall time   GFLOP/s   CPU time  ratio bare/this (wall, CPU)")
            for label, key in (("bare torch.mm baseline", "bare"), ("whole command", "command"),
                               ("search (DU pairs)", "search")):
                clock = clocks[key]
                print(f"    {label:22} {clock.wall:8.2f} s {flops / clock.wall / 1e9:8.1f} {clock.cpu:8.2f} s"
                      f"     {bare.wall / clock.wall:.3f}, {bare.cpu / clock.cpu:.3f}")
            if name == "keep_fraction":
                print("    target: bare / whole command >= 0.8")
            scale = f"{n_pool:,} x {n_captions:,}, d = {dim}"
            record(f"`clapcurate curate du` ({name}), {scale}, float16 shards", flops / clocks["command"].cpu / 1e9,
                   "GFLOP/s (CPU time)", baseline=flops / bare.cpu / 1e9, baseline_what="bare torch.mm, same blocks",
                   target=">= 0.8" if name == "keep_fraction" else "", threshold=0.8 if name == "keep_fraction" else None)
            record(f"`clapcurate curate du` ({name}), {scale}, float16 shards", flops / clocks["command"].wall / 1e9,
                   "GFLOP/s (wall time)", baseline=flops / bare.wall / 1e9, baseline_what="bare torch.mm, same blocks")
        block_gib = min(args.block_size, n_pool) * min(args.block_size, n_captions) * 4 / 2**30
        inputs_gib = (n_pool + n_captions) * dim * 2 / 2**30
        print(f"  peak RSS growth of the search (first run, keep_fraction) {first_run_search_memory:.3f} GiB: "
              f"one similarity block is {block_gib:.3f} GiB, the float16 embeddings in memory {inputs_gib:.3f} GiB")
        record(f"peak memory growth of the search, {n_pool:,} x {n_captions:,}", first_run_search_memory * 1024, "MiB",
               baseline=(block_gib + inputs_gib) * 1024,
               baseline_what="one similarity block and the float16 embeddings, whose mapped pages count",
               target="bounded by the block, not N x M: ratio <= 2", higher_is_better=False, threshold=2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
