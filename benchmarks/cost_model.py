"""The paper-scale cost model of docs/scaling.md, from figures measured here.

Measured in this process (one CPU thread, so the figures are per core):
- decoding: 10 s clips at 44.1 kHz, stereo, as OGG Vorbis, MP3, FLAC and WAV, read by
  `clapcurate.audio.load_audio` (soundfile + soxr) at the paper's 44.1 kHz: clips/s per core and
  bytes per clip;
- the log-mel front-end of the paper config (1024-point STFT, hop 320, 64 mel bins) on 10 s:
  clips/s per core;
- FLOPs counted by `torch.utils.flop_counter` for the paper's CNN14 (10 s embedding forward; a
  5 s crop forward + backward in training), BERT-base (a 32-token caption, forward; forward +
  backward) and the projection heads.

The model then costs the paper's scale (1.9 M 10 s pool clips, ~128 k captions, d = 1024,
students of 20,000 steps at batch 128 with online teacher targets) on 1 and 8 GPUs, given the
GPU's sustained rate for each kind of work. Until `benchmarks/gpu.py` has measured them, the
GPU rates are assumptions given on the command line (defaults: 989 TFLOP/s dense bf16 of an H200
at 35% utilisation for convolutions and transformers, 70% for the search's GEMM); they are
printed as assumptions.

    python benchmarks/cost_model.py
    python benchmarks/cost_model.py --conv-tflops 250 --gemm-tflops 600 --cores-per-gpu 12
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.flop_counter import FlopCounterMode

from clapcurate.audio import load_audio
from clapcurate.model.clap import AudioConfig

RATE = 44100
POOL_CLIPS = 1.9e6
CAPTIONS = 128e3
DIM = 1024
STUDENT_STEPS = 20000
BATCH = 128
FORMATS = {"OGG Vorbis": ("ogg", "OGG", "VORBIS"), "MP3": ("mp3", "MP3", "MPEG_LAYER_III"),
           "FLAC": ("flac", "FLAC", "PCM_16"), "WAV": ("wav", "WAV", "PCM_16")}


def paper_audio() -> AudioConfig:
    return AudioConfig(encoder="cnn14", sample_rate=RATE, window_size=1024, hop_size=320, mel_bins=64,
                       fmin=50, fmax=14000, base_channels=64, clip_seconds=5.0)


def test_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo sound with the structure of real recordings (tones, bursts, a noise floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
                for f in rng.uniform(100, 4000, size=6)) / 6
    bursts = rng.normal(size=t.size) * (np.sin(2 * np.pi * 1.5 * t) > 0.7)
    mono = 0.3 * tones + 0.1 * bursts + 0.01 * rng.normal(size=t.size)
    return np.stack([mono, np.roll(mono, 37)], axis=1).astype(np.float32)


def decode_rates(folder: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """{format: (clips/s per core, bytes per clip)} for 10 s stereo clips at 44.1 kHz."""
    signal = test_signal(10.0)
    out = {}
    for name, (suffix, fmt, subtype) in FORMATS.items():
        path = folder / f"clip.{suffix}"
        try:
            soundfile.write(str(path), signal, RATE, format=fmt, subtype=subtype)
        except (soundfile.LibsndfileError, TypeError, ValueError):
            continue  # this libsndfile cannot write the format
        load_audio(path, RATE)
        start = time.perf_counter()
        for _ in range(repeats):
            load_audio(path, RATE)
        out[name] = (repeats / (time.perf_counter() - start), path.stat().st_size)
    return out


def logmel_rate(repeats: int) -> float:
    logmel = paper_audio().build_encoder().logmel
    wave = torch.from_numpy(test_signal(10.0)[:, 0]).unsqueeze(0)
    with torch.no_grad():
        logmel(wave)
        start = time.perf_counter()
        for _ in range(repeats):
            logmel(wave)
    return repeats / (time.perf_counter() - start)


def counted_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def model_flops() -> dict[str, float]:
    """FLOPs per item of each piece of work (one clip or caption)."""
    from transformers import BertConfig, BertModel

    encoder = paper_audio().build_encoder()
    bert = BertModel(BertConfig())
    tokens = torch.randint(1000, 2000, (1, 32))

    def embed_10s():
        with torch.no_grad():
            encoder(torch.zeros(1, 10 * RATE))

    def train_5s():
        encoder(torch.zeros(1, 5 * RATE)).sum().backward()

    def text_forward():
        with torch.no_grad():
            bert(input_ids=tokens)

    def text_train():
        bert(input_ids=tokens).last_hidden_state.sum().backward()

    return {"cnn14 embed 10 s": counted_flops(embed_10s), "cnn14 train 5 s": counted_flops(train_5s),
            "bert forward 32 tokens": counted_flops(text_forward), "bert train 32 tokens": counted_flops(text_train)}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--conv-tflops", type=float, default=989 * 0.35,
                        help="sustained TFLOP/s of one GPU on CNN14/BERT work (assumption until gpu.py measures it)")
    parser.add_argument("--gemm-tflops", type=float, default=989 * 0.70,
                        help="sustained TFLOP/s of one GPU on the search's bf16 GEMM (assumption)")
    parser.add_argument("--cores-per-gpu", type=int, default=16, help="CPU cores feeding each GPU (decoding)")
    parser.add_argument("--disk-gbps", type=float, default=2.0, help="read bandwidth of the pool's disk, GB/s")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        decode = decode_rates(Path(tmp), args.repeats)
    mel_rate = logmel_rate(args.repeats)
    flops = model_flops()

    print("## Measured (one CPU core)")
    for name, (rate, size) in decode.items():
        print(f"- decode {name}: {rate:.1f} clips/s per core ({rate * 10:.0f}x real time), {size / 1e3:.0f} kB per 10 s clip")
    print(f"- log-mel front-end, 10 s at 44.1 kHz: {mel_rate:.1f} clips/s per core")
    for name, value in flops.items():
        print(f"- {name}: {value / 1e9:.1f} GFLOP")

    conv, gemm = args.conv_tflops * 1e12, args.gemm_tflops * 1e12
    slowest = min(decode, key=lambda k: decode[k][0])
    decode_rate = decode.get("OGG Vorbis", decode[slowest])[0]
    pool_bytes = POOL_CLIPS * decode.get("OGG Vorbis", decode[slowest])[1]
    embed_flops = POOL_CLIPS * flops["cnn14 embed 10 s"]
    text_flops = CAPTIONS * flops["bert forward 32 tokens"]
    search_flops = 2 * POOL_CLIPS * CAPTIONS * DIM
    # a student step: student audio + text forward/backward, teacher audio + text forward (online targets)
    step_flops = BATCH * (flops["cnn14 train 5 s"] + flops["bert train 32 tokens"]
                          + flops["cnn14 embed 10 s"] / 2 + flops["bert forward 32 tokens"])
    print(f"\n## Paper scale on 1 and 8 GPUs (assumed GPU rates: {args.conv_tflops:.0f} TFLOP/s on networks, "
          f"{args.gemm_tflops:.0f} TFLOP/s on the search GEMM; {args.cores_per_gpu} CPU cores per GPU; "
          f"disk {args.disk_gbps} GB/s)")
    print("| work | amount | 1 GPU | 8 GPUs |")
    print("|---|---|---|---|")
    rows = [
        ("decode the pool (OGG Vorbis, CPU)", f"{POOL_CLIPS:.2g} clips", POOL_CLIPS / (decode_rate * args.cores_per_gpu)),
        ("log-mel front-end, were it on the CPU (it runs on the GPU)", f"{POOL_CLIPS:.2g} clips",
         POOL_CLIPS / (mel_rate * args.cores_per_gpu)),
        ("read the pool from disk", f"{pool_bytes / 1e9:.0f} GB", pool_bytes / (args.disk_gbps * 1e9)),
        ("CNN14 embedding of the pool, front-end included (GPU)", f"{embed_flops / 1e15:.0f} PFLOP", embed_flops / conv),
        ("BERT embedding of the captions (GPU)", f"{text_flops / 1e15:.2f} PFLOP", text_flops / conv),
        ("threshold search, pool x captions (GPU)", f"{search_flops / 1e15:.2f} PFLOP", search_flops / gemm),
        ("one student, 20k steps at batch 128 (GPU)", f"{STUDENT_STEPS * step_flops / 1e15:.0f} PFLOP",
         STUDENT_STEPS * step_flops / conv),
    ]
    for work, amount, seconds in rows:
        shared = "disk" in work  # one disk serves every GPU of the node
        print(f"| {work} | {amount} | {hours(seconds)} | {hours(seconds if shared else seconds / 8)} |")
    emb_bytes = POOL_CLIPS * DIM * 2
    print(f"\nMemory: pool embeddings {emb_bytes / 1e9:.1f} GB as float16 on disk (memory-mapped; the search "
          f"holds one block), caption embeddings {CAPTIONS * DIM * 2 / 1e9:.2f} GB; a log-mel cache of the pool "
          f"would take {POOL_CLIPS * (10 * RATE // 320 + 1) * 64 * 2 / 1e12:.2f} TB, so curation decodes the pool "
          "once and keeps only embeddings.")


if __name__ == "__main__":
    main()
