"""Procedural sound synthesis for the embedded world (numpy/scipy, vectorised).

A sound event is built from layers of three families:

- ``tone``: a harmonic (or inharmonic) oscillator with a pitch contour, an envelope, optional
  breath noise and amplitude modulation (animal calls, voices, sirens, horns, motors, bells);
- ``noise``: band-limited coloured noise with a slow or fast amplitude modulation (rain, wind,
  waves, fans, flushing, brushing);
- ``clicks``: a train of short noise bursts or struck resonant modes (knocks, steps, ticks,
  typing, shots, hammering, crackle).

An event repeats its unit ``count`` times, ``gap`` seconds apart; every parameter given as a
``(low, high)`` range is drawn anew for each event (frequencies log-uniformly).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.signal import fftconvolve

SAMPLE_RATE = 16000
MIN_UNIT_SAMPLES = 64

LOG_UNIFORM_PARAMS = frozenset({"f0", "lo", "hi", "rate", "mod_rate", "am_rate", "decay"})
INTEGER_PARAMS = frozenset({"count"})
RANGE_FREE_PARAMS = frozenset({"partials", "accents"})  # tuples that are values, not ranges


def draw(value, rng: np.random.Generator, name: str = ""):
    """One value of a parameter: a scalar stays, a ``(low, high)`` range is sampled."""
    if not isinstance(value, tuple) or name in RANGE_FREE_PARAMS:
        return value
    low, high = value
    if name in INTEGER_PARAMS:
        return int(rng.integers(low, high + 1))
    if name in LOG_UNIFORM_PARAMS and low > 0:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def draw_params(params: dict, rng: np.random.Generator) -> dict:
    """Draw every parameter of a layer in sorted key order (deterministic)."""
    return {name: draw(params[name], rng, name) for name in sorted(params)}


def envelope(n: int, attack: float, decay: float, shape: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Amplitude envelope of ``n`` samples.

    ``ad``: linear attack then exponential decay with time constant ``decay``;
    ``sustain``: linear attack, hold, linear release of length ``decay``;
    ``swell``: a raised-cosine rise and fall over the whole unit.
    """
    t = np.arange(n) / sample_rate
    attack_ramp = np.minimum(1.0, t / max(attack, 1e-4))
    if shape == "ad":
        return attack_ramp * np.exp(-np.maximum(t - attack, 0.0) / max(decay, 1e-4))
    if shape == "swell":
        return np.sin(np.pi * np.arange(n) / max(n - 1, 1)) ** 2
    release_ramp = np.minimum(1.0, (n / sample_rate - t) / max(decay, 1e-4))
    return attack_ramp * np.clip(release_ramp, 0.0, 1.0)


