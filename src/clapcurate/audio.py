"""Audio input: read any file soundfile can decode, mix to mono, resample, window.

Every problem with a file a user gave (missing, unreadable, not audio, empty, NaN/inf samples)
raises `AudioError(path, reason)`; callers decide whether to skip the file or stop.

A file longer than `STREAMED_CLIP_SECONDS` is not decoded whole for embedding (`open_audio`): it
is checked in blocks, and its inference windows are then read as a stream (`stream_windows`):
blocks of the file mixed to mono, resampled by a `soxr.ResampleStream` (which keeps the filter's
state across blocks: its output is bit for bit that of resampling the whole signal) and cut into
windows as they complete. Memory then holds a block and a window or two, whatever the clip's
length, and the windows are exactly `inference_windows(load_audio(path))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

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
# A file longer than this is embedded as a stream of windows, not decoded whole (`open_audio`).
STREAMED_CLIP_SECONDS = 300.0
STREAM_BLOCK_FRAMES = 2**16  # file frames read at a time from a streamed file


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


@dataclass(frozen=True)
class StreamedClip:
    """A file checked readable and finite whose windows are read from it as a stream
    (`stream_windows`) rather than from its whole decoded waveform."""

    path: str


def _mono_blocks(path: Path, sound: soundfile.SoundFile) -> Iterator[np.ndarray]:
    """The open file's samples as float32 mono blocks [<= STREAM_BLOCK_FRAMES] (channels averaged
    per frame, as `load_audio` does); `AudioError` for a block that cannot be decoded or holds
    NaN or infinite samples."""
    while True:
        try:
            block = sound.read(STREAM_BLOCK_FRAMES, dtype="float32", always_2d=True)  # [frames, channels]
        except (soundfile.SoundFileError, OSError) as error:
            raise _unreadable(path, error) from error
        if block.shape[0] == 0:
            return
        if not np.isfinite(block).all():
            raise AudioError(path, "the file holds NaN or infinite samples")
        yield block.mean(axis=1, dtype=np.float32)


def _open_sound(path: Path) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(str(path))
    except (soundfile.SoundFileError, OSError) as error:
        raise _unreadable(path, error) from error


def open_audio(path, sample_rate: int, streamed_after: float = STREAMED_CLIP_SECONDS) -> np.ndarray | StreamedClip:
    """`load_audio(path, sample_rate)`, or for a file longer than `streamed_after` seconds a
    `StreamedClip`, once the whole file has been read in blocks with `load_audio`'s checks
    (readable, finite), in memory that does not grow with its length.

    Only a seekable file is streamed: libsndfile knows the length of those alone from the
    header; any other (a pipe, a format read as a stream) takes the whole-file path.
    """
    path = Path(path)
    _require_file(path)
    with _open_sound(path) as sound:
        if not (sound.seekable() and sound.frames > max(streamed_after, MIN_CLIP_SECONDS) * sound.samplerate):
            return load_audio(path, sample_rate)
        for _ in _mono_blocks(path, sound):
            pass
    return StreamedClip(str(path))


def stream_windows(clip: StreamedClip, sample_rate: int, n_samples: int,
                   short_clip_fill: str = "loop") -> Iterator[np.ndarray]:
    """The windows [w, n_samples] of `inference_windows(load_audio(clip.path, sample_rate),
    n_samples, short_clip_fill)`, the same values, yielded a few at a time as the file is read.

    A long clip's last window is its tail completed by its first window's samples, so only that
    window, the samples of the window being cut and one block are held. `AudioError` when the
    file fails a check it passed in `open_audio` (it changed since).
    """
    path = Path(clip.path)
    with _open_sound(path) as sound:
        resampler = (soxr.ResampleStream(sound.samplerate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
                     if sound.samplerate != sample_rate else None)
        pending = np.zeros(0, dtype=np.float32)  # resampled samples not yet in a window
        first_window = None
        for block in _mono_blocks(path, sound):
            pending = np.concatenate([pending, resampler.resample_chunk(block) if resampler else block])
            full = len(pending) // n_samples
            if full:
                windows = pending[: full * n_samples].reshape(full, n_samples)
                if first_window is None:
                    first_window = windows[0].copy()
                yield windows
                pending = pending[full * n_samples:].copy()
        if resampler is not None:
            pending = np.concatenate([pending, resampler.resample_chunk(np.zeros(0, np.float32), last=True)])
    if first_window is None:  # no longer than a window after all: the clip's one window
        yield inference_windows(pending, n_samples, short_clip_fill)
        return
    full = len(pending) // n_samples
    if full:
        yield pending[: full * n_samples].reshape(full, n_samples)
        pending = pending[full * n_samples:]
    if len(pending) >= MIN_TAIL_FRACTION * n_samples:
        yield np.concatenate([pending, first_window[: n_samples - len(pending)]])[None]


def clip_windows(path, sample_rate: int, n_samples: int, short_clip_fill: str = "loop",
                 streamed_after: float = STREAMED_CLIP_SECONDS) -> Iterator[np.ndarray]:
    """The clip's inference windows (`inference_windows`) in parts [w, n_samples]: all at once for
    a file decoded whole, as they are read for a streamed one (`open_audio`)."""
    audio = open_audio(path, sample_rate, streamed_after)
    if isinstance(audio, StreamedClip):
        yield from stream_windows(audio, sample_rate, n_samples, short_clip_fill)
    else:
        yield inference_windows(audio, n_samples, short_clip_fill)


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
    in the worker (it must be picklable, e.g. a `functools.partial`). With `streamed_after`, a file
    longer than that many seconds is checked in the worker and its item is `(i, StreamedClip)`
    (`open_audio`): its windows are read afterwards by whoever takes the item."""

    def __init__(self, paths: Sequence[str], sample_rate: int, transform: Callable[[np.ndarray], object],
                 streamed_after: float | None = None):
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.transform = transform
        self.streamed_after = streamed_after

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            if self.streamed_after is None:
                return index, self.transform(load_audio(self.paths[index], self.sample_rate))
            audio = open_audio(self.paths[index], self.sample_rate, self.streamed_after)
            return index, audio if isinstance(audio, StreamedClip) else self.transform(audio)
        except AudioError as error:
            return index, error
