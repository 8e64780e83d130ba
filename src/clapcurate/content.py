"""What audio files hold, without a model: the content hash behind the leakage checks and the
duplicate reports (the same bytes, or the same decoded samples under another encoding), and a
file's format, rate, channels, duration, level and problems (`clapcurate inspect`)."""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Iterable

import numpy as np
import pandas as pd
import soundfile

from .audio import MIN_CLIP_SECONDS

PROBLEMS = ("unreadable", "empty", "near-empty", "non-finite", "silent")  # what `inspect_file` reports
SILENT_PEAK = 1e-4  # a file whose every sample stays below this (-80 dBFS) is silent


def _identity(path: str) -> tuple:
    """What names one version of a file: its path, size, modification time and inode (a file
    rewritten in place gets a new modification time, so a cached digest is never stale)."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def _by_identity(read):
    """`read(path)` remembered in this process for each version of a file (`_identity`): a study
    checks one pool against several benchmarks, and each check would otherwise read every file."""
    remembered = functools.lru_cache(maxsize=1 << 18)(lambda identity: read(identity[0]))

    @functools.wraps(read)
    def cached(path: str):
        return remembered(_identity(path))

    return cached


@_by_identity
def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@_by_identity
def _shape(path: str) -> tuple | None:
    """(frames, sample rate, channels) from the file's header; None when it cannot be read."""
    try:
        info = soundfile.info(path)
    except Exception:  # unreadable files are skipped later, when the pool is embedded
        return None
    return info.frames, info.samplerate, info.channels


def _samples_hash(samples: np.ndarray) -> str:
    """The content hash of decoded samples [frames, channels] (float32)."""
    return hashlib.sha256(np.ascontiguousarray(samples).tobytes()).hexdigest()


@_by_identity
def _samples_digest(path: str) -> str | None:
    try:
        samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception:
        return None
    return _samples_hash(samples)


def _existing(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(p for p in paths if p and os.path.isfile(p)))


class _DigestIndex:
    """The benchmark's files grouped by a cheap key (size, header shape), each group's content
    digests computed the first time a pool file shares its key: {digest: first file}."""

    def __init__(self, paths: list[str], key, digest):
        self.groups: dict = {}
        for path in paths:
            value = key(path)
            if value is not None:
                self.groups.setdefault(value, []).append(path)
        self.key, self.digest, self.indexed = key, digest, {}

    def match(self, path: str) -> str | None:
        """The first benchmark file with `path`'s content, None when there is none."""
        value = self.key(path)
        if value not in self.groups:
            return None
        if value not in self.indexed:
            index = {}
            for other in self.groups[value]:
                if (digest := self.digest(other)) is not None:
                    index.setdefault(digest, other)
            self.indexed[value] = index
        digest = self.digest(path)
        return None if digest is None else self.indexed[value].get(digest)


def content_duplicates(pool_paths, benchmark_paths) -> dict[str, str]:
    """{pool file: benchmark file} for pool files holding a benchmark file's content: the same
    bytes (copies, hard links), or the same decoded samples (lossless re-encodings such as WAV ->
    FLAC). Cheap where nothing matches: a pool file is hashed only when its size, and decoded
    only when its header's length, rate and channels, equal a benchmark file's; each file is read
    once per process (later checks of the same files reuse the digests)."""
    benchmark = _existing(benchmark_paths)
    same_bytes = _DigestIndex(benchmark, os.path.getsize, _file_digest)
    same_samples = _DigestIndex(benchmark, _shape, _samples_digest)
    found = {}
    for path in _existing(pool_paths):
        match = same_bytes.match(path) or (same_samples.match(path) if same_samples.groups else None)
        if match is not None:
            found[path] = match
    return found


def _groups_by(paths: list[str], key) -> list[list[str]]:
    """Groups of 2 or more of `paths` sharing `key(path)` (None: in no group), in first-seen order."""
    groups: dict = {}
    for path in paths:
        value = key(path)
        if value is not None:
            groups.setdefault(value, []).append(path)
    return [group for group in groups.values() if len(group) > 1]


def duplicate_groups(paths) -> list[list[str]]:
    """Groups of files with the same content, each of 2 or more files in the order given: the same
    decoded samples (copies, hard links, lossless re-encodings), or for files without a readable
    header the same bytes. Only files sharing a header's length, rate and channels are decoded,
    only files sharing a size hashed."""
    existing = _existing(paths)
    readable = [path for path in existing if _shape(path) is not None]
    groups = [group for same_shape in _groups_by(readable, _shape) for group in _groups_by(same_shape, _samples_digest)]
    headerless = [path for path in existing if _shape(path) is None]
    groups += [group for same_size in _groups_by(headerless, os.path.getsize)
               for group in _groups_by(same_size, _file_digest)]
    order = {path: i for i, path in enumerate(existing)}
    return sorted(groups, key=lambda group: order[group[0]])


NEAR_IDENTICAL = 0.999  # embeddings this close are compared by content
# the most embeddings compared pairwise (a quadratic search: 20,000 takes seconds, a million days);
# beyond, `clapcurate inspect` finds duplicates by content hash in one linear pass
EMBEDDED_DUPLICATES_MAX = 20_000


def embedded_duplicates(embeddings, paths, device=None) -> list[list[str]] | None:
    """Groups of embedded files holding the same audio (`duplicate_groups`), looked for only among
    the files whose embeddings [N, d] (L2-normalised, aligned with `paths`) are almost equal: the
    same content embeds alike, so only those are read again. None, without a search, for more than
    `EMBEDDED_DUPLICATES_MAX` files."""
    from .search import search_pass

    paths = np.asarray(paths, dtype=object)
    if len(paths) > EMBEDDED_DUPLICATES_MAX:
        return None
    if len(paths) < 2:
        return []
    close = search_pass(embeddings, embeddings, NEAR_IDENTICAL, histogram_queries=0, device=device).pairs
    candidates = sorted({int(i) for q, k in zip(close.query_idx, close.key_idx) if q != k for i in (q, k)})
    return duplicate_groups(paths[candidates]) if candidates else []


