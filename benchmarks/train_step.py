"""Training-step throughput on CPU: a full Lightning step (data loading included) against a bare
forward + backward + Adam step of the same model on tensors already in memory.

Prints samples/s of both, their ratio (target >= 0.9) and the run's peak memory (RSS).
The model is the one of a study config (default: the demo's, `configs/demo.yaml`). Generates its
own WAV set in a temporary folder. Usage:
    python benchmarks/train_step.py [--config configs/demo.yaml] [--clips 256] [--batch-size 128] [--steps 30]
    python benchmarks/train_step.py --htsat tiny --clips 64 --batch-size 8 --steps 6 --warmup 2
`--htsat tiny|base` swaps the config's audio encoder for HTS-AT of that published width (64 mel bins).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch
from lightning.pytorch import Callback

from clapcurate.device import hardware_settings, resolve_device
from clapcurate.losses import contrastive_loss
from clapcurate.model.clap import CLAP, CLAPConfig
from clapcurate.model.htsat import HTSATConfig
from clapcurate.study import load_study_config
from clapcurate.train import (
    AugmentConfig, OptimConfig, TeacherConfig, TeacherDataConfig, TextTrainConfig, TrainerConfig, fit_teacher,
)

from record import record


def study_model_config(path: str) -> CLAPConfig:
    """The model of a study config (the demo's: a narrow CNN on 16 kHz clips, the offline MiniLM)."""
    return load_study_config(path).model


def write_wav_set(folder: Path, n_clips: int, sample_rate: int, seconds: tuple[float, float] = (0.6, 1.6)) -> Path:
    """`n_clips` noisy tones of `seconds` (0.6-1.6 s) and their captions; returns the manifest path."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n_clips):
        n_samples = int(sample_rate * rng.uniform(*seconds))
        time_axis = np.arange(n_samples) / sample_rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * time_axis) + 0.05 * rng.standard_normal(n_samples)
        path = folder / f"clip{k:04d}.wav"
        soundfile.write(path, wave.astype(np.float32), sample_rate)
        rows.append({"id": f"pair{k}", "audio_path": str(path), "caption": f"a tone number {k % 50} with noise"})
    manifest = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def synchronize(device) -> None:
    """Wait for the GPU's queued work (timings on a GPU end when the work does)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.started = self.ended = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:
            synchronize(pl_module.device)
            self.ended = time.perf_counter()
            self.steps = trainer.global_step - self.warmup


def full_step_rate(manifest: Path, out_dir: Path, args) -> float:
    """Samples/s of `fit_teacher` on `args.device` (its GPU path at its defaults)."""
    config = TeacherConfig(
        model=args.model,
        data=TeacherDataConfig(train_manifest=str(manifest), val_fraction=0.0, batch_size=args.batch_size,
                               num_workers=args.num_workers),
        optim=OptimConfig(lr=1e-4), augment=AugmentConfig(),
        trainer=TrainerConfig(max_steps=args.warmup + args.steps, max_epochs=None, progress_bar=False,
                              log_every_n_steps=10, device=args.device),
        text=TextTrainConfig(freeze_text_encoder=True, cache_text_features=True),
        out_dir=str(out_dir),
    )
    timer = StepTimer(args.warmup)
    fit_teacher(config, callbacks=[timer])
    return timer.steps * args.batch_size / (timer.ended - timer.started)


def bare_step_rate(args) -> float:
    """Samples/s of forward + backward + Adam on batches already on `args.device`, with the GPU
    path a fit there gets (`hardware_settings`: bf16 autocast and channels_last on CUDA)."""
    device = resolve_device(args.device)
    hardware = hardware_settings(device)
    torch.manual_seed(0)
    model = CLAP(args.model).train().to(device)
    if hardware.channels_last:
        model.to(memory_format=torch.channels_last)
    model.text_encoder.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    n_frames = model.clip_samples // model.config.audio.hop_size + 1
    logmel = torch.randn(args.batch_size, 1, n_frames, model.config.audio.mel_bins, device=device)  # [B, 1, frames, mel]
    text_features = torch.randn(args.batch_size, model.text_encoder.out_dim, device=device)  # [B, hidden]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=hardware.autocast):
            loss = contrastive_loss(model.encode_logmel(logmel), model.encode_text_features(text_features),
                                    model.logit_scale_exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--config", default="configs/demo.yaml", help="study config whose model is measured")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--htsat", choices=["tiny", "base"], help="measure HTS-AT of this width instead")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (default), cuda, auto")
    args = parser.parse_args()
    args.model = study_model_config(args.config)
    if args.htsat:
        audio = dataclasses.replace(args.model.audio, encoder="htsat", mel_bins=64, htsat=HTSATConfig.named(args.htsat))
        args.model = dataclasses.replace(args.model, audio=audio)
    bare_before = bare_step_rate(args)  # measured on both sides of the full run: the cores are shared
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        manifest = write_wav_set(tmp / "audio", args.clips, args.model.audio.sample_rate)
        full = full_step_rate(manifest, tmp / "run", args)
    bare = max(bare_before, bare_step_rate(args))
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"audio encoder {args.model.audio.encoder}{' ' + args.htsat if args.htsat else ''}, "
          f"torch threads: {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} timed steps, "
          f"device {resolve_device(args.device)}")
    print(f"full training step (data loading included): {full:8.1f} samples/s")
    print(f"bare forward+backward+Adam on tensors:      {bare:8.1f} samples/s")
    print(f"ratio full / bare: {full / bare:.3f} (target >= 0.9)")
    print(f"peak memory (RSS): {peak_rss_mib:.0f} MiB")
    record(f"training step of {args.config}'s model{' (HTS-AT ' + args.htsat + ')' if args.htsat else ''}, "
           f"batch {args.batch_size}, data included", full, "samples/s", baseline=bare,
           baseline_what="bare forward+backward+Adam on tensors", target=">= 0.9", threshold=0.9)


if __name__ == "__main__":
    main()
