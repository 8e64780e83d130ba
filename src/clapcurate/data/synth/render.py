"""Render a `ClipPlan` to audio and write it (16-bit PCM WAV), or write the planned fault."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .concepts import CONCEPTS_BY_NAME, NOISE_BACKGROUNDS
from .plans import ClipPlan
from .sounds import SAMPLE_RATE, coloured_noise, normalise_rms, render_event, reverberate


@dataclass(frozen=True)
class Mixing:
    """How events sit in a clip: their level over the background (SNR, dB), the room
    (RT60 s, wet share) and whether events may overlap or follow each other."""

    snr_db: tuple
    rt60: tuple
    wet: tuple
    overlap: bool


MIXINGS = {
    "studio": Mixing((6.0, 20.0), (0.05, 0.3), (0.0, 0.2), False),  # caption sets: clean, one after another
    "wild": Mixing((0.0, 15.0), (0.15, 0.8), (0.1, 0.5), True),  # AudioSet-like
    "foreground": Mixing((3.0, 18.0), (0.1, 0.8), (0.1, 0.5), True),  # ESC-50, UrbanSound8K salience 1
    "background": Mixing((-6.0, 3.0), (0.2, 1.0), (0.2, 0.6), True),  # UrbanSound8K salience 2
    "scene": Mixing((-3.0, 8.0), (0.2, 1.0), (0.2, 0.5), True),  # TUT scenes
}
TRUNCATED_BYTES = 40  # a WAV cut inside its header: no data chunk left


def concept_layers(concept_name: str, variant_name: str) -> list:
    concept = CONCEPTS_BY_NAME[concept_name]
    return concept.variant(variant_name).layer_params(concept)


def render_background(backgrounds: tuple, n: int, rng: np.random.Generator) -> np.ndarray:
    """Background textures stretched over the whole clip, mixed by their gains, RMS 0.1, shape [n]."""
    mix = np.zeros(n)
    for name, variant_or_colour, gain_db in backgrounds:
        if name == "noise":
            texture = 0.1 * coloured_noise(n, 30.0, 7500.0, NOISE_BACKGROUNDS[variant_or_colour][0], rng)
        else:
            whole_clip = {"dur": n / SAMPLE_RATE, "count": 1, "delay": 0.0}
            layers = [(family, {**params, **whole_clip}) for family, params in concept_layers(name, variant_or_colour)]
            rendered = render_event(layers, n, rng)
            texture = np.pad(rendered, (0, n - len(rendered)))
        mix += texture * 10.0 ** (gain_db / 20.0)
    return normalise_rms(mix)


def render_clip(plan: ClipPlan) -> np.ndarray:
    """The clip's waveform, float32 [n], peak between -18 and -1 dBFS (zeros for a silent fault)."""
    rng = np.random.default_rng(plan.seed)
    n = int(round(plan.seconds * SAMPLE_RATE))
    if plan.fault == "silent":
        return np.zeros(n, dtype=np.float32)
    mixing = MIXINGS[plan.mixing]
    mix = render_background(plan.backgrounds, n, rng)
    slot = n // max(len(plan.events), 1)
    for index, (concept_name, variant_name) in enumerate(plan.events):
        event = render_event(concept_layers(concept_name, variant_name), n if mixing.overlap else slot, rng)
        if mixing.overlap:
            start = int(rng.integers(0, n - len(event) + 1))
        else:
            start = index * slot + int(rng.integers(0, slot - len(event) + 1))
        mix[start:start + len(event)] += event * 10.0 ** (rng.uniform(*mixing.snr_db) / 20.0)
    mix = reverberate(mix, rng.uniform(*mixing.rt60), rng.uniform(*mixing.wet), rng)
    peak = 10.0 ** (rng.uniform(-18.0, -1.0) / 20.0)
    return (mix * (peak / (np.max(np.abs(mix)) + 1e-12))).astype(np.float32)


def wav_bytes(wave: np.ndarray) -> bytes:
    """A mono 16-bit PCM WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def float_wav_bytes(wave: np.ndarray) -> bytes:
    """A mono 32-bit float WAV file, written by hand: libsndfile adds a PEAK chunk holding the
    time of writing, which would break byte-identical output."""
    data = wave.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, 4 * SAMPLE_RATE, 4, 32)  # IEEE float, mono
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def clip_bytes(plan: ClipPlan) -> bytes:
    """The file content of a plan: a WAV, or the planned corruption of one."""
    if plan.fault == "zero_length":
        return b""
    if plan.fault == "not_audio":
        return b"<html><body>404 Not Found: this video is unavailable</body></html>\n"
    wave = render_clip(plan)
    if plan.fault == "nan":
        wave[:: max(len(wave) // 16, 1)] = np.nan
        return float_wav_bytes(wave)
    if plan.fault == "truncated":
        return wav_bytes(wave)[:TRUNCATED_BYTES]
    return wav_bytes(wave)


def write_clip(task: tuple) -> str:
    """Write one planned clip below ``root``; ``task = (root, plan)``; returns the plan's path."""
    root, plan = task
    path = Path(root) / plan.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(clip_bytes(plan))
    return plan.path
