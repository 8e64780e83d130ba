"""What the integrity checks cost where data is read, each against the same read without them in
the same process (the fastest of `--repeats` runs of each, alternating; the machine may be shared):

- embeddings: `load_embeddings` of a folder of `--rows` x `--dimension` float16 rows in shards of
  `--shard-size` (the paper-scale pool: 10^5 clips of 1024-d embeddings, 200 MB), which checks
  each shard's CRC-32 and that every row is finite and of unit norm; baseline: the same files read
  and converted into one float32 array with no check;
- feature store: `--crops` random arrays of 160 bytes read through `StoredArrays` (a positioned
  read and a CRC-32 each); baseline: the same positioned reads without the CRC-32;
- checkpoint: `checkpoints.load` of a CLAP with PANNs' CNN14 (80 M float32 weights) and a tiny text
  encoder, which hashes every stored part (SHA-256, the hash weights.json records); baseline: the
  same load with the check skipped.

    python benchmarks/integrity.py [--rows 100000] [--dimension 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from record import record


def fastest(runs: dict, repeats: int) -> dict[str, float]:
    """{name: fastest wall time} of each callable in `runs`, alternating them `repeats` times."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def embeddings_folder(folder: Path, rows: int, dimension: int, shard_size: int) -> Path:
    """A finished embeddings folder of unit rows, written as `embed_manifest` writes one."""
    import json

    from clapcurate import embed

    rng = np.random.default_rng(0)
    num_shards = (rows + shard_size - 1) // shard_size
    folder.mkdir()
    (folder / embed.META_FILE).write_text(json.dumps({"format": embed.META_FORMAT, "num_shards": num_shards,
                                                      "dimension": dimension, "shard_size": shard_size}))
    for index in range(num_shards):
        n = min(shard_size, rows - index * shard_size)
        values = rng.standard_normal((n, dimension), dtype=np.float32)
        values /= np.linalg.norm(values, axis=1, keepdims=True)
        embed._write_shard(folder, index, [f"clip{index}-{i}" for i in range(n)], values,
                           embed.pd.DataFrame(columns=embed.SKIPPED_COLUMNS))
    return folder


def unchecked_embeddings(folder: Path) -> np.ndarray:
    """The baseline: what `load_embeddings` does without its checks (every shard's marker, ids and
    rows read, the rows converted into one float32 array)."""
    import json

    from clapcurate import embed

    meta = json.loads((folder / embed.META_FILE).read_text())
    markers = [json.loads(embed._shard_paths(folder, i)["done"].read_text()) for i in range(meta["num_shards"])]
    embeddings = np.empty((sum(marker["rows"] for marker in markers), meta["dimension"]), np.float32)
    row = 0
    for index in range(meta["num_shards"]):
        paths = embed._shard_paths(folder, index)
        paths["ids"].read_bytes().decode("utf-8").splitlines()
        rows = embed._npy_rows(paths["embeddings"].read_bytes(), paths["embeddings"])
        embeddings[row:row + len(rows)] = rows
        row += len(rows)
    return embeddings


def measure_embeddings(tmp: Path, args) -> None:
    from clapcurate.embed import load_embeddings

    folder = embeddings_folder(tmp / "embeddings", args.rows, args.dimension, args.shard_size)
    times = fastest({"checked": lambda: load_embeddings(folder), "bare": lambda: unchecked_embeddings(folder)},
                    args.repeats)
    megabytes = args.rows * args.dimension * 2 / 1e6
    print(f"embeddings ({args.rows:,} x {args.dimension}, {megabytes:.0f} MB float16): checked {times['checked']:.3f} s, "
          f"bare read {times['bare']:.3f} s, ratio {times['checked'] / times['bare']:.3f}")
    record(f"load_embeddings with checksums and unit-norm check, {args.rows:,} x {args.dimension}",
           times["checked"], "s", times["bare"], "the same shards read and converted unchecked",
           target="checking adds at most half the read time", higher_is_better=False, threshold=1.5)


def measure_feature_store(tmp: Path, args) -> None:
    from clapcurate.feature_store import FeatureStore

    store = FeatureStore(tmp / "store", 8, np.float16)
    keys = [i.to_bytes(4, "little") for i in range(args.store_arrays)]
    with store.writer() as writer:
        for i, key in enumerate(keys):
            writer.add(key, np.full((10, 8), i % 2048, np.float16))
    chosen = np.random.default_rng(1).integers(0, len(keys), args.crops)
    found = store.locate([keys[i] for i in chosen])

    def checked():
        for i in range(len(found)):
            found[i]

    def bare():
        for i in range(len(found)):
            array = np.empty((int(found.rows[i]), 8), np.float16)
            os.preadv(store._file(int(found.shard[i])), [array], int(found.offset[i]) * store.row_bytes)

    times = fastest({"checked": checked, "bare": bare}, args.repeats)
    print(f"feature store ({args.crops:,} reads of 160 bytes): checked {times['checked']:.3f} s, "
          f"bare {times['bare']:.3f} s, ratio {times['checked'] / times['bare']:.3f}")
    record(f"feature-store reads with CRC-32, {args.crops:,} arrays of 160 bytes", times["checked"], "s",
           times["bare"], "the same positioned reads unchecked", target="at most 1.5x the bare reads",
           higher_is_better=False, threshold=1.5)


def measure_checkpoint(tmp: Path, args) -> None:
    import torch

    from clapcurate.model import checkpoints
    from clapcurate.model.clap import CLAP, AudioConfig, CLAPConfig, TextConfig
    from clapcurate.model.text_encoders import write_tiny_text_encoder

    torch.manual_seed(0)
    text = TextConfig(name_or_path=str(write_tiny_text_encoder(tmp / "text")), pooling="cls")
    model = CLAP(CLAPConfig(audio=AudioConfig(encoder="cnn14"), text=text, d_proj=1024))  # PANNs' CNN14
    folder = checkpoints.save(model, tmp / "checkpoint", self_contained=True)
    parameters = sum(p.numel() for p in model.parameters())
    original = checkpoints.check_stored_parts

    def bare():
        checkpoints.check_stored_parts = lambda *parts: None
        try:
            checkpoints.load(folder)
        finally:
            checkpoints.check_stored_parts = original

    times = fastest({"checked": lambda: checkpoints.load(folder), "bare": bare}, args.repeats)
    print(f"checkpoint ({parameters / 1e6:.0f} M parameters): checked {times['checked']:.3f} s, "
          f"bare {times['bare']:.3f} s, ratio {times['checked'] / times['bare']:.3f}")
    record(f"checkpoints.load with the sha256 check, {parameters / 1e6:.0f} M parameters", times["checked"], "s",
           times["bare"], "the same load without the check", target="at most 1.5x the load",
           higher_is_better=False, threshold=1.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--store-arrays", type=int, default=100_000)
    parser.add_argument("--crops", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="integrity-") as tmp:
        measure_embeddings(Path(tmp), args)
        measure_feature_store(Path(tmp), args)
        measure_checkpoint(Path(tmp), args)


if __name__ == "__main__":
    main()
