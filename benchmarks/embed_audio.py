"""Audio embedding throughput: `embed_audio` over WAV files on disk against the model's bare
forward on the same batches already in memory.

A few hundred 1-2 s WAV files at 16 kHz are written to a temporary folder; a demo-sized CLAP
(CNN at small base_channels, 16 kHz, 1 s windows) embeds them. The baseline packs the same
windows into the same batches beforehand and times `encode_audio` alone, so the ratio shows
what decoding, windowing, the DataLoader and averaging cost. Both are timed `--repeats` times,
alternating, and the fastest run of each counts (the machine's cores may be shared).
Target: ratio >= 0.9.

    python benchmarks/embed_audio.py
    python benchmarks/embed_audio.py --clips 100 --encoder cnn6 --num-workers 0
    python benchmarks/embed_audio.py --encoder htsat --clips 48 --batch-size 16   # HTS-AT tiny

HTS-AT (`--encoder htsat`) is the published tiny width (LAION-CLAP, MS CLAP 2023): whatever the
clip length, it stretches every window to 1024 frames of 64 mel bins, so its cost per window is
that of a 10 s LAION-CLAP clip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch

from clapcurate.audio import inference_windows, load_audio
from clapcurate.embed import _inference_context, embed_audio, inference_settings
from clapcurate.model.clap import CLAP, AudioConfig, CLAPConfig, TextConfig
from clapcurate.model.htsat import HTSATConfig
from record import record
from train_step import synchronize

SAMPLE_RATE = 16000


def write_clips(folder: Path, n_clips: int, seed: int = 0) -> pd.DataFrame:
    """`n_clips` WAV files of 1-2 s noisy tones; their manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_clips):
        seconds = rng.uniform(1.0, 2.0)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"clip{i:04d}.wav"
        soundfile.write(path, wave.astype(np.float32), SAMPLE_RATE)
        rows.append((f"clip{i}", f"clip{i}", str(path)))
    return pd.DataFrame(rows, columns=["id", "clip_id", "audio_path"])


def demo_model(encoder: str, base_channels: int) -> CLAP:
    audio = AudioConfig(encoder=encoder, sample_rate=SAMPLE_RATE, window_size=512, hop_size=160, mel_bins=64,
                        fmin=50, fmax=8000, base_channels=base_channels, clip_seconds=1.0,
                        htsat=HTSATConfig.named("tiny"))
    torch.manual_seed(0)
    return CLAP(CLAPConfig(audio=audio, text=TextConfig(), d_proj=256)).eval()


def windows_in_memory(model: CLAP, manifest: pd.DataFrame, batch_size: int) -> list[torch.Tensor]:
    """The clips' windows packed into batches as `embed_audio` packs them, on the model's device."""
    windows = np.concatenate([inference_windows(load_audio(path, model.sample_rate), model.clip_samples,
                                                short_clip_fill=model.config.audio.short_clip_fill)
                              for path in manifest["audio_path"]])  # [W, clip_samples]
    return [torch.from_numpy(windows[i:i + batch_size]).to(model.device) for i in range(0, len(windows), batch_size)]


def bare_forward_seconds(model: CLAP, batches: list[torch.Tensor]) -> float:
    """Time of `encode_audio` alone over batches already in memory, with the autocast
    `embed_audio` uses on the model's device."""
    synchronize(model.device)
    start = time.perf_counter()
    with _inference_context(model, inference_settings(model).autocast):
        for batch in batches:
            model.encode_audio(batch, normalize=True)
    synchronize(model.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--encoder", choices=["cnn6", "cnn10", "cnn14", "htsat"], default="cnn14")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = demo_model(args.encoder, args.base_channels)
    with tempfile.TemporaryDirectory() as folder:
        manifest = write_clips(Path(folder), args.clips)
        batches = windows_in_memory(model, manifest, args.batch_size)
        embed_audio(model, manifest.iloc[: args.batch_size], args.batch_size, args.num_workers)  # warm-up
        embed_times, bare_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = embed_audio(model, manifest, args.batch_size, args.num_workers)
            embed_times.append(time.perf_counter() - start)
            bare_times.append(bare_forward_seconds(model, batches))
        embed_seconds, bare_seconds = min(embed_times), min(bare_times)

    embed_rate, bare_rate = len(result.ids) / embed_seconds, args.clips / bare_seconds
    width = "tiny" if args.encoder == "htsat" else f"base_channels {args.base_channels}"
    print(f"embed_audio: {args.clips} WAV clips of 1-2 s at 16 kHz, {args.encoder} {width}, batch {args.batch_size}, {args.num_workers} DataLoader worker(s), "
          f"torch threads {torch.get_num_threads()}")
    print(f"  embed_audio from disk    {embed_seconds:7.2f} s  {embed_rate:8.1f} clips/s")
    print(f"  bare forward in memory   {bare_seconds:7.2f} s  {bare_rate:8.1f} clips/s")
    print(f"  ratio                    {embed_rate / bare_rate:7.3f}  (target >= 0.9)")
    record(f"embed_audio of {args.clips} WAV files, {args.encoder} {width}, batch {args.batch_size}", embed_rate,
           "clips/s", baseline=bare_rate, baseline_what="bare forward, same batches in memory", target=">= 0.9",
           threshold=0.9)


if __name__ == "__main__":
    main()