def pitch_contour(n: int, f0: float, contour: str, depth: float, mod_rate: float,
                  rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Instantaneous fundamental frequency in Hz, shape [n]."""
    t = np.arange(n) / sample_rate
    progress = np.arange(n) / max(n - 1, 1)
    if contour == "rise":
        shape = progress
    elif contour == "fall":
        shape = -progress
    elif contour == "arch":
        shape = np.sin(np.pi * progress)
    elif contour in ("wail", "yelp", "vibrato"):
        shape = np.sin(2 * np.pi * mod_rate * t)
    elif contour == "trill":
        shape = np.sign(np.sin(2 * np.pi * mod_rate * t))
    elif contour == "melody":
        notes = rng.choice([0, 2, 4, 5, 7, 9, 12], size=int(np.ceil(t[-1] * mod_rate)) + 1)
        shape = 2.0 ** (notes[(t * mod_rate).astype(int)] / 12.0) - 1.0
    else:
        shape = np.zeros(n)
    return f0 * np.maximum(1.0 + depth * shape, 0.05)


def band_mask(n_fft: int, low: float, high: float, tilt: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Magnitude response of a soft band-pass with spectral tilt ``f^(-tilt/2)``, shape [n_fft//2+1]."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    freqs[0] = freqs[1]
    rolloff = 1.0 / (1.0 + (low / freqs) ** 4) / (1.0 + (freqs / high) ** 4)
    return rolloff * freqs ** (-tilt / 2.0)


def coloured_noise(n: int, low: float, high: float, tilt: float, rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited noise of ``n`` samples, unit RMS, coloured by spectral shaping."""
    n_fft = scipy.fft.next_fast_len(n, real=True)
    white = rng.standard_normal(n_fft, dtype=np.float32)
    spectrum = scipy.fft.rfft(white) * band_mask(n_fft, low, high, tilt, sample_rate).astype(np.float32)
    noise = scipy.fft.irfft(spectrum, n_fft)[:n]
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def modulation(n: int, rate: float, depth: float, rng: np.random.Generator,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A raised sine amplitude modulation: 1 - depth * (1 + sin) / 2, shape [n]."""
    if depth <= 0:
        return np.ones(n)
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n) / sample_rate
    return 1.0 - depth * 0.5 * (1.0 + np.sin(2 * np.pi * rate * t + phase))


def render_tone(n: int, p: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One call of a harmonic or inharmonic oscillator (see module docstring)."""
    f0 = pitch_contour(n, p["f0"] * rng.uniform(0.97, 1.03), p.get("contour", "flat"),
                       p.get("depth", 0.0), p.get("mod_rate", 5.0), rng, sample_rate)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate  # [n]
    ratios = np.asarray(p.get("partials") or np.arange(1, p.get("harmonics", 6) + 1), dtype=float)
    ratios = ratios[ratios * f0.max() < 0.45 * sample_rate][:, None]  # [K, 1], partials below Nyquist
    amplitudes = (ratios ** (-p.get("rolloff", 1.0))).astype(np.float32)
    wave = (amplitudes * np.sin((ratios * phase).astype(np.float32))).sum(axis=0).astype(float)  # [K, n] -> [n]
    breath = p.get("noise", 0.0)
    if breath > 0:
        wave = wave / (np.sqrt(np.mean(wave ** 2)) + 1e-12)
        centre = float(np.median(f0)) * p.get("noise_ratio", 2.0)
        wave = wave + breath * coloured_noise(n, 0.5 * centre, 3.0 * centre, 0.0, rng, sample_rate)
    wave *= modulation(n, p.get("am_rate", 1.0), p.get("am_depth", 0.0), rng, sample_rate)
    return wave * envelope(n, p.get("attack", 0.01), p.get("release", 0.05), p.get("env", "sustain"), sample_rate)


def render_noise(n: int, p: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One stretch of band-limited coloured noise with amplitude modulation."""
    low = p.get("lo", 50.0)
    high = max(p.get("hi", 7000.0), 1.2 * low)
    wave = coloured_noise(n, low, high, p.get("tilt", 0.0), rng, sample_rate)
    wave *= modulation(n, p.get("am_rate", 1.0), p.get("am_depth", 0.0), rng, sample_rate)
    return wave * envelope(n, p.get("attack", 0.05), p.get("release", 0.1), p.get("env", "sustain"), sample_rate)


def click_template(p: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One click: a decaying noise burst (``lo``/``hi`` band) or struck modes (``f0`` x ``partials``)."""
    decay = p.get("decay", 0.01)
    n = max(int(5 * decay * sample_rate), 8)
    t = np.arange(n) / sample_rate
    if "f0" in p:
        ratios = np.asarray(p.get("partials") or (1.0, 2.76, 5.4), dtype=float)
        freqs = p["f0"] * ratios
        freqs = freqs[freqs < 0.45 * sample_rate]
        decays = decay / np.sqrt(ratios[: len(freqs)])
        modes = np.sin(2 * np.pi * np.outer(freqs, t)) * np.exp(-t[None, :] / decays[:, None])  # [K, n]
        return modes.sum(axis=0)
    burst = coloured_noise(n, p.get("lo", 500.0), p.get("hi", 6000.0), p.get("tilt", 0.0), rng, sample_rate)
    return burst * np.exp(-t / decay)


def render_clicks(n: int, p: dict, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A train of clicks at ``rate`` per second with timing ``jitter`` (0 regular, 1 random)."""
    rate = p.get("rate", 4.0)
    period = sample_rate / rate
    n_clicks = max(int(n / period), 1)
    offsets = np.arange(n_clicks) * period + rng.uniform(-0.5, 0.5, n_clicks) * p.get("jitter", 0.1) * period
    positions = np.clip(offsets + 0.02 * sample_rate, 0, n - 1).astype(int)
    accents = np.asarray(p.get("accents", (1.0,)), dtype=float)
    spikes = np.zeros(n)
    np.add.at(spikes, positions, accents[np.arange(n_clicks) % len(accents)] * rng.uniform(0.6, 1.0, n_clicks))
    return fftconvolve(spikes, click_template(p, rng, sample_rate))[:n]


RENDERERS = {"tone": render_tone, "noise": render_noise, "clicks": render_clicks}


def render_layer(family: str, params: dict, n_max: int, rng: np.random.Generator,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Render ``count`` units of one layer, ``gap`` seconds apart, after ``delay`` seconds of
    silence, at RMS 0.1 scaled by ``gain`` dB; at most ``n_max`` samples."""
    p = draw_params(params, rng)
    unit = max(int(p.get("dur", 0.3) * sample_rate), MIN_UNIT_SAMPLES)
    gap = int(p.get("gap", 0.1) * sample_rate)
    delay = int(p.get("delay", 0.0) * sample_rate)
    count = max(int(p.get("count", 1)), 1)
    out = np.zeros(min(delay + count * unit + (count - 1) * gap, n_max))
    for start in range(delay, len(out), unit + gap)[:count]:
        length = min(unit, len(out) - start)
        if length >= MIN_UNIT_SAMPLES:  # a unit cut to a few samples by the clip's end is left out
            out[start:start + length] = RENDERERS[family](length, p, rng, sample_rate)
    return normalise_rms(out) * 10.0 ** (p.get("gain", 0.0) / 20.0)


def render_event(layers: list, n_max: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sum of a concept's layers ``[(family, params), ...]``, at most ``n_max`` samples, RMS 0.1."""
    rendered = [render_layer(family, params, n_max, rng, sample_rate) for family, params in layers]
    event = np.zeros(max(len(wave) for wave in rendered))
    for wave in rendered:
        event[: len(wave)] += wave
    return normalise_rms(event)


def normalise_rms(wave: np.ndarray, target_rms: float = 0.1) -> np.ndarray:
    rms = np.sqrt(np.mean(wave ** 2))
    return wave * (target_rms / rms) if rms > 1e-9 else wave


def room_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: direct path plus exponentially decaying noise (RT60 s)."""
    n = max(int(rt60 * sample_rate), 32)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # 60 dB down at rt60
    tail[0] = 0.0
    response = np.concatenate(([1.0], 0.3 * tail / np.sqrt(np.sum(tail ** 2) + 1e-12)))
    return response


def reverberate(wave: np.ndarray, rt60: float, wet: float, rng: np.random.Generator,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix ``wave`` with its convolution by a room response; the length stays the same."""
    if rt60 <= 0 or wet <= 0:
        return wave
    response = room_response(rt60, rng, sample_rate).astype(np.float32)
    reverberant = fftconvolve(wave.astype(np.float32), response)[: len(wave)]
    return (1 - wet) * wave + wet * normalise_rms(reverberant, np.sqrt(np.mean(wave ** 2)))
