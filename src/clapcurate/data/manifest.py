"""The manifest: one table shape for every dataset, pool and Improvement-Set.

A manifest is a `pandas.DataFrame` with one row per audio clip or per
(audio, caption) pair. Columns:

- `id`: unique per row (string);
- `clip_id`: the audio clip; rows sharing audio share it (defaults to `id`).
  YouTube-derived sets use `yt:{youtube_id}_{int(start_seconds)}` so AudioCaps
  rows and AudioSet pool rows of the same segment match;
- `audio_path`: absolute, or relative to the manifest file's folder on disk;
- `caption`, `label`, `fold`, `split`, `source`: strings, "" when unknown;
- optional `similarity` and `duration` (floats), and any extra columns, kept
  as they are;
- optional `recording_id`: the recording the clip was cut from, namespaced by where the id
  lives (`freesound:12345`, `youtube:abc123`, `tut2017:a001`); absent or empty means the clip
  is its own recording (`recording_ids`). Clips of one recording are resampled together by the
  bootstrap (`clapcurate.intervals`) and share a source for the contamination checks
  (`clapcurate.curate.leakage`).

Strings stay strings on disk and back: CSVs are read without type inference
or NA detection, so ids like "0001" and labels like "NA" survive.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import ManifestError

MANIFEST_COLUMNS = ("id", "clip_id", "audio_path", "caption", "label", "fold", "split", "source")
FLOAT_COLUMNS = ("similarity", "duration")
RECORDING_COLUMN = "recording_id"
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class CsvTable:
    """A CSV file read as strings: `rows[i]` holds the fields of the data row
    that starts on line `lines[i]` (1-based; quoted fields may span lines)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Yield `(line, {column: value})` for each data row."""
        for line, fields in zip(self.lines, self.rows):
            yield line, dict(zip(self.header, fields))


def read_text(path: str | os.PathLike) -> str:
    """The whole of a UTF-8 metadata file (a byte-order mark is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: file not found")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc})") from exc


def read_csv_table(
    path: str | os.PathLike,
    required_columns: Sequence[str] = (),
    *,
    fieldnames: Sequence[str] | None = None,
    comment_prefix: str | None = None,
    skipinitialspace: bool = False,
) -> CsvTable:
    """Read a CSV file strictly: every data row must have as many fields as
    the header, else `ManifestError` names the file and the line.

    `fieldnames` names the columns of a file without a header row;
    `comment_prefix` marks lines to skip (AudioSet's `#` lines); blank lines
    are skipped; CRLF and LF endings are both accepted.
    """
    path = Path(path)
    text = read_text(path)
    lines = io.StringIO(text, newline="")
    if comment_prefix is not None:
        # Comment lines become blank lines, so line numbers stay true.
        lines = ("\n" if line.startswith(comment_prefix) else line for line in lines)
    reader = csv.reader(lines, skipinitialspace=skipinitialspace)
    header = list(fieldnames) if fieldnames is not None else None
    rows: list[list[str]] = []
    row_lines: list[int] = []
    next_line = 1
    try:
        for fields in reader:
            line, next_line = next_line, reader.line_num + 1
            if not fields:
                continue
            if header is None:
                header = [name.strip() for name in fields]
                _check_header(path, line, header, required_columns)
                continue
            if len(fields) != len(header):
                raise ManifestError(
                    f"{path}, line {line}: expected {len(header)} fields "
                    f"({', '.join(header)}), found {len(fields)}"
                )
            rows.append(fields)
            row_lines.append(line)
    except csv.Error as exc:
        raise ManifestError(f"{path}, line {reader.line_num}: {exc}") from exc
    if header is None:
        raise ManifestError(f"{path}: empty file, expected a header line")
    return CsvTable(path=path, header=header, rows=rows, lines=row_lines)


def _check_header(path: Path, line: int, header: list[str], required_columns: Sequence[str]) -> None:
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ManifestError(f"{path}, line {line}: duplicated column(s) {duplicated}")
    missing = [name for name in required_columns if name not in header]
    if missing:
        raise ManifestError(
            f"{path}, line {line}: missing column(s) {missing}; the header has {header}"
        )


