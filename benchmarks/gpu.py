"""The GPU path measured: each stage's figure against a baseline measured in the same process.

(a) training: `fit_teacher` samples/s at the paper's model and batch (CNN14 at 64 channels,
    44.1 kHz, 5 s crops, batch 128; frozen text encoder with cached features) against a bare
    forward + backward + Adam loop on batches of the same shape already on the GPU, both with the
    GPU path a fit gets there (bf16 autocast, channels_last);
(b) embedding: `embed_audio` clips/s over WAV files on disk (4-5 s at 44.1 kHz, one window each)
    against the bare forward of the same windows already on the GPU (bf16 autocast both);
(c) curation search: `threshold_search` over float16 host embeddings (as curation loads them)
    in GFLOP/s against the device's own float32 and bf16 GEMM rates on the same shapes;
(d) a tiny study (`stage_devices.TINY_STUDY`) run on the device, wall time against the same
    study on the CPU, and which device each stage ran on.
The figures and ratios are printed and appended as a dated section to `benchmarks/RESULTS.md`
(a section of the same title is replaced; the other sections are kept).

    python benchmarks/gpu.py                  # one CUDA GPU, a few minutes (at most 10)
    python benchmarks/gpu.py --smoke          # everything on the CPU at tiny sizes (seconds)
    python benchmarks/gpu.py --smoke --results /tmp/RESULTS.md

The text encoder is the bundled MiniLM (the GPU machine needs no download; `--smoke`: a tiny
random BERT); its features are cached before training, so the text tower's size does not enter
the training figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clapcurate.data.readers import read_data
from clapcurate.device import resolve_device
from clapcurate.embed import embed_audio
from clapcurate.errors import ClapcurateError
from clapcurate.model.clap import CLAP, TextConfig
from clapcurate.model.text_encoders import write_tiny_text_encoder
from clapcurate.search import threshold_search
from clapcurate.study import run_study
from curate_search import bare_matmul, unit_rows
from embed_audio import bare_forward_seconds, windows_in_memory
from stage_devices import StageDevices, tiny_study
from record import record
from train_step import bare_step_rate, full_step_rate, study_model_config, synchronize, write_wav_set

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "gpu": dict(text_encoder="minilm", base_channels=None, clip_seconds=None, batch_size=128, train_clips=1024, warmup=5, steps=60,
                embed_clips=2048, embed_batch=128, repeats=2, queries=500_000, keys=100_000, dim=1024,
                block_size=16384),
    "smoke": dict(base_channels=4, clip_seconds=1.0, batch_size=8, train_clips=16, warmup=1, steps=2,
                  embed_clips=8, embed_batch=4, repeats=1, queries=2000, keys=500, dim=64, block_size=512),
}


@dataclasses.dataclass
class Figure:
    """One measured row: what, the figure, the baseline of the same run, their ratio."""

    what: str
    figure: float
    unit: str
    baseline: float
    baseline_what: str
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline

    def row(self) -> str:
        return (f"| {self.what} | {self.figure:,.1f} {self.unit} | {self.baseline:,.1f} {self.unit} "
                f"({self.baseline_what}) | {self.ratio:.3f} | {self.target} |")


def paper_model(sizes: dict):
    """configs/paper.yaml's model with `sizes["text_encoder"]`; smaller CNN and clips with `--smoke`."""
    model = study_model_config(str(ROOT / "configs" / "paper.yaml"))
    audio = model.audio
    if sizes["base_channels"]:
        audio = dataclasses.replace(audio, base_channels=sizes["base_channels"], clip_seconds=sizes["clip_seconds"])
    return dataclasses.replace(model, audio=audio, text=TextConfig(name_or_path=sizes["text_encoder"], pooling="mean",
                                                                   max_length=32))


