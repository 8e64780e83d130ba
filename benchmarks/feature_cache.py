"""Feature cache at scale: resident memory and crop reads of the sharded `FeatureStore` (the
log-mel cache's storage) as the number of clips grows from 10^4 to 10^6.

Synthetic features keep the disk small: every clip is 10 frames x 8 mel bins of float16 (160
bytes; 160 MB of shards for 10^6 clips), stored under a 20-byte SHA-1 key as the log-mel cache
stores a file's. For each size, each memory figure in a fresh subprocess (so that each peak is
its own):
- build: a writer with the default shard limits stores every clip; peak RSS growth;
- read: a store is opened, `--crops` random clips are located (one index query per 500 keys, as
  a fit's preparation does) and a random 4-frame crop of each is read, in batches of 128 stacked
  as a training batch is; peak RSS growth;
- memmap: the same crops through `np.memmap`s of the same shard files (the other way to read
  them, for comparison); peak RSS growth;
- in memory (the baseline): every clip's features in one list of arrays, as the cache held them
  before; the same crops read from it; peak RSS growth.
Peak RSS growth is VmHWM at the end minus VmRSS after the setup (Linux /proc/self/status); mapped
file pages count in it. Throughput (crops/s) is measured in the read subprocess once its peak is
taken: store, memmap and in-memory reads of the same crops alternate `--repeats` times and the
fastest run of each counts (the machine may be shared). Targets: read memory ratio (largest /
smallest size) near 1; read throughput ratio (store / in-memory) as high as one system call per
crop allows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from record import record

FRAMES, MELS, CROP, BATCH = 10, 8, 4, 128


def key(k: int) -> bytes:
    return hashlib.sha1(str(k).encode()).digest()


def features_of(k: int) -> np.ndarray:
    return np.full((FRAMES, MELS), k % 2048, np.float16)


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def read_crops(get, chosen: np.ndarray, starts: np.ndarray) -> tuple[float, float]:
    """(crops/s, checksum) of reading crop i as `get(i)[starts[i]:][:CROP]`, in training-sized
    stacked batches."""
    total = 0.0
    t0 = time.perf_counter()
    for lo in range(0, len(chosen), BATCH):
        batch = np.stack([get(i)[s:s + CROP] for i, s in zip(range(lo, min(lo + BATCH, len(chosen))),
                                                            starts[lo:lo + BATCH])])
        total += float(batch[:, 0, 0].sum(dtype=np.float64))
    return len(chosen) / (time.perf_counter() - t0), total


def phase(args) -> dict:
    """One measurement, run in its own process; returns its figures."""
    from clapcurate.feature_store import FeatureStore

    rng = np.random.default_rng(0)
    chosen = rng.integers(0, args.clips, args.crops)
    starts = rng.integers(0, FRAMES - CROP + 1, args.crops)
    chosen_keys = [key(int(k)) for k in chosen]
    start_kib = status_kib("VmRSS")
    t0 = time.perf_counter()
    result = {}
    if args.phase == "build":
        with FeatureStore(args.folder, MELS, np.float16).writer() as writer:
            for k in range(args.clips):
                writer.add(key(k), features_of(k))
        result["seconds"] = time.perf_counter() - t0
    elif args.phase in ("read", "memmap"):
        store = FeatureStore(args.folder, MELS, np.float16)
        found = store.locate(chosen_keys)
        result["locate_per_s"] = len(chosen) / (time.perf_counter() - t0)
        assert found.present.all()
        maps = {}

        def from_memmap(i):
            if found.shard[i] not in maps:
                maps[found.shard[i]] = np.memmap(store.shard_path(found.shard[i]), np.float16, "r").reshape(-1, MELS)
            return maps[found.shard[i]][found.offset[i]:found.offset[i] + found.rows[i]]

        readers = {"read": found.__getitem__, "memmap": from_memmap}
        result["checksum"] = read_crops(readers[args.phase], chosen, starts)[1]
        if args.phase == "read":  # peak taken: now the throughput of every reader, alternating
            result["peak_growth_mib"] = (status_kib("VmHWM") - start_kib) / 1024
            arrays = [features_of(k) for k in range(args.clips)]
            readers["memory"] = lambda i: arrays[chosen[i]]
            for name in readers:
                result[f"{name}_crops_per_s"] = 0.0
            for _ in range(args.repeats):
                for name, get in readers.items():
                    speed, checksum = read_crops(get, chosen, starts)
                    assert checksum == result["checksum"], f"{name} crops differ from the store's"
                    result[f"{name}_crops_per_s"] = max(result[f"{name}_crops_per_s"], speed)
            return result
    else:  # every clip's features held in memory
        arrays = [features_of(k) for k in range(args.clips)]
        result["checksum"] = read_crops(lambda i: arrays[chosen[i]], chosen, starts)[1]
    result["peak_growth_mib"] = (status_kib("VmHWM") - start_kib) / 1024
    return result


def run_phase(name: str, folder: Path, clips: int, args) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--folder", str(folder), "--clips", str(clips),
               "--crops", str(args.crops), "--repeats", str(args.repeats)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^4 and 10^5 clips, fewer crops")
    parser.add_argument("--crops", type=int, default=None, help="random crops (default 50000; quick 10000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each reader (default 5; quick 3)")
    parser.add_argument("--phase", choices=["build", "read", "memmap", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--clips", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.crops = args.crops or (10000 if args.quick else 50000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    if args.phase:
        print(json.dumps(phase(args)))
        return

    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    print(f"feature store: {FRAMES} frames x {MELS} mel bins float16 per clip; {args.crops} random "
          f"{CROP}-frame crops in batches of {BATCH}; throughput: best of {args.repeats}")
    print(f"{'clips':>9} {'build s':>7} {'build MiB':>9} | {'read MiB':>8} {'memmap MiB':>10} {'memory MiB':>10} | "
          f"{'locate/s':>8} {'read crops/s':>12} {'memmap crops/s':>14} {'memory crops/s':>14} {'ratio':>6}")
    rows = {}
    root = Path(tempfile.mkdtemp(prefix="feature-cache-bench-"))
    try:
        for clips in sizes:
            folder = root / str(clips)
            build = run_phase("build", folder, clips, args)
            read, memmap, memory = (run_phase(name, folder, clips, args) for name in ("read", "memmap", "memory"))
            assert read["checksum"] == memmap["checksum"] == memory["checksum"], "crops differ between readers"
            shutil.rmtree(folder)
            rows[clips] = (build, read, memmap, memory)
            print(f"{clips:>9} {build['seconds']:>7.1f} {build['peak_growth_mib']:>9.1f} | "
                  f"{read['peak_growth_mib']:>8.1f} {memmap['peak_growth_mib']:>10.1f} {memory['peak_growth_mib']:>10.1f} | "
                  f"{read['locate_per_s']:>8.0f} {read['read_crops_per_s']:>12.0f} {read['memmap_crops_per_s']:>14.0f} "
                  f"{read['memory_crops_per_s']:>14.0f} {read['read_crops_per_s'] / read['memory_crops_per_s']:>6.3f}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = rows[sizes[0]], rows[sizes[-1]]

    def ratio(phase: int) -> str:
        return f"{large[phase]['peak_growth_mib'] / small[phase]['peak_growth_mib']:.2f}"

    print(f"peak RSS growth, {sizes[-1]:.0e} / {sizes[0]:.0e} clips: reading the store {ratio(1)} (target ~1; "
          f"{large[1]['peak_growth_mib']:.1f} / {small[1]['peak_growth_mib']:.1f} MiB); building {ratio(0)}; "
          f"memmap {ratio(2)}; in-memory features {ratio(3)}")
    ratios = [read["read_crops_per_s"] / read["memory_crops_per_s"] for _, read, _, _ in rows.values()]
    print(f"crop throughput, store / in-memory: {min(ratios):.3f} to {max(ratios):.3f}")
    record(f"peak memory reading the store, {sizes[-1]:.0e} clips (baseline {sizes[0]:.0e})",
           large[1]["peak_growth_mib"], "MiB", baseline=small[1]["peak_growth_mib"], baseline_what=f"{sizes[0]:.0e} clips",
           target="flat: ratio <= 1.5", higher_is_better=False, threshold=1.5)
    record(f"peak memory holding features in memory, {sizes[-1]:.0e} clips (the earlier cache)",
           large[3]["peak_growth_mib"], "MiB", baseline=small[3]["peak_growth_mib"], baseline_what=f"{sizes[0]:.0e} clips")
    for clips, (_, read, _, _) in rows.items():
        record(f"random crops read from the store, {clips:.0e} clips", read["read_crops_per_s"], "crops/s",
               baseline=read["memory_crops_per_s"], baseline_what="same crops from memory")


if __name__ == "__main__":
    main()