def _as_strings(series: pd.Series) -> pd.Series:
    """Missing values become "", everything else its `str`."""
    return series.astype(object).where(series.notna(), "").astype(str)


def _as_floats(series: pd.Series, column: str, where: str) -> pd.Series:
    """Empty strings become NaN; anything else must parse as a number."""
    try:
        return pd.to_numeric(series.replace("", np.nan)).astype(float)
    except (ValueError, TypeError) as exc:
        raise ManifestError(f"{where}column {column!r} must hold numbers ({exc})") from exc


def normalize_manifest(
    df: pd.DataFrame, source: str | None = None, *, origin: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Return a copy of `df` in the manifest schema.

    Adds missing string columns as "", turns missing values of string columns
    into "", fills an empty `clip_id` with the row's `id` and an empty `source`
    with `source` (when given), converts `similarity`/`duration` to float and
    checks that `id` is present, non-empty and unique. Column order: the
    manifest columns, the float columns present, then the extra columns.
    `origin` (a file) prefixes error messages.
    """
    where = f"{origin}: " if origin is not None else "manifest: "
    if "id" not in df.columns:
        raise ManifestError(f"{where}no 'id' column; the columns are {list(df.columns)}")
    out = df.reset_index(drop=True).copy()
    for column in MANIFEST_COLUMNS:
        out[column] = _as_strings(out[column]) if column in out.columns else ""
    empty_ids = np.flatnonzero((out["id"] == "").to_numpy())
    if len(empty_ids):
        raise ManifestError(f"{where}row {empty_ids[0]} has an empty 'id'")
    duplicated = out["id"][out["id"].duplicated()]
    if len(duplicated):
        raise ManifestError(
            f"{where}'id' must be unique; {len(duplicated)} repeated, e.g. {duplicated.iloc[0]!r}"
        )
    out["clip_id"] = out["clip_id"].where(out["clip_id"] != "", out["id"])
    if source is not None:
        out["source"] = out["source"].where(out["source"] != "", source)
    present_floats = [column for column in FLOAT_COLUMNS if column in out.columns]
    for column in present_floats:
        out[column] = _as_floats(out[column], column, where)
    leading = [*MANIFEST_COLUMNS, *present_floats]
    return out[leading + [column for column in out.columns if column not in leading]]


def _suffix_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ManifestError(
        f"{path}: unknown manifest format {suffix!r}; use one of {[*CSV_SUFFIXES, *PARQUET_SUFFIXES]}"
    )


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest from CSV or Parquet (chosen by suffix), normalise it and
    resolve relative `audio_path` values against the file's folder. Without an `id` column the
    ids are derived from `audio_path` as written (`path_ids`) and `clip_id` defaults to that
    path, as `csv:` datasets derive them."""
    path = Path(path)
    kind = _suffix_kind(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    if kind == "csv":
        table = read_csv_table(path)
        df = pd.DataFrame(table.rows, columns=table.header, dtype=str)
    else:
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable Parquet file ({exc})") from exc
    if "id" not in df.columns:
        if "audio_path" not in df.columns:
            raise ManifestError(f"{path}: no 'id' and no 'audio_path' column; the columns are {list(df.columns)}")
        written = _as_strings(df["audio_path"])
        df = df.assign(id=path_ids(written.tolist()), clip_id=df["clip_id"] if "clip_id" in df.columns else written)
    manifest = normalize_manifest(df, origin=path)
    folder = path.absolute().parent
    manifest["audio_path"] = [
        audio_path if not audio_path or os.path.isabs(audio_path) else str(folder / audio_path)
        for audio_path in manifest["audio_path"]
    ]
    return manifest


def path_ids(paths: Sequence[str]) -> list[str]:
    """Row ids derived from audio paths as written, for tables without an `id` column: the path,
    or `{path}#{k}` (k = 1, 2, ...) for each row of a path that has several (one clip, several
    captions)."""
    rows_per_path = Counter(paths)
    seen: Counter[str] = Counter()
    ids = []
    for path in paths:
        seen[path] += 1
        ids.append(path if rows_per_path[path] == 1 else f"{path}#{seen[path]}")
    return ids


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `df` (normalised first) as CSV or Parquet, chosen by suffix.

    `audio_path` is written as given. The file is written beside its final
    name and renamed into place, so a reader never sees half a manifest.
    """
    path = Path(path)
    kind = _suffix_kind(path)
    manifest = normalize_manifest(df, origin=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if kind == "csv":
        manifest.to_csv(partial, index=False, lineterminator="\n")
    else:
        manifest.to_parquet(partial, index=False)
    os.replace(partial, path)
    return path


def manifest_hash(df: pd.DataFrame) -> str:
    """A SHA-256 hex digest of the manifest's content.

    Rows count in order (embeddings are stored in manifest order); columns are
    taken by name, so their order does not matter.
    """
    digest = hashlib.sha256()
    for column in sorted(df.columns, key=str):
        values = json.dumps(df[column].tolist(), default=str, ensure_ascii=False)
        digest.update(json.dumps(str(column)).encode("utf-8"))
        digest.update(values.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def manifest_counts(manifest: pd.DataFrame) -> dict[str, int]:
    """What a manifest holds: rows, distinct clips (`clip_id`), distinct non-empty captions and
    distinct labels (a comma-separated label string counts each of its labels)."""
    return {
        "rows": len(manifest),
        "clips": int(manifest["clip_id"].nunique()),
        "captions": int(manifest.loc[manifest["caption"] != "", "caption"].nunique()),
        "labels": len({name for text in manifest["label"].unique() for name in label_names(text)}),
    }


def take_subset(manifest: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A reproducible random `fraction` of the rows (at least one), in manifest order: the
    low-resource teacher's pairs (`fit-teacher --subset`, the study's low-resource teacher)."""
    if fraction >= 1.0:
        return manifest
    n_keep = max(1, int(round(fraction * len(manifest))))
    rows = np.sort(np.random.default_rng(seed).choice(len(manifest), size=n_keep, replace=False))
    return manifest.iloc[rows].reset_index(drop=True)


def _unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key)."""
    digest = hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_by_clip(manifest: pd.DataFrame, val_fraction: float, split_seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) rows: a clip is held out when hash(split_seed, clip_id) < val_fraction.

    All captions of a clip land on the same side; the decision depends on the clip alone, so a
    teacher's fit and its curation agree on the clips it held out.
    """
    held_out = np.array([_unit_hash(split_seed, clip) < val_fraction for clip in manifest["clip_id"]], dtype=bool)
    return manifest[~held_out].reset_index(drop=True), manifest[held_out].reset_index(drop=True)


def youtube_clip_id(youtube_id: str, start_seconds: float) -> str:
    """The clip id of a YouTube segment, `yt:{youtube_id}_{int(start_seconds)}`,
    shared by AudioCaps rows and AudioSet pool rows of the same segment."""
    return f"yt:{youtube_id}_{int(start_seconds)}"


def label_names(text) -> list[str]:
    """The labels in one comma-separated label string ("/m/a, /m/b" -> ["/m/a", "/m/b"])."""
    return [name for name in (part.strip() for part in str(text).split(",")) if name]


def freesound_recording(sound_id) -> str:
    """The recording id of a Freesound sound, `freesound:{id}` ("" when `sound_id` is not a number)."""
    text = str(sound_id).strip()
    return f"freesound:{int(text)}" if text.isdigit() else ""


def youtube_recording(youtube_id: str) -> str:
    """The recording id of a YouTube video, `youtube:{id}` (every AudioSet / AudioCaps segment of
    one video shares it)."""
    return f"youtube:{youtube_id.strip()}" if youtube_id.strip() else ""


def given_recordings(manifest: pd.DataFrame, column: str = RECORDING_COLUMN) -> pd.Series:
    """Each row's recording as the reader (or the user's `column`) gave it ("" where none is known)."""
    if column not in manifest.columns:
        return pd.Series("", index=manifest.index, dtype=object)
    return _as_strings(manifest[column])


def recording_ids(manifest: pd.DataFrame) -> pd.Series:
    """Each row's recording, as the bootstrap's clusters take it, indexed by the row's `id`: its
    `recording_id`, or where that is absent or empty its `clip_id` (the clip is its own recording)."""
    given = given_recordings(manifest)
    recordings = given.where(given != "", manifest["clip_id"].astype(str))
    return pd.Series(recordings.to_numpy(), index=manifest["id"].astype(str).to_numpy())