def measure_training(device: str, sizes: dict, folder: Path) -> Figure:
    args = argparse.Namespace(model=paper_model(sizes), batch_size=sizes["batch_size"], warmup=sizes["warmup"],
                              steps=sizes["steps"], num_workers="auto", device=device)
    manifest = write_wav_set(folder / "train_audio", sizes["train_clips"], args.model.audio.sample_rate)
    bare_before = bare_step_rate(args)
    full = full_step_rate(manifest, folder / "run", args)
    bare = max(bare_before, bare_step_rate(args))
    audio = args.model.audio
    return Figure(f"(a) training step, {audio.encoder} x{audio.base_channels}, {audio.sample_rate} Hz, "
                  f"{audio.clip_seconds:g} s crops, batch {args.batch_size} (full Lightning step, data included)",
                  full, "samples/s", bare, "bare forward+backward+Adam, same shapes on the device", ">= 0.9")


def measure_embedding(device: str, sizes: dict, folder: Path) -> Figure:
    config = paper_model(sizes)
    torch.manual_seed(0)
    model = CLAP(config).eval().to(resolve_device(device))
    seconds = config.audio.clip_seconds
    path = write_wav_set(folder / "embed_audio", sizes["embed_clips"], config.audio.sample_rate,
                         seconds=(0.8 * seconds, seconds))
    manifest = read_data(str(path))
    batches = windows_in_memory(model, manifest, sizes["embed_batch"])
    embed_audio(model, manifest.iloc[: sizes["embed_batch"]], sizes["embed_batch"])  # warm-up
    embed_times, bare_times = [], []
    for _ in range(sizes["repeats"]):
        start = time.perf_counter()
        result = embed_audio(model, manifest, sizes["embed_batch"])
        synchronize(model.device)
        embed_times.append(time.perf_counter() - start)
        bare_times.append(bare_forward_seconds(model, batches))
    clips = len(manifest)
    assert len(result.ids) == clips, result.skipped
    return Figure(f"(b) `embed_audio` over {clips} WAV files of {0.8 * seconds:g}-{seconds:g} s at "
                  f"{config.audio.sample_rate} Hz, {config.audio.encoder} x{config.audio.base_channels}, "
                  f"batch {sizes['embed_batch']}", clips / min(embed_times), "clips/s", clips / min(bare_times),
                  "bare forward, same windows on the device", ">= 0.9")


def measure_search(device: str, sizes: dict) -> list[Figure]:
    device = resolve_device(device)
    n_queries, n_keys, dim, block = sizes["queries"], sizes["keys"], sizes["dim"], sizes["block_size"]
    queries = unit_rows(n_queries, dim, np.random.default_rng(0)).astype(np.float16)  # as curation loads embeddings
    keys = unit_rows(n_keys, dim, np.random.default_rng(1)).astype(np.float16)
    sigma = 5.0 / np.sqrt(dim)
    threshold_search(queries[:block], keys, sigma, block, device=device)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    pairs = len(threshold_search(queries, keys, sigma, block, device=device).query_idx)
    synchronize(device)
    search_seconds = time.perf_counter() - start
    flops = 2.0 * n_queries * n_keys * dim
    figures = []
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bf16")):
        on_device = [torch.from_numpy(rows).to(device, dtype) for rows in (queries, keys)]
        bare_matmul(on_device[0][:block], on_device[1], block)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        bare_matmul(*on_device, block)
        synchronize(device)
        gemm_seconds = time.perf_counter() - start
        del on_device
        figures.append(Figure(f"(c) threshold search {n_queries:,} x {n_keys:,}, d = {dim}, block {block}, float16 "
                              f"host inputs ({pairs} pairs)", flops / search_seconds / 1e9, "GFLOP/s",
                              flops / gemm_seconds / 1e9, f"bare {name} GEMM, same shapes, inputs on the device",
                              ">= 0.7" if name == "float32" else ""))
    return figures


