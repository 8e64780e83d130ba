"""Leakage checks of curation: pool clips the teacher trained on are left out, and a pool that
holds a target benchmark's audio (by clip id, by path, or by content) is refused before any of
the pool's audio is embedded."""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
import pandas as pd
import soundfile

from ..errors import ClapcurateError


def training_clip_mask(pool_clips: pd.DataFrame, teacher_train_manifest: pd.DataFrame) -> np.ndarray:
    """True [P] where a pool clip is in the teacher's training manifest: the same `clip_id`, or the
    same audio file (absolute `audio_path`, normalised), since datasets named differently derive
    different ids for one file (`folder:` relative to the folder, `csv:` as the CSV writes it)."""
    same_id = pool_clips["clip_id"].isin(set(teacher_train_manifest["clip_id"])).to_numpy()
    training_files = set(_normalised_paths(teacher_train_manifest)) - {""}
    return same_id | _normalised_paths(pool_clips).isin(training_files).to_numpy()


def _normalised_paths(manifest: pd.DataFrame) -> pd.Series:
    """Each `audio_path` made absolute and normalised (no file system access: fast on big pools)."""
    return pd.Series([os.path.normpath(os.path.abspath(path)) if path else "" for path in manifest["audio_path"]],
                     index=manifest.index)


def _resolved_paths(manifest: pd.DataFrame) -> pd.Series:
    return pd.Series([os.path.realpath(path) if path else "" for path in manifest["audio_path"]],
                     index=manifest.index)


def refuse_benchmark_audio(pool: pd.DataFrame, benchmark: pd.DataFrame, benchmark_name: str) -> None:
    """Raise `ClapcurateError` if the pool holds audio of the benchmark: a shared `clip_id`, an
    `audio_path` resolving (symbolic links followed) to one of the benchmark's files, or the same
    content under another name (`content_duplicates`: a copy, a hard link, a lossless re-encoding)."""
    shared_ids = pool["clip_id"].isin(set(benchmark["clip_id"]))
    benchmark_paths = set(_resolved_paths(benchmark)) - {""}
    shared_paths = _resolved_paths(pool).isin(benchmark_paths)
    clash = pool[shared_ids.to_numpy() | shared_paths.to_numpy()]
    if len(clash):
        example = clash.iloc[0]
        raise ClapcurateError(
            f"the pool holds {len(clash)} clip(s) of the target benchmark {benchmark_name!r} "
            f"(e.g. clip_id {example['clip_id']!r}, file {example['audio_path']}); curation never "
            f"reads a benchmark's audio: remove these rows from the pool manifest"
        )
    duplicates = content_duplicates(pool["audio_path"], benchmark["audio_path"])
    if duplicates:
        pool_file, benchmark_file = next(iter(duplicates.items()))
        raise ClapcurateError(
            f"the pool holds {len(duplicates)} file(s) with the audio of the target benchmark {benchmark_name!r} "
            f"(e.g. {pool_file} has the content of {benchmark_file}); curation never reads a benchmark's "
            f"audio: remove these rows from the pool manifest"
        )


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shape(path: str) -> tuple | None:
    """(frames, sample rate, channels) from the file's header; None when it cannot be read."""
    try:
        info = soundfile.info(path)
    except Exception:  # unreadable files are skipped later, when the pool is embedded
        return None
    return info.frames, info.samplerate, info.channels


def _samples_digest(path: str) -> str | None:
    try:
        samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception:
        return None
    return hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()


def content_duplicates(pool_paths, benchmark_paths) -> dict[str, str]:
    """{pool file: benchmark file} for pool files holding a benchmark file's content: the same
    bytes (copies, hard links), or the same decoded samples (lossless re-encodings such as WAV ->
    FLAC). Cheap where nothing matches: a pool file is hashed only when its size, and decoded
    only when its header's length, rate and channels, equal a benchmark file's. Lossy
    re-encodings (MP3, Ogg) change the samples and are not recognised."""
    sized: dict[int, list[str]] = {}
    shaped: dict[tuple, list[str]] = {}
    for path in dict.fromkeys(p for p in benchmark_paths if p and os.path.isfile(p)):
        sized.setdefault(os.path.getsize(path), []).append(path)
        shape = _shape(path)
        if shape is not None:
            shaped.setdefault(shape, []).append(path)
    byte_digest = functools.lru_cache(maxsize=None)(_file_digest)
    sample_digest = functools.lru_cache(maxsize=None)(_samples_digest)
    found = {}
    for path in dict.fromkeys(p for p in pool_paths if p and os.path.isfile(p)):
        same = [other for other in sized.get(os.path.getsize(path), []) if byte_digest(other) == byte_digest(path)]
        if not same and shaped:
            shape = _shape(path)
            candidates = shaped.get(shape, []) if shape is not None else []
            same = [other for other in candidates if sample_digest(path) is not None
                    and sample_digest(other) == sample_digest(path)]
        if same:
            found[path] = same[0]
    return found
