"""Feature caches for training with frozen front-ends.

The log-mel front-end has no trainable parameters, so the log-mel spectrogram of each whole
clip is computed once and reused: training crops are taken in frames. Entries are keyed by the
front-end settings and the file's absolute path, size and modification time; they live in this
process's memory (shared by every run in the process) and, given a cache folder, as float16
`.npy` files below `{cache_dir}/{settings digest}/`.

With a frozen text encoder, the pooled text-encoder output of each unique caption is likewise
computed once, keyed by the encoder's identity (a digest of its settings and weights) and the
caption.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .audio import AudioFiles, load_audio
from .errors import AudioError
from .files import write_atomically
from .model.frontend import LogMel, int16_round_trip
from .model.weights import tensors_hash

FEATURE_DTYPE = np.float16

# Entries shared by every cache object of this process: {(settings digest, file key): [frames, mel]}.
_LOGMEL_MEMORY: dict[tuple[str, str], np.ndarray] = {}
# {(text encoder identity, caption): [hidden]}.
_TEXT_MEMORY: dict[tuple[str, str], np.ndarray] = {}


def clear_memory() -> None:
    """Forget every feature held in this process's memory (the disk caches stay)."""
    _LOGMEL_MEMORY.clear()
    _TEXT_MEMORY.clear()


