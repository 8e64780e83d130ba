"""Leakage checks of curation: pool clips the teacher trained on (the same clip, file or source
recording) are left out, a pool that holds a target benchmark's audio (by clip id, by path, by
content, or cut from one of its source recordings) is refused before any of the pool's audio is
embedded, and benchmark clips cut from recordings the teacher trained on are counted (its
zero-shot score on them is not zero-shot)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..content import content_duplicates
from ..data.manifest import RECORDING_COLUMN, given_recordings
from ..errors import ClapcurateError


def training_clip_mask(pool_clips: pd.DataFrame, teacher_train_manifest: pd.DataFrame) -> np.ndarray:
    """True [P] where a pool clip is in the teacher's training manifest: the same `clip_id`, or the
    same audio file (absolute `audio_path`, normalised), since datasets named differently derive
    different ids for one file (`folder:` relative to the folder, `csv:` as the CSV writes it)."""
    same_id = pool_clips["clip_id"].isin(set(teacher_train_manifest["clip_id"])).to_numpy()
    training_files = set(_normalised_paths(teacher_train_manifest)) - {""}
    return same_id | _normalised_paths(pool_clips).isin(training_files).to_numpy()


def shared_source_mask(manifest: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    """True [len(manifest)] where a row's source recording (`recording_id`, when known) is also the
    source of a row of `other`: clips cut from one Freesound sound or one YouTube video."""
    sources = set(given_recordings(other)) - {""}
    recordings = given_recordings(manifest)
    return (recordings.isin(sources) & (recordings != "")).to_numpy()


def _normalised_paths(manifest: pd.DataFrame) -> pd.Series:
    """Each `audio_path` made absolute and normalised (no file system access: fast on big pools)."""
    return pd.Series([os.path.normpath(os.path.abspath(path)) if path else "" for path in manifest["audio_path"]],
                     index=manifest.index)


def _resolved_paths(manifest: pd.DataFrame) -> pd.Series:
    return pd.Series([os.path.realpath(path) if path else "" for path in manifest["audio_path"]],
                     index=manifest.index)


def refuse_benchmark_audio(pool: pd.DataFrame, benchmark: pd.DataFrame, benchmark_name: str) -> None:
    """Raise `ClapcurateError` if the pool holds audio of the benchmark: a shared `clip_id`, an
    `audio_path` resolving (symbolic links followed) to one of the benchmark's files, a clip cut
    from one of the benchmark's source recordings (`shared_source_mask`), or the same content under
    another name (`content_duplicates`: a copy, a hard link, a lossless re-encoding)."""
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
    same_source = pool[shared_source_mask(pool, benchmark)]
    if len(same_source):
        example = same_source.iloc[0]
        raise ClapcurateError(
            f"the pool holds {len(same_source)} clip(s) cut from the source recordings of the target benchmark "
            f"{benchmark_name!r} (e.g. {example['clip_id']!r} of {example[RECORDING_COLUMN]}); a student trained on "
            f"them has heard the benchmark's recordings: remove these rows from the pool manifest"
        )
    duplicates = content_duplicates(pool["audio_path"], benchmark["audio_path"])
    if duplicates:
        pool_file, benchmark_file = next(iter(duplicates.items()))
        raise ClapcurateError(
            f"the pool holds {len(duplicates)} file(s) with the audio of the target benchmark {benchmark_name!r} "
            f"(e.g. {pool_file} has the content of {benchmark_file}); curation never reads a benchmark's "
            f"audio: remove these rows from the pool manifest"
        )
