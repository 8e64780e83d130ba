"""Audio input: read any file soundfile can decode, mix to mono, resample, window.

Every problem with a file a user gave (missing, unreadable, not audio, empty, NaN/inf samples)
raises `AudioError(path, reason)`; callers decide whether to skip the file or stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile
import soxr

from clapcurate.errors import AudioError

RESAMPLE_QUALITY = "HQ"
# A long clip's remainder after its last full window is kept as one more window only when it
# holds at least this fraction of a window; a shorter tail adds little but a near-copy of the
# clip's start (see `inference_windows`).
MIN_TAIL_FRACTION = 0.1
# A file shorter than this holds no sound a CLAP can describe (a 2 ms click is one window of
# padding); loading refuses it, so embedding skips it with the reason, as an unreadable file.
MIN_CLIP_SECONDS = 0.05


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise AudioError(path, "no such file")


def _unreadable(path: Path, error: Exception) -> AudioError:
    return AudioError(path, f"not a readable audio file ({error})")


def audio_duration(path) -> float:
    """Duration of the audio file at `path` in seconds, read from its header (no decoding)."""
    path = Path(path)
    _require_file(path)
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.SoundFileError, OSError) as error:
        raise _unreadable(path, error) from error


def load_audio(path, sample_rate: int) -> np.ndarray:
    """Read `path`, average its channels to mono and resample to `sample_rate` (soxr "HQ").

    Returns a float32 array [T]. Raises `AudioError` for a missing, unreadable or non-audio file,
    a file without samples, one holding NaN or infinite samples, and one shorter than
    `MIN_CLIP_SECONDS`.
    """
    path = Path(path)
    _require_file(path)
    try:
        samples, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, OSError) as error:
        raise _unreadable(path, error) from error
    # samples: [T, channels]
    if samples.shape[0] == 0:
        raise AudioError(path, "the file holds no samples")
    if not np.isfinite(samples).all():
        raise AudioError(path, "the file holds NaN or infinite samples")
    if samples.shape[0] < MIN_CLIP_SECONDS * file_rate:
        raise AudioError(path, f"near-empty: {1000 * samples.shape[0] / file_rate:.1f} ms of audio "
                               f"(under {1000 * MIN_CLIP_SECONDS:.0f} ms)")
    mono = samples.mean(axis=1, dtype=np.float32)  # [T]
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_mono(wave: np.ndarray, n_samples: int) -> None:
    if wave.ndim != 1 or wave.shape[0] == 0:
        raise ValueError(f"expected a non-empty 1-D waveform, got shape {wave.shape}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")


SHORT_CLIP_FILLS = ("loop", "repeat_then_silence")


def inference_windows(wave: np.ndarray, n_samples: int, short_clip_fill: str = "loop") -> np.ndarray:
    """Deterministic windows [W, n_samples] covering the clip as if it were played in a loop.

    - A clip no longer than `n_samples` gives one window: the clip repeated until it fills it
      (`short_clip_fill="loop"`), or repeated a whole number of times and completed with zeros
      (`"repeat_then_silence"`, LAION-CLAP's "repeatpad").
    - A longer clip gives its consecutive full windows; the remainder after the last full window
      becomes one more window, completed by the clip's beginning (the loop continues), when it
      holds at least `MIN_TAIL_FRACTION` (10 %) of a window, and is dropped otherwise.
    W >= 1 always; the same input gives the same windows on every call.
    """
    _check_mono(wave, n_samples)
    if short_clip_fill not in SHORT_CLIP_FILLS:
        raise ValueError(f"short_clip_fill must be one of {SHORT_CLIP_FILLS}, got {short_clip_fill!r}")
    if short_clip_fill == "repeat_then_silence" and wave.shape[0] < n_samples:
        window = np.zeros(n_samples, dtype=wave.dtype)
        repeats = n_samples // wave.shape[0]
        window[: repeats * wave.shape[0]] = np.tile(wave, repeats)
        return window[None]
    full_windows, tail = divmod(wave.shape[0], n_samples)
    keeps_tail = tail >= MIN_TAIL_FRACTION * n_samples
    n_windows = max(1, full_windows + int(keeps_tail))
    looped = np.resize(wave, n_windows * n_samples)  # the clip repeated cyclically
    return looped.reshape(n_windows, n_samples)


class AudioFiles:
    """A map-style dataset (for `torch.utils.data.DataLoader` workers) over audio files: item i is
    `(i, transform(waveform))`, or `(i, AudioError)` when file i cannot be read. `transform` runs
    in the worker (it must be picklable, e.g. a `functools.partial`)."""

    def __init__(self, paths: Sequence[str], sample_rate: int, transform: Callable[[np.ndarray], object]):
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.transform(load_audio(self.paths[index], self.sample_rate))
        except AudioError as error:
            return index, error