@dataclasses.dataclass(frozen=True)
class FrontendSettings:
    """The settings that fully determine the log-mel front-end's output."""

    sample_rate: int
    window_size: int
    hop_size: int
    mel_bins: int
    fmin: float
    fmax: float
    mel_sample_rate: int = 0  # the filterbank's design rate; 0: sample_rate
    int16_round_trip: bool = False  # LAION-CLAP's 16-bit quantisation of the waveform

    @classmethod
    def of(cls, audio_config) -> "FrontendSettings":
        """The front-end settings of a `clapcurate.model.clap.AudioConfig`."""
        return cls(**{field.name: getattr(audio_config, field.name) for field in dataclasses.fields(cls)})

    def digest(self) -> str:
        settings = dataclasses.asdict(self)
        for name in ("mel_sample_rate", "int16_round_trip"):  # settings added later: old caches keep their digest
            if not settings[name]:
                del settings[name]
        text = json.dumps(settings, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def frames(self, n_samples: int) -> int:
        """Frames of the centred STFT of `n_samples` samples."""
        return n_samples // self.hop_size + 1


@functools.lru_cache(maxsize=8)
def _logmel_module(settings: FrontendSettings) -> LogMel:
    """Built once per process on first use, so it must not draw from the global random generator
    (the layers' throw-away random initialisation would shift every later draw of the run that
    happens to build it first: a fit's numbers would depend on what ran before it)."""
    with torch.random.fork_rng(devices=[]):
        return LogMel(settings.mel_sample_rate or settings.sample_rate, settings.window_size, settings.hop_size,
                      settings.mel_bins, settings.fmin, settings.fmax).eval()


def compute_logmel(wave: np.ndarray, settings: FrontendSettings, path: str = "waveform") -> np.ndarray:
    """Log-mel [frames, mel_bins] float16 of a mono waveform [T].

    A clip of at most half a window (too short for the centred STFT's reflection padding) is
    zero-padded to one window first. `AudioError` (naming `path`) when the log-mel is not finite
    in float16, e.g. samples so large that their power overflows.
    """
    if settings.int16_round_trip:
        wave = int16_round_trip(wave)
    if len(wave) <= settings.window_size // 2:
        wave = np.pad(wave, (0, settings.window_size - len(wave)))
    with torch.no_grad():
        logmel = _logmel_module(settings)(torch.from_numpy(wave)[None])  # [1, 1, frames, mel_bins]
    features = logmel[0, 0].numpy().astype(FEATURE_DTYPE)
    if not np.isfinite(features).all():
        raise AudioError(path, f"non-finite log-mel (samples of magnitude up to {float(np.abs(wave).max()):.3g})")
    return features


@functools.lru_cache(maxsize=8)
def silence_level(settings: FrontendSettings) -> float:
    """The log-mel value of digital silence (the front-end's floor): the padding value in frames."""
    return float(compute_logmel(np.zeros(settings.window_size, dtype=np.float32), settings).max())


def file_key(path: str | os.PathLike) -> str:
    """A digest of the file's absolute path, size and modification time; `AudioError` if missing."""
    path = Path(path).absolute()
    try:
        stat = path.stat()
    except OSError as exc:
        raise AudioError(path, "no such file") from exc
    return hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


class LogMelCache:
    """Whole-clip log-mel spectrograms [frames, mel_bins] (float16) of audio files."""

    def __init__(self, settings: FrontendSettings, cache_dir: str | os.PathLike | None = None):
        self.settings = settings
        self.digest = settings.digest()
        self.folder = Path(cache_dir) / self.digest if cache_dir is not None else None

    def _disk_path(self, key: str) -> Path | None:
        return self.folder / key[:2] / f"{key}.npy" if self.folder is not None else None

    def _lookup(self, key: str) -> np.ndarray | None:
        cached = _LOGMEL_MEMORY.get((self.digest, key))
        disk_path = self._disk_path(key)
        if cached is None and disk_path is not None and disk_path.is_file():
            cached = _LOGMEL_MEMORY[(self.digest, key)] = np.load(disk_path)
        return cached

    def _store(self, key: str, features: np.ndarray) -> None:
        _LOGMEL_MEMORY[(self.digest, key)] = features
        disk_path = self._disk_path(key)
        if disk_path is not None:
            disk_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(disk_path, lambda handle: np.save(handle, features), "wb")

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """Features of one file, computed on first use; `AudioError` when it is unreadable."""
        key = file_key(path)
        cached = self._lookup(key)
        if cached is None:
            cached = compute_logmel(load_audio(path, self.settings.sample_rate), self.settings, str(path))
            self._store(key, cached)
        return cached

    def get_many(
        self, paths: Iterable[str], num_workers: int = 0
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Features of many files: ({path: features}, {unreadable path: reason}).

        Files not yet cached are loaded and transformed in `num_workers` DataLoader workers.
        """
        features: dict[str, np.ndarray] = {}
        failures: dict[str, str] = {}
        missing: list[tuple[str, str]] = []  # (path, key)
        for path in dict.fromkeys(str(p) for p in paths):
            try:
                key = file_key(path)
            except AudioError as error:
                failures[path] = error.reason
                continue
            cached = self._lookup(key)
            if cached is None:
                missing.append((path, key))
            else:
                features[path] = cached
        loader = torch.utils.data.DataLoader(
            AudioFiles([path for path, _ in missing], self.settings.sample_rate,
                       functools.partial(compute_logmel, settings=self.settings)),
            batch_size=None, num_workers=num_workers if len(missing) > 1 else 0,
        )
        for index, result in loader:
            path, key = missing[index]
            if isinstance(result, AudioError):
                failures[path] = result.reason
                continue
            result = result.numpy() if torch.is_tensor(result) else result
            self._store(key, result)
            features[path] = result
        return features, failures


def encoder_identity(text_encoder: torch.nn.Module) -> str:
    """A digest of a text encoder's settings and weights: equal digests give equal features."""
    digest = hashlib.sha1()
    for attribute in ("name_or_path", "pooling", "max_length"):
        digest.update(f"{attribute}={getattr(text_encoder, attribute, None)};".encode())
    suffix = getattr(text_encoder, "caption_suffix", "")
    if suffix:  # only when set, so that earlier identities stay as they were
        digest.update(f"caption_suffix={suffix};".encode())
    digest.update(f"weights={tensors_hash(text_encoder.state_dict())};".encode())
    return digest.hexdigest()


class TextFeatureCache:
    """Pooled outputs [hidden] of a frozen text encoder, one per unique caption."""

    def __init__(self, text_encoder: torch.nn.Module, batch_size: int = 256):
        self.text_encoder = text_encoder
        self.batch_size = batch_size
        self.identity = encoder_identity(text_encoder)

    def _compute(self, captions: list[str]) -> None:
        was_training = self.text_encoder.training
        self.text_encoder.eval()
        with torch.no_grad():
            for start in range(0, len(captions), self.batch_size):
                batch = captions[start : start + self.batch_size]
                pooled = self.text_encoder.encode(batch).float().cpu().numpy()  # [b, hidden]
                for caption, row in zip(batch, pooled):
                    _TEXT_MEMORY[(self.identity, caption)] = row
        self.text_encoder.train(was_training)

    def features(self, captions: Sequence[str]) -> np.ndarray:
        """Pooled features [N, hidden] float32 of `captions`, computing the unseen ones."""
        unseen = [c for c in dict.fromkeys(captions) if (self.identity, c) not in _TEXT_MEMORY]
        if unseen:
            self._compute(unseen)
        if not len(captions):
            return np.zeros((0, self.text_encoder.out_dim), dtype=np.float32)
        return np.stack([_TEXT_MEMORY[(self.identity, c)] for c in captions])