def measure_study(device: str, sizes: dict, folder: Path) -> tuple[Figure, dict[str, set[str]]]:
    """The tiny study on `device`, then on the CPU (the world generated once, outside the timing;
    when the device is the CPU, one run is both)."""
    from clapcurate.data.synth import generate_world

    world = folder / "world"
    generate_world(world, seed=3, scale=0.01)
    seconds, stages = {}, {}
    runs = (("on_device", device),) + ((("on_cpu", "cpu"),) if resolve_device(device).type != "cpu" else ())
    for name, where in runs:
        config = tiny_study(folder, where, sizes["text_encoder"], name=name, world=world)
        with StageDevices() as log:
            start = time.perf_counter()
            run_study(config)
            seconds[name] = time.perf_counter() - start
        stages[name] = log.devices_by_stage()
    cpu_seconds = seconds.get("on_cpu", seconds["on_device"])
    return (Figure(f"(d) tiny study (`stage_devices.TINY_STUDY`, {len(stages['on_device'])} stages) on {device}, "
                   f"{seconds['on_device']:.1f} s", cpu_seconds / seconds["on_device"], "x the CPU's speed", 1.0,
                   f"the same study on the CPU, {cpu_seconds:.1f} s"), stages["on_device"])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch threads)"


def write_results(path: Path, title: str, text: str) -> None:
    """Append the section `## title` to `path`, replacing a section of the same title."""
    existing = path.read_text() if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    kept = pattern.sub("", existing).rstrip("\n")
    path.write_text(f"{kept}\n\n## {title}\n\n{text.strip()}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="everything on the CPU at tiny sizes")
    parser.add_argument("--device", help="default cuda (cpu with --smoke)")
    parser.add_argument("--results", help="the results file to update (default benchmarks/RESULTS.md; "
                                          "with --smoke none unless given)")
    args = parser.parse_args(argv)
    sizes = SIZES["smoke" if args.smoke else "gpu"]
    setting = args.device or ("cpu" if args.smoke else "cuda")
    try:
        device = resolve_device(setting)
    except ClapcurateError as exc:
        print(f"gpu.py: error: {exc}", file=sys.stderr)
        return 2
    results = Path(args.results) if args.results else (None if args.smoke else ROOT / "benchmarks" / "RESULTS.md")
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="clapcurate-gpu-"))
    try:
        if args.smoke:  # a random text encoder that builds in a blink
            sizes = {**sizes, "text_encoder": str(write_tiny_text_encoder(folder / "tiny_text_encoder"))}
        figures = [measure_training(setting, sizes, folder), measure_embedding(setting, sizes, folder),
                   *measure_search(setting, sizes)]
        study, stages = measure_study(setting, sizes, folder)
        figures.append(study)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    every_stage = all(used == {str(device)} for used in stages.values())
    for figure in figures:  # a smoke run's sizes are too small for its ratios to meet or miss a target
        threshold = float(figure.target.lstrip(">= ")) if figure.target.startswith(">=") and not args.smoke else None
        record(f"{figure.what} ({device_name(device)}{', smoke sizes' if args.smoke else ''})", figure.figure,
               figure.unit, baseline=figure.baseline, baseline_what=figure.baseline_what,
               target="" if args.smoke else figure.target, threshold=threshold)
    lines = ["| benchmark | figure | baseline (same run) | ratio | target |", "|---|---|---|---|---|",
             *(figure.row() for figure in figures)]
    kinds = sorted({stage.split("/")[0] for stage in stages})
    lines += ["", f"Every stage of the tiny study ran on {device}: {'yes' if every_stage else 'NO'} "
              f"({len(stages)} stages: {', '.join(kinds)})."]
    lines += [f"- {stage}: {', '.join(sorted(used))}" for stage, used in stages.items() if used != {str(device)}]
    command = f"python benchmarks/gpu.py{' --smoke' if args.smoke else ''}"
    lines += ["", f"Command: `{command}`; torch {torch.__version__}; {time.perf_counter() - started:.0f} s in all."]
    text = "\n".join(lines)
    print(text)
    if results is not None:
        title = (f"{'Smoke run' if args.smoke else 'GPU'}: {device_name(device)}, "
                 f"{datetime.date.today().isoformat()}")
        write_results(results, title, text)
        print(f"written to {results} (section '{title}')")
    return 0 if every_stage else 1


if __name__ == "__main__":
    sys.exit(main())