def inspect_file(path: str) -> dict:
    """What one audio file holds: `format`, `subtype`, `sample_rate`, `channels`, `duration`
    (seconds), `peak` (largest absolute sample), `content` (the hash of its decoded samples, of
    its bytes when it cannot be decoded: what `duplicate_groups` compares) and `problem`: "" for a usable file, else
    unreadable (with `reason`), empty, near-empty (shorter than `audio.MIN_CLIP_SECONDS`),
    non-finite or silent (peak below `SILENT_PEAK`)."""
    record = {"audio_path": path, "format": "", "subtype": "", "sample_rate": 0, "channels": 0,
              "duration": float("nan"), "peak": float("nan"), "problem": "", "reason": "", "content": ""}
    if not os.path.isfile(path):
        return {**record, "problem": "unreadable", "reason": "no such file"}
    try:
        info = soundfile.info(path)
        samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # any decoder failure makes the file unreadable, as loading does
        return {**record, "problem": "unreadable", "reason": str(error) or type(error).__name__,
                "content": "bytes:" + _file_digest(path)}
    record.update(format=info.format, subtype=info.subtype, sample_rate=int(info.samplerate),
                  channels=int(info.channels), duration=len(samples) / info.samplerate,
                  content="samples:" + _samples_hash(samples))
    if len(samples) == 0:
        return {**record, "problem": "empty", "reason": "the file holds no samples"}
    if not np.isfinite(samples).all():
        return {**record, "problem": "non-finite", "reason": "the file holds NaN or infinite samples"}
    record["peak"] = float(np.abs(samples).max())
    if record["duration"] < MIN_CLIP_SECONDS:
        return {**record, "problem": "near-empty",
                "reason": f"{1000 * record['duration']:.1f} ms of audio (under {1000 * MIN_CLIP_SECONDS:.0f} ms)"}
    if record["peak"] < SILENT_PEAK:
        return {**record, "problem": "silent", "reason": f"peak {record['peak']:.2g} (under {SILENT_PEAK:g})"}
    return record


def inspect_files(paths, advance=None) -> pd.DataFrame:
    """`inspect_file` of each distinct path, in order, plus `duplicate_group`: a number shared by
    the files of one content (1, 2, ... in order of first appearance; 0 for a file whose content
    no other file holds). `advance(1)` after each file (a progress bar)."""
    records = []
    for path in dict.fromkeys(paths):
        records.append(inspect_file(path))
        if advance is not None:
            advance(1)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table.assign(duplicate_group=pd.Series(dtype=int))
    shared = table["content"].where(table["content"] != "")
    repeated = shared[shared.duplicated(keep=False)]
    group_of = {content: i for i, content in enumerate(dict.fromkeys(repeated), start=1)}
    return table.assign(duplicate_group=[group_of.get(content, 0) for content in table["content"]])


INSPECTION_LISTED = 10  # problem files and duplicate groups listed on the console


def inspection_tables(table: pd.DataFrame) -> list:
    """Rich tables of an `inspect_files` table: files per format, sample rate and channel count,
    durations, problem files (the first `INSPECTION_LISTED`) and groups of duplicate content."""
    from rich.table import Table

    def counts(title: str, column: str, values) -> Table:
        out = Table(title=title)
        out.add_column(column)
        out.add_column("files", justify="right")
        for value, n in values.value_counts().items():
            out.add_row(str(value), str(n))
        return out

    readable = table[table["format"] != ""]
    tables = [counts("formats", "format / subtype", readable["format"] + " / " + readable["subtype"]),
              counts("sample rates", "Hz", readable["sample_rate"]),
              counts("channels", "channels", readable["channels"])]
    if len(readable):
        durations = Table(title="durations (seconds)")
        for column in ("files", "min", "median", "max", "total"):
            durations.add_column(column, justify="right")
        seconds = readable["duration"]
        durations.add_row(str(len(readable)), f"{seconds.min():.3f}", f"{seconds.median():.3f}",
                          f"{seconds.max():.3f}", f"{seconds.sum():.1f}")
        tables.append(durations)
    problems = table[table["problem"] != ""]
    groups = table[table["duplicate_group"] > 0].groupby("duplicate_group")["audio_path"].apply(list)
    # an empty table would say nothing that the command's closing line does not
    return tables + ([_problem_table(problems)] if len(problems) else []) + (
        [_duplicate_table(groups)] if len(groups) else [])


def _problem_table(problems: pd.DataFrame):
    from rich.table import Table

    listed = Table(title=f"{len(problems)} problem file(s)"
                   + (f", the first {INSPECTION_LISTED}" if len(problems) > INSPECTION_LISTED else ""))
    for column in ("problem", "file", "reason"):
        listed.add_column(column)
    for _, row in problems.head(INSPECTION_LISTED).iterrows():
        listed.add_row(row["problem"], row["audio_path"], row["reason"])
    return listed


def _duplicate_table(groups: pd.Series):
    from rich.table import Table

    duplicates = Table(title=f"{len(groups)} group(s) of files with the same content"
                       + (f", the first {INSPECTION_LISTED}" if len(groups) > INSPECTION_LISTED else ""))
    duplicates.add_column("group", justify="right")
    duplicates.add_column("files")
    for group, paths in groups.head(INSPECTION_LISTED).items():
        duplicates.add_row(str(group), "\n".join(paths))
    return duplicates
