"""Feature caches for training with frozen front-ends, and for evaluation.

The log-mel front-end has no trainable parameters, so the log-mel spectrogram of each whole
clip is computed once and reused: training crops are taken in frames. Entries are keyed by the
front-end settings (a folder per `FrontendSettings.digest()`) and the file's absolute path, size
and modification time (`file_key`): a changed file is computed again. They are float16 arrays in a
`feature_store.FeatureStore` (shard files read with positioned reads, an SQLite index): below
`{cache_dir}/{settings digest}/` when a cache folder is given, else in a temporary folder of this
process (shared by every run in the process, deleted when it exits or by `clear_memory`).
Resident memory stays flat however many clips the cache holds; a build killed midway keeps its
finished shards. Caches of the earlier layout (one `{key[:2]}/{key}.npy` per clip in the same
folder) are still read: an entry found there is copied into the shards on first use, not computed.

With a frozen text encoder, the pooled text-encoder output of each unique caption is likewise
computed once, keyed by the encoder's identity (a digest of its settings and weights) and the
caption; they are kept in a bounded least-recently-used memory of this process
(`TEXT_MEMORY_BYTES`). A caption evicted from it is encoded again when next asked for, possibly in
a batch of other captions (equal up to float rounding); below the bound nothing is evicted.

For evaluation, `window_store` keeps the log-mels of every inference window of a clip (float32,
exactly the encoder's input) under an identity of the model's front-end (`frontend_identity`), so
every model with the same front-end reads them instead of decoding the audio again.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .audio import AudioFiles
from .errors import AudioError
from .feature_store import FeatureStore, StoredArrays
from .model.frontend import LogMel, int16_round_trip
from .model.weights import tensors_hash

FEATURE_DTYPE = np.float16

TEXT_MEMORY_BYTES = 256 * 2**20


class BoundedMemory:
    """A least-recently-used map of arrays holding at most `max_bytes` of them."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: collections.OrderedDict = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value: np.ndarray) -> None:
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        self._items[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes:
            self.nbytes -= self._items.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


# {(text encoder identity, caption): [hidden]}, shared by every text cache of this process.
_TEXT_MEMORY = BoundedMemory(TEXT_MEMORY_BYTES)
# The temporary folder of the log-mels computed without a cache folder, and its stores.
_PROCESS_FOLDER: list[Path] = []
_PROCESS_STORES: dict[str, FeatureStore] = {}


def _remove_process_folder(owner: int) -> None:
    if _PROCESS_FOLDER and os.getpid() == owner:  # not from a forked child
        shutil.rmtree(_PROCESS_FOLDER.pop(), ignore_errors=True)


def _process_store(digest: str, width: int) -> FeatureStore:
    """The store of this process's log-mels of one front-end, in a temporary folder."""
    if not _PROCESS_FOLDER:
        _PROCESS_FOLDER.append(Path(tempfile.mkdtemp(prefix="clapcurate-features-")))
        atexit.register(_remove_process_folder, os.getpid())
    if digest not in _PROCESS_STORES:
        _PROCESS_STORES[digest] = FeatureStore(_PROCESS_FOLDER[0] / digest, width, FEATURE_DTYPE)
    return _PROCESS_STORES[digest]


def clear_memory() -> None:
    """Forget every feature of this process that is not in a cache folder: the text features in
    memory and the log-mels of its temporary folder (cache folders stay)."""
    _TEXT_MEMORY.clear()
    _PROCESS_STORES.clear()
    _remove_process_folder(os.getpid())


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


def store_keys(paths: Sequence[str]) -> tuple[list[bytes | None], dict[str, str]]:
    """The `file_key` of each path as the bytes a `FeatureStore` takes (None for a file that
    cannot be read), and {unreadable path: reason}."""
    keys: list[bytes | None] = []
    failures: dict[str, str] = {}
    for path in paths:
        try:
            keys.append(bytes.fromhex(file_key(path)))
        except AudioError as error:
            failures[str(path)] = error.reason
            keys.append(None)
    return keys, failures


class LogMelCache:
    """Whole-clip log-mel spectrograms [frames, mel_bins] (float16) of audio files."""

    def __init__(self, settings: FrontendSettings, cache_dir: str | os.PathLike | None = None):
        self.settings = settings
        self.digest = settings.digest()
        self.folder = Path(cache_dir) / self.digest if cache_dir is not None else None
        self._store = FeatureStore(self.folder, settings.mel_bins, FEATURE_DTYPE) if self.folder else None

    @property
    def store(self) -> FeatureStore:
        return self._store or _process_store(self.digest, self.settings.mel_bins)

    def _legacy_entry(self, key: str) -> np.ndarray | None:
        """The clip's features in the earlier one-file-per-clip layout, if there."""
        path = self.folder / key[:2] / f"{key}.npy" if self.folder is not None else None
        return np.load(path) if path is not None and path.is_file() else None

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """Features of one file, computed on first use; `AudioError` when it is unreadable."""
        found, failures = self.get_many([str(path)])
        if failures:
            raise AudioError(path, failures[str(path)])
        return found[0]

    def get_many(self, paths: Iterable[str], num_workers: int = 0) -> tuple[StoredArrays, dict[str, str]]:
        """Features of many files: (item i = the features of `paths[i]`, read on access;
        {unreadable path: reason}). An unreadable file's item is absent (`KeyError`).

        Files not yet cached are loaded and transformed in `num_workers` DataLoader workers.
        """
        paths = [str(p) for p in paths]
        keys, failures = store_keys(paths)
        store = self.store
        found = store.locate(keys)
        missing = {keys[i]: paths[i] for i in np.flatnonzero(~found.present) if keys[i] is not None}
        writer = store.writer() if missing else None
        try:
            to_compute: list[tuple[str, bytes]] = []
            for key, path in missing.items():
                legacy = self._legacy_entry(key.hex())
                if legacy is not None:
                    writer.add(key, legacy)
                else:
                    to_compute.append((path, key))
            # iterated even when empty: starting it draws one number from torch's global generator,
            # and a fit's later draws (hence its weights) have always followed that draw
            loader = torch.utils.data.DataLoader(
                AudioFiles([path for path, _ in to_compute], self.settings.sample_rate,
                           functools.partial(compute_logmel, settings=self.settings)),
                batch_size=None, num_workers=num_workers if len(to_compute) > 1 else 0,
            )
            for index, result in loader:
                path, key = to_compute[index]
                if isinstance(result, AudioError):
                    failures[path] = result.reason
                    continue
                writer.add(key, result.numpy() if torch.is_tensor(result) else result)
        finally:
            if writer is not None:
                writer.close()
        todo = np.flatnonzero(~found.present)
        found.fill(todo, store.locate([keys[i] for i in todo]))
        return found, failures


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

    def _compute(self, captions: list[str], rows: dict[str, np.ndarray]) -> None:
        was_training = self.text_encoder.training
        self.text_encoder.eval()
        with torch.no_grad():
            for start in range(0, len(captions), self.batch_size):
                batch = captions[start : start + self.batch_size]
                pooled = self.text_encoder.encode(batch).float().cpu().numpy()  # [b, hidden]
                for caption, row in zip(batch, pooled):
                    rows[caption] = row
                    _TEXT_MEMORY.put((self.identity, caption), row)
        self.text_encoder.train(was_training)

    def features(self, captions: Sequence[str]) -> np.ndarray:
        """Pooled features [N, hidden] float32 of `captions`, computing the unseen ones."""
        rows: dict[str, np.ndarray] = {}
        for caption in dict.fromkeys(captions):
            row = _TEXT_MEMORY.get((self.identity, caption))
            if row is not None:
                rows[caption] = row
        unseen = [c for c in dict.fromkeys(captions) if c not in rows]
        if unseen:
            self._compute(unseen, rows)
        if not len(captions):
            return np.zeros((0, self.text_encoder.out_dim), dtype=np.float32)
        return np.stack([rows[c] for c in captions])


# ------------------------------------------------------------------ evaluation
def frontend_identity(model) -> str | None:
    """A digest of everything that fixes a CLAP model's encoder input for a clip: its front-end
    settings (int16 round trip included), parameters and code, the inference windows (clip
    length, short-clip fill) and the device type it computes on. None for an audio encoder without
    a separable log-mel front-end (`logmel`, `forward_logmel`)."""
    encoder = model.audio_encoder
    modules = [getattr(encoder, name, None) for name in ("spectrogram_extractor", "logmel_extractor")]
    if any(m is None for m in modules) or not all(hasattr(encoder, n) for n in ("logmel", "forward_logmel")):
        return None
    audio = model.config.audio
    digest = hashlib.sha1()
    digest.update(f"{FrontendSettings.of(audio).digest()};{type(encoder).logmel.__qualname__};{audio.clip_samples};"
                  f"{audio.short_clip_fill};{model.device.type};".encode())
    for module in modules:
        digest.update(type(module).__qualname__.encode())
        digest.update(tensors_hash(module.state_dict()).encode())
    return digest.hexdigest()[:20]


def window_store(model, cache_dir: str | os.PathLike) -> FeatureStore | None:
    """The store of `model`'s inference-window log-mels below `cache_dir` (float32 rows of
    `mel_bins`; a clip's entry holds its windows one after another), or None when the model's
    front-end cannot be cached (`frontend_identity`)."""
    identity = frontend_identity(model)
    if identity is None:
        return None
    return FeatureStore(Path(cache_dir) / f"windows-{identity}", model.config.audio.mel_bins, np.float32)
