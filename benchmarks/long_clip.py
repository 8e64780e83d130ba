"""Long clips: peak memory of `embed_audio` on one long WAV file, streamed against decoded whole.

A 16 kHz mono WAV of each length (`--minutes`, default 20 and 60) is written block by block to a
temporary folder (tones drifting in pitch over noise); a demo-sized CLAP (CNN6 at 4 base
channels, 16 kHz, 10 s windows: the model's cost is not what is measured) embeds it, in a fresh
subprocess per figure:
- streamed: as `embed_audio` embeds a file longer than `audio.STREAMED_CLIP_SECONDS` (its
  windows read as a stream, `audio.stream_windows`);
- whole: the same file decoded whole and cut into windows (`STREAMED_CLIP_SECONDS` set to
  infinity: the path of files shorter than it);
- cache: streamed with a `feature_cache` folder, twice: the first call stores the windows'
  log-mels, the second reads them (the peak over both).
Peak RSS growth is VmHWM at the end minus VmRSS before the embedding, the peak reset (Linux
/proc/self/clear_refs) after a warm-up embedding of a 1 s clip (the process's whole peak RSS,
VmHWM, is printed beside it). Both embeddings of a file are
compared (max abs difference). Targets: the streamed peak of the longest file within 1.2 x that
of the shortest (flat in the clip's length); the whole-file peak grows with it.

    python benchmarks/long_clip.py
    python benchmarks/long_clip.py --minutes 120 --modes streamed whole   # the 2-hour file
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch

from feature_cache import status_kib
from record import record

SAMPLE_RATE = 16000
WRITE_BLOCK_SECONDS = 60


def write_long_wav(path: Path, minutes: float, seed: int = 0) -> None:
    """A 16-bit 16 kHz mono WAV of `minutes`, written a minute at a time."""
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SAMPLE_RATE)
    with soundfile.SoundFile(path, "w", SAMPLE_RATE, 1, subtype="PCM_16") as sound:
        for start in range(0, total, WRITE_BLOCK_SECONDS * SAMPLE_RATE):
            t = np.arange(start, min(start + WRITE_BLOCK_SECONDS * SAMPLE_RATE, total)) / SAMPLE_RATE
            pitch = 300 + 200 * np.sin(2 * np.pi * t / 97)
            sound.write(0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(len(t)))


def demo_model():
    from clapcurate.model.clap import CLAP, AudioConfig, CLAPConfig, TextConfig

    audio = AudioConfig(encoder="cnn6", sample_rate=SAMPLE_RATE, window_size=512, hop_size=160, mel_bins=64,
                        fmin=50, fmax=8000, base_channels=4, clip_seconds=10.0)
    torch.manual_seed(0)
    return CLAP(CLAPConfig(audio=audio, text=TextConfig(), d_proj=64)).eval()


def phase(args) -> dict:
    """One embedding of `args.wav` in this process; its peak memory growth, time and embedding."""
    from clapcurate import audio
    from clapcurate.embed import embed_audio

    if args.phase == "whole":
        audio.STREAMED_CLIP_SECONDS = math.inf
    model = demo_model()
    warm = Path(args.wav).with_name("warm-up.wav")
    soundfile.write(warm, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    manifest = pd.DataFrame({"clip_id": ["warm-up", "long"], "audio_path": [str(warm), args.wav]})
    embed_audio(model, manifest.iloc[:1], num_workers=0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start_kib = status_kib("VmRSS")
    t0 = time.perf_counter()
    cache = Path(args.wav).with_name("cache") if args.phase == "cache" else None
    for _ in range(2 if cache else 1):
        result = embed_audio(model, manifest.iloc[1:], batch_size=32, num_workers=0, feature_cache=cache)
    seconds = time.perf_counter() - t0
    assert result.ids == ["long"], result.skipped
    return {"peak_growth_mib": (status_kib("VmHWM") - start_kib) / 1024, "peak_mib": status_kib("VmHWM") / 1024,
            "seconds": seconds,
            "embedding": result.embeddings[0].tolist()}


def run_phase(mode: str, wav: Path) -> dict:
    command = [sys.executable, __file__, "--phase", mode, "--wav", str(wav)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[20, 60], help="lengths of the files")
    parser.add_argument("--modes", nargs="+", choices=["streamed", "whole", "cache"],
                        default=["streamed", "whole"])
    parser.add_argument("--folder", help="where the WAV files are written (default: a temporary folder)")
    parser.add_argument("--phase", choices=["streamed", "whole", "cache"], help=argparse.SUPPRESS)
    parser.add_argument("--wav", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return

    root = Path(tempfile.mkdtemp(prefix="long-clip-bench-", dir=args.folder))
    rows = {}
    print(f"{'minutes':>7} {'file MiB':>8} | "
          + " | ".join(f"{m + ' MiB':>12} {'(VmHWM)':>8} {m + ' s':>10}" for m in args.modes)
          + " | max |difference| of the first and last mode's embeddings")
    try:
        for minutes in args.minutes:
            wav = root / f"{minutes:g}min.wav"
            write_long_wav(wav, minutes)
            rows[minutes] = {mode: run_phase(mode, wav) for mode in args.modes}
            embeddings = [np.array(r["embedding"]) for r in rows[minutes].values()]
            difference = float(np.abs(embeddings[0] - embeddings[-1]).max()) if len(embeddings) > 1 else math.nan
            print(f"{minutes:>7g} {wav.stat().st_size / 2**20:>8.0f} | "
                  + " | ".join(f"{r['peak_growth_mib']:>12.1f} {r['peak_mib']:>8.0f} {r['seconds']:>10.1f}" for r in rows[minutes].values())
                  + f" | {difference:.3g}", flush=True)
            wav.unlink()
            shutil.rmtree(root / "cache", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    short, long = min(rows), max(rows)
    for mode in args.modes:
        if short != long:
            ratio = rows[long][mode]["peak_growth_mib"] / rows[short][mode]["peak_growth_mib"]
            print(f"{mode}: peak RSS growth {long:g} / {short:g} min: {ratio:.2f}")
    if short != long and "streamed" in args.modes:
        record(f"peak memory embedding a {long:g}-minute clip, streamed (baseline {short:g} minutes)",
               rows[long]["streamed"]["peak_growth_mib"], "MiB", baseline=rows[short]["streamed"]["peak_growth_mib"],
               baseline_what=f"{short:g}-minute clip", target="flat: ratio <= 1.2", higher_is_better=False,
               threshold=1.2)
    if "whole" in args.modes and "streamed" in args.modes:
        record(f"peak memory embedding a {long:g}-minute clip, streamed (baseline decoded whole)",
               rows[long]["streamed"]["peak_growth_mib"], "MiB", baseline=rows[long]["whole"]["peak_growth_mib"],
               baseline_what="the same clip decoded whole", higher_is_better=False)


if __name__ == "__main__":
    main()
