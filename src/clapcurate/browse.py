"""Browse an Improvement-Set: one self-contained static page to look at and listen to the pairs.

`write_browser(curated)` turns a curated folder (`improvement_set.csv`, `stats.json`,
`similarity_histogram.npz`, as `curate.write_improvement_set` writes them) into
`{out_dir}/index.html` plus `{out_dir}/audio/` (the clips it plays, linked or copied one file at a
time) and `{out_dir}/browse_files.json` (the record of what it wrote). The page needs no server, no
network and no external script or font: it works from `file://` and behind `python -m http.server`.

Only its own files: `out_dir` must be new, empty or hold an earlier page (whose recorded files are
removed, never anything else; `overwrite=True` writes beside foreign files, never over them), and
only files the embedding reads as audio are linked or copied (a manifest naming /etc/passwd gets
no player). Every value of the set reaches the page as text (JSON in a data element, written into
the page with `textContent`), and the page's Content-Security-Policy runs its own script alone.
It shows

- the similarity histogram of the whole search, the chosen sigma marked;
- a sigma control: the pairs, distinct clips and distinct captions a stricter sigma' would keep
  (from the rows: the pairs kept at sigma' > sigma are a subset of them) and the search's pairs
  >= sigma' before any per-clip cap (from the histogram), without a new search;
- the pairs, best first, borderline first or in random order, `limit` per page, each with an audio
  player, its caption, similarity, clip and source and, when given, whether the pair is right;
- filters by caption text, benchmark class (DS, ADS) and right / wrong;
- the captions holding the largest shares of the pairs (hub captions; `top_captions` of
  `stats.json`, else counted from the pairs) and the set's `estimated_precision` when it has one;
- a "mark a random sample" mode: the user marks pairs right / wrong / unsure while listening, the
  page shows the precision of the marked sample with its 95% Wilson interval
  (`intervals.wilson_interval`) and saves the marks as CSV (`read_marks` reads it back).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import numbers
import os
import re
import shutil
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import NormalDist
from typing import Literal, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from .audio import audio_duration
from .curate import HISTOGRAM_DATA_FILE, STATS_FILE, read_histogram
from .curate.summary import top_shares
from .data.manifest import read_manifest
from .errors import AudioError, ClapcurateError
from .files import check_output_folder
from .intervals import wilson_interval

log = logging.getLogger("clapcurate.browse")

BROWSER_DIR = "browser"  # default output folder, inside the curated folder
PAGE_FILE = "index.html"
AUDIO_DIR = "audio"
RECORD_FILE = "browse_files.json"  # what a browse wrote in its folder: the only files a later one removes
MARKS_LEVEL = 0.95  # the confidence level of the marked sample's Wilson interval
DEFAULT_LIMIT = 100
MANIFEST_NAMES = ("improvement_set.csv", "improvement_set.parquet")
RANDOM_ORDER_SEED = 0

AudioMode = Literal["link", "copy"]


@dataclass
class CuratedSet:
    """An Improvement-Set as written on disk: rows (audio paths resolved), stats, histogram."""

    manifest_path: Path
    rows: pd.DataFrame
    stats: dict
    histogram: object | None  # curate.SimilarityHistogram, None for sets written without its data

    @property
    def folder(self) -> Path:
        return self.manifest_path.parent


def find_manifest(curated: str | os.PathLike) -> Path:
    """The Improvement-Set manifest of a curated folder (or the manifest file itself)."""
    curated = Path(curated)
    if curated.is_file():
        return curated
    if not curated.is_dir():
        raise ClapcurateError(f"curated set not found: {curated}")
    for name in MANIFEST_NAMES:
        if (curated / name).is_file():
            return curated / name
    raise ClapcurateError(f"{curated} holds no Improvement-Set ({' or '.join(MANIFEST_NAMES)}); "
                          "give a folder written by `clapcurate curate`")


def read_curated_set(curated: str | os.PathLike) -> CuratedSet:
    manifest_path = find_manifest(curated)
    rows = read_manifest(manifest_path)
    if "similarity" not in rows:
        raise ClapcurateError(f"{manifest_path} has no similarity column: not an Improvement-Set")
    rewrite = "write the set again with `clapcurate curate`"
    bad = np.flatnonzero(~np.isfinite(rows["similarity"].to_numpy(dtype=float)))  # read_manifest parsed them
    if len(bad):
        raise ClapcurateError(f"{manifest_path}: the similarity of row {bad[0] + 1} is "
                              f"{rows['similarity'].iloc[bad[0]]}, not a finite number; {rewrite}")
    stats_path = manifest_path.parent / STATS_FILE
    try:
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClapcurateError(f"{stats_path}: not JSON ({error}); {rewrite}") from error
    if not isinstance(stats, dict):
        raise ClapcurateError(f"{stats_path}: not a JSON object; {rewrite}")
    sigma = stats.get("sigma")
    if sigma is not None and not _is_number(sigma):
        raise ClapcurateError(f"{stats_path}: sigma is {sigma!r}, not a number; {rewrite}")
    histogram_path = manifest_path.parent / HISTOGRAM_DATA_FILE
    histogram = read_histogram(histogram_path) if histogram_path.is_file() else None
    return CuratedSet(manifest_path, rows, stats, histogram)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --------------------------------------------------------------------------- marks of a sample

MARKS = ("right", "wrong", "unsure")
MARKS_COLUMNS = ("id", "clip_id", "caption", "similarity", "mark", "sample_rank")  # the page's CSV


@dataclass(frozen=True)
class MarkedSample:
    """Pairs of an Improvement-Set marked by hand in the page's "mark a random sample" mode."""

    right: int
    wrong: int
    unsure: int
    ids: tuple[str, ...]  # the marked pairs' ids

    @property
    def precision(self) -> float:
        """right / (right + wrong): unsure marks left out; nan when none was marked right or wrong."""
        return self.right / (self.right + self.wrong) if self.right + self.wrong else float("nan")

    def interval(self, level: float = MARKS_LEVEL) -> tuple[float, float]:
        """The precision's Wilson interval (`intervals.wilson_interval`)."""
        return wilson_interval(self.right, self.right + self.wrong, level)


def read_marks(path: str | os.PathLike, pair_ids: Sequence[str] | None = None) -> MarkedSample:
    """A marks CSV saved by the page. With `pair_ids` (the curated set's ids), a mark of a pair
    the set does not hold is refused: the CSV belongs to another set."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ClapcurateError(f"{path}: cannot read the marks CSV ({error})") from error
    missing = [column for column in ("id", "mark") if column not in table]
    if missing:
        raise ClapcurateError(f"{path}: no {' and no '.join(missing)} column: not a marks CSV saved by the browser "
                              f"(columns {', '.join(MARKS_COLUMNS)})")
    unknown = table.loc[~table["mark"].isin(MARKS), "mark"]
    if len(unknown):
        raise ClapcurateError(f"{path}: mark {unknown.iloc[0]!r} in row {unknown.index[0] + 2}; a mark is one of "
                              f"{', '.join(MARKS)}")
    if table["id"].duplicated().any():
        raise ClapcurateError(f"{path}: pair {table['id'][table['id'].duplicated()].iloc[0]!r} is marked twice")
    if pair_ids is not None:
        foreign = table.loc[~table["id"].isin(set(pair_ids)), "id"]
        if len(foreign):
            raise ClapcurateError(f"{path}: {len(foreign)} marked pair(s) are not in the curated set (e.g. "
                                  f"{foreign.iloc[0]!r}): the marks belong to another set")
    counts = table["mark"].value_counts()
    return MarkedSample(*(int(counts.get(mark, 0)) for mark in MARKS), ids=tuple(table["id"]))


# --------------------------------------------------------------------------- counts at sigma'


def kept_counts(rows: pd.DataFrame, sigma: float) -> dict[str, int]:
    """Pairs, distinct clips and distinct captions among the rows with similarity >= sigma (the
    Improvement-Set a stricter threshold would give; exact for sigma >= the set's own sigma)."""
    kept = rows[rows["similarity"].to_numpy() >= sigma]
    return {"pairs": len(kept), "clips": int(kept["clip_id"].nunique()),
            "captions": int(kept["caption"].nunique())}


def histogram_start_bin(low: float, high: float, bins: int, sigma: float) -> int:
    """First bin whose lower edge is >= sigma (the page computes the same in the same order)."""
    width = (high - low) / bins
    return int(min(max(np.ceil((sigma - low) / width), 0), bins))


def search_pairs_at(histogram, sigma: float, scale: float = 1.0) -> int:
    """Similarities of the histogram in the bins at or above sigma (within one bin width of
    the exact count of values >= sigma), times `scale` (`histogram_scale`), rounded half up as
    the page does."""
    start = histogram_start_bin(histogram.low, histogram.high, len(histogram.counts), sigma)
    return int(np.floor(histogram.counts[start:].sum() * scale + 0.5))


def search_size(stats: dict) -> int | None:
    """Pool clips x candidate captions searched (DU, ADS), from `stats.json`; None when unknown."""
    counts = [stats.get(key, 0) for key in ("pool_clips", "unreadable_pool_clips", "excluded_training_clips",
                                            "candidate_captions")]
    if "pool_clips" not in stats or "candidate_captions" not in stats or not all(map(_is_number, counts)):
        return None
    pool, unreadable, excluded, captions = counts
    return int((pool - unreadable - excluded) * captions)


def histogram_scale(histogram, stats: dict) -> float:
    """Factor from the histogram's counts to the whole search's: 1 when it counted every pair,
    more when it was drawn from a sample of the pool's rows (absolute sigma, DU / ADS)."""
    size = search_size(stats)
    if histogram is None or size is None or histogram.total == 0 or histogram.total >= size:
        return 1.0
    return size / histogram.total


# --------------------------------------------------------------------------- the page folder


class PageFolder:
    """The files one browse writes in its folder, recorded in `browse_files.json`.

    Each file is created new (never over an existing one) and recorded with what identifies it: a
    link's target, a file's size and modification time. `clear_earlier_page` removes what an
    earlier browse recorded, when still as it wrote it, and nothing else."""

    def __init__(self, root: Path):
        self.root = root
        self._base = os.fspath(root)
        self.files: dict[str, dict] = {}  # path relative to root -> {"link": target} | {"size", "mtime_ns"}
        self.folders: list[str] = []  # folders it created, relative to root

    def path(self, relative: str) -> str:
        return os.path.join(self._base, relative)

    def _fail(self, relative: str, error: OSError):
        if isinstance(error, FileExistsError):
            raise ClapcurateError(f"{self.path(relative)} exists and was not written by `clapcurate browse`: "
                                  "it is kept; move it away or choose another --out") from error
        raise ClapcurateError(f"{self.path(relative)}: cannot write ({error.strerror or error})") from error

    def folder(self, relative: str) -> None:
        path = self.path(relative)
        try:
            os.mkdir(path)
            self.folders.append(relative)
        except FileExistsError as error:
            if os.path.islink(path) or not os.path.isdir(path):
                self._fail(relative, error)  # never write through a link or into a file's place
        except OSError as error:
            self._fail(relative, error)

    def _record_file(self, relative: str) -> None:
        status = os.lstat(self.path(relative))
        self.files[relative] = {"size": status.st_size, "mtime_ns": status.st_mtime_ns}

    def write_text(self, relative: str, text: str) -> Path:
        try:
            with open(self.path(relative), "x", encoding="utf-8") as file:
                file.write(text)
        except OSError as error:
            self._fail(relative, error)
        self._record_file(relative)
        return Path(self.path(relative))

    def copy(self, source: str, relative: str) -> None:
        try:
            with open(source, "rb") as reader, open(self.path(relative), "xb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
        except OSError as error:
            self._fail(relative, error)
        self._record_file(relative)

    def link(self, target: str, relative: str) -> bool:
        """A symbolic link `relative` -> `target`; False where the file system has none (then copy)."""
        try:
            os.symlink(target, self.path(relative))
        except FileExistsError as error:
            self._fail(relative, error)
        except (OSError, NotImplementedError):  # no symbolic links here (some Windows setups)
            return False
        self.files[relative] = {"link": target}
        return True

    def save_record(self) -> None:
        record = {"written_by": "clapcurate browse", "files": self.files, "folders": self.folders}
        self.write_text(RECORD_FILE, json.dumps(record, separators=(",", ":")))


def _recorded_paths(root: Path) -> tuple[list[str], list[str]]:
    """(files, folders) an earlier browse recorded in `root` and that are still as it wrote them;
    entries of a record that point outside `root` or were changed since are left out."""
    try:
        record = json.loads((root / RECORD_FILE).read_text(encoding="utf-8"))
        files, folders = dict(record["files"]), list(record["folders"])
    except (OSError, ValueError, KeyError, TypeError):
        return [], []
    base, real_base = os.fspath(root), os.path.realpath(root)
    folder_inside: dict[str, bool] = {}

    def inside(relative) -> str | None:
        if not isinstance(relative, str) or not relative or os.path.isabs(relative) or ".." in relative.split("/"):
            return None
        path = os.path.join(base, relative)
        parent = os.path.dirname(path)
        if parent not in folder_inside:
            real = os.path.realpath(parent)
            folder_inside[parent] = real == real_base or real.startswith(real_base + os.sep)
        return path if folder_inside[parent] else None

    unchanged = []
    for relative, written in files.items():
        path = inside(relative)
        if path is None or not isinstance(written, dict):
            continue
        try:
            status = os.lstat(path)
        except OSError:
            continue
        if "link" in written:
            same = stat.S_ISLNK(status.st_mode) and os.readlink(path) == written["link"]
        else:
            same = (stat.S_ISREG(status.st_mode) and status.st_size == written.get("size")
                    and status.st_mtime_ns == written.get("mtime_ns"))
        if same:
            unchanged.append(path)
    return unchanged, [path for path in map(inside, folders)
                       if path is not None and os.path.isdir(path) and not os.path.islink(path)]


LEGACY_LINK = re.compile(r"\d{3}(_[A-Za-z0-9_-]+)?")  # audio/ entries of pages written before browse_files.json


def _legacy_page(root: Path) -> tuple[list[str], list[str]]:
    """(files, folders) of a page written before pages recorded their files, when `root` holds
    exactly such a page: `index.html` (a browse page) and `audio/` holding only the symbolic links
    to audio folders it made (removing a link never removes its target); else nothing."""
    page, audio = root / PAGE_FILE, root / AUDIO_DIR
    try:
        if sorted(os.listdir(root)) != sorted([PAGE_FILE, AUDIO_DIR]) or audio.is_symlink():
            return [], []
        links = list(os.scandir(audio))
        with open(page, encoding="utf-8", errors="replace") as file:
            head = file.read(1 << 16)
    except OSError:
        return [], []
    if ('<script type="application/json" id="data">' not in head or "Improvement-Set" not in head
            or not all(entry.is_symlink() and LEGACY_LINK.fullmatch(entry.name) for entry in links)):
        return [], []
    return [str(page)] + [entry.path for entry in links], [str(audio)]


def clear_earlier_page(root: Path, overwrite: bool = False) -> int:
    """Make `root` ready for a page: create it, or remove what an earlier browse recorded there.
    A folder holding anything else is refused unless `overwrite`, and those files stay.
    Returns the number of files removed."""
    check_output_folder(root, "browser folder")
    files, folders = _recorded_paths(root) if (root / RECORD_FILE).exists() else _legacy_page(root)
    own = set(files) | set(folders) | {os.path.join(root, RECORD_FILE)}
    foreign, to_visit = [], [os.fspath(root)]
    while to_visit:  # the folder, and the folders of its own inside it (links not followed)
        with os.scandir(to_visit.pop()) as entries:
            for entry in entries:
                if entry.path not in own:
                    foreign.append(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    to_visit.append(entry.path)
    if foreign and not overwrite:
        raise ClapcurateError(f"{root} holds {len(foreign)} file(s) or folder(s) `clapcurate browse` did not write "
                              f"(e.g. {foreign[0]}): choose a new or empty --out, or add --overwrite to write the page "
                              "beside them (they are kept)")
    if os.path.join(root, PAGE_FILE) in foreign:  # found before anything is written
        raise ClapcurateError(f"{root / PAGE_FILE} exists and was not written by `clapcurate browse`: it is kept; "
                              "move it away or choose another --out")
    for path in files:
        os.unlink(path)
    for path in sorted(folders, key=lambda folder: -folder.count(os.sep)):  # deepest first, only when emptied
        try:
            os.rmdir(path)
        except OSError:
            pass
    (root / RECORD_FILE).unlink(missing_ok=True)
    return len(files)


# Leading bytes of the audio containers datasets hold: a file that starts so is taken as audio
# without opening it with libsndfile (100k clips in about a second); any other file must decode.
AUDIO_SIGNATURES = ((0, b"RIFF", 8, b"WAVE"), (0, b"RF64", 8, b"WAVE"), (0, b"BW64", 8, b"WAVE"),
                    (0, b"FORM", 8, b"AIFF"), (0, b"FORM", 8, b"AIFC"), (0, b"fLaC", 0, b""), (0, b"OggS", 0, b""),
                    (0, b"caff", 0, b""), (0, b".snd", 0, b""))


def is_audio_file(path: str) -> bool:
    """Whether `path` is an audio file the embedding reads: a regular file that starts as one of
    `AUDIO_SIGNATURES` or that libsndfile opens (`audio.audio_duration`)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            head = os.read(descriptor, 12)
        finally:
            os.close(descriptor)
    except OSError:
        return False
    if any(head[a:a + len(first)] == first and head[b:b + len(second)] == second
           for a, first, b, second in AUDIO_SIGNATURES):
        return True
    try:
        audio_duration(path)
    except AudioError:
        return False
    return True


def _folder_name(index: int, folder: str) -> str:
    """`audio/` entry of the `index`-th audio folder: its number and a readable part of its name."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.basename(folder.rstrip(os.sep)))[:40]
    return f"{index:03d}_{readable}" if readable else f"{index:03d}"


@dataclass
class PlacedAudio:
    sources: list[str]  # page-relative `src` of each path, '' where it gets no player
    missing: list[str]  # paths that are not files
    not_audio: list[str]  # files the embedding cannot read as audio (never linked or copied)


def place_audio(paths: Sequence[str], folder: PageFolder, mode: AudioMode = "link") -> PlacedAudio:
    """Make each audio file reachable below `{folder}/audio/`, one file at a time, and return
    its page-relative `src` (`audio/000_pool/clip%201.wav`).

    Only files that decode as audio (what `embed` reads) are placed; a missing file, a folder, or
    a file such as /etc/passwd gets no player. `link`: one relative symbolic link per file, to
    the file itself (`audio/000_pool/clip.wav -> ../../../pool/clip.wav`); `copy`: the file is
    copied (a page to move to another machine). Files are grouped by their folder
    (`audio/000_pool/`) so that equal names from two folders stay apart."""
    if mode not in ("link", "copy"):
        raise ClapcurateError(f"audio mode must be link or copy, got {mode!r}")
    folder.folder(AUDIO_DIR)
    entry_of: dict[str, tuple[str, str]] = {}  # audio folder -> (its entry in audio/, the entry's real path)
    placed = PlacedAudio([], [], [])
    real_folders: dict[str, str] = {}  # realpath of each audio folder, resolved once
    relative_folders: dict[tuple[str, str], str] = {}  # (real audio folder, real entry) -> link path between them
    for path in paths:
        real, mode_bits = "", 0
        if path:
            source_folder, name = os.path.split(os.path.abspath(path))
            if source_folder not in real_folders:
                real_folders[source_folder] = os.path.realpath(source_folder)
            real = os.path.join(real_folders[source_folder], name)
            try:
                mode_bits = os.lstat(real).st_mode
                if stat.S_ISLNK(mode_bits):
                    real = os.path.realpath(real)
                    mode_bits = os.stat(real).st_mode
            except OSError:
                mode_bits = 0
        if not real or not stat.S_ISREG(mode_bits):
            placed.sources.append("")
            placed.missing.append(path)
            continue
        if not is_audio_file(real):
            placed.sources.append("")
            placed.not_audio.append(path)
            continue
        if source_folder not in entry_of:
            entry = f"{AUDIO_DIR}/{_folder_name(len(entry_of), source_folder)}"
            folder.folder(entry)
            entry_of[source_folder] = entry, os.path.realpath(folder.path(entry))
        entry, entry_real = entry_of[source_folder]
        relative = f"{entry}/{name}"
        real_folder, real_name = os.path.split(real)
        if (real_folder, entry_real) not in relative_folders:
            relative_folders[real_folder, entry_real] = os.path.relpath(real_folder, entry_real)
        target = os.path.join(relative_folders[real_folder, entry_real], real_name)
        if mode == "copy" or not folder.link(target, relative):
            folder.copy(real, relative)
        placed.sources.append(f"{entry}/{quote(name)}")
    return placed


# --------------------------------------------------------------------------- matched windows


@dataclass
class MatchedWindows:
    """Per curated pair, where its long clip matched its caption best: the start (seconds) of the
    teacher's best window, nan for clips of one window (played whole)."""

    start_seconds: np.ndarray  # float [pairs]
    window_seconds: float


def matched_windows(rows: pd.DataFrame, model, batch_size: int = 64) -> MatchedWindows:
    """The window of each pair's clip whose teacher embedding is closest to the caption's.

    Clips are embedded as the mean of deterministic windows (`audio.inference_windows`), so the
    curated rows do not say which part of a long clip matched; this embeds the windows of the
    long clips again (one forward pass per window; clips of one window cost a header read) and
    picks each pair's best window. Unreadable clips are played whole."""
    import soundfile
    import torch

    from .audio import clip_windows
    from .embed import embed_texts

    sample_rate, n_samples = model.config.audio.sample_rate, model.clip_samples
    window_seconds = n_samples / sample_rate
    starts = np.full(len(rows), np.nan)
    row_groups = pd.Series(np.arange(len(rows))).groupby(rows["audio_path"].astype(str).to_numpy()).agg(list)
    long_clips = []
    for path, row_indices in row_groups.items():
        try:
            if soundfile.info(path).duration > window_seconds * 1.1:  # more than one window
                long_clips.append((path, row_indices))
        except (RuntimeError, OSError):  # unreadable: played whole
            continue
    if not long_clips:
        return MatchedWindows(starts, window_seconds)
    captions = sorted({rows["caption"].iloc[i] for _, indices in long_clips for i in indices})
    caption_of = dict(zip(captions, embed_texts(model, captions)))  # [d] each, L2-normalised
    model.eval()
    for path, row_indices in long_clips:
        parts = []  # [w, d] each, of the windows [w, n_samples] `embed` embeds, read as they come
        try:
            with torch.inference_mode():
                for windows in clip_windows(path, sample_rate, n_samples, model.config.audio.short_clip_fill):
                    parts += [model.encode_audio(torch.from_numpy(windows[i:i + batch_size])).float().cpu().numpy()
                              for i in range(0, len(windows), batch_size)]
        except ClapcurateError:
            continue
        embedded = np.concatenate(parts)  # [W, d]
        for i in row_indices:
            starts[i] = int(np.argmax(embedded @ caption_of[rows["caption"].iloc[i]])) * window_seconds
    return MatchedWindows(starts, window_seconds)


# --------------------------------------------------------------------------- the page's data


def _table(values: pd.Series) -> tuple[list[str], np.ndarray]:
    """(distinct values in first-seen order, index of each value in them)."""
    codes, uniques = pd.factorize(values.astype(str), sort=False)
    return [str(value) for value in uniques], codes.astype(np.int64)


def _histogram_data(histogram, scale: float) -> dict | None:
    if histogram is None:
        return None
    occupied = np.flatnonzero(histogram.counts)
    first, last = (int(occupied[0]), int(occupied[-1])) if len(occupied) else (0, -1)
    return {"low": histogram.low, "high": histogram.high, "bins": len(histogram.counts), "first": first,
            "counts": histogram.counts[first:last + 1].tolist(), "total": histogram.total, "scale": scale}


def page_data(curated: CuratedSet, audio_sources: Sequence[str], limit: int,
              right: Sequence[bool] | None = None, start_seconds: Sequence[float] | None = None,
              window_seconds: float | None = None, title: str | None = None) -> dict:
    """Everything the page shows, as columns (distinct captions, labels and clips stored once).

    `audio_sources` align with the distinct clips of the rows (first-seen order), `right` and
    `start_seconds` (nan: play the whole clip) with the rows."""
    rows = curated.rows
    order = np.lexsort((rows["id"].to_numpy(), -rows["similarity"].to_numpy()))  # best first
    sorted_rows = rows.iloc[order].reset_index(drop=True)
    clip_ids, clip_index = _table(rows["clip_id"])
    captions, caption_index = _table(sorted_rows["caption"])
    labels_column = sorted_rows["best_label"] if "best_label" in sorted_rows else pd.Series([""] * len(sorted_rows))
    labels, label_index = _table(labels_column)
    first_rows = rows.drop_duplicates("clip_id")
    stats = curated.stats
    method = str(stats.get("method") or (rows["method"].iloc[0] if "method" in rows and len(rows) else ""))
    benchmark = str(stats.get("benchmark") or "")
    return {
        "title": title or " ".join(filter(None, [method.upper(), "Improvement-Set", benchmark])),
        "method": method,
        "benchmark": benchmark,
        "sigma": float(stats.get("sigma", rows["similarity"].min() if len(rows) else 0.0)),
        "stats": _finite(stats),
        # hub captions: stats.json's, else (a set curated before curation listed them) counted here
        "top_captions": None if "top_captions" in stats else top_shares(rows["caption"], "caption"),
        "wilson_z": NormalDist().inv_cdf(0.5 + MARKS_LEVEL / 2),  # as intervals.wilson_interval
        "limit": int(limit),
        "histogram": _histogram_data(curated.histogram, histogram_scale(curated.histogram, stats)),
        "captions": captions,
        "labels": labels,
        "clips": {"id": clip_ids, "src": list(audio_sources),
                  "source": first_rows["source"].astype(str).tolist() if "source" in rows else [""] * len(clip_ids)},
        "rows": {
            "id": sorted_rows["id"].astype(str).tolist(),
            "similarity": sorted_rows["similarity"].astype(float).tolist(),
            "caption": caption_index.tolist(),
            "label": label_index.tolist(),
            "clip": clip_index[order].tolist(),
            "source_id": (sorted_rows["source_id"].astype(str).tolist() if "source_id" in sorted_rows
                          else [""] * len(sorted_rows)),
            "right": None if right is None else [int(bool(x)) for x in np.asarray(right)[order]],
            "start": None if start_seconds is None else [
                None if np.isnan(x) else round(float(x), 3) for x in np.asarray(start_seconds, dtype=float)[order]],
        },
        "window_seconds": window_seconds,
        "random_seed": RANDOM_ORDER_SEED,
    }


def _finite(value):
    """`value` with every non-finite float (NaN, inf) replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _script_json(data: dict) -> str:
    """JSON that is safe inside an HTML <script> element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256_source(element: str, page: str) -> str:
    """CSP source of the one inline `<element>` of the page: its text's sha256."""
    text = re.search(rf"<{element}>(.*?)</{element}>", page, re.S).group(1)
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def content_security_policy(template: str) -> str:
    """Nothing but the page's own script and style (by hash), its audio and the data: icon:
    no injected script, handler, frame, form, connection or remote resource."""
    return ("default-src 'none'; "
            f"script-src {_sha256_source('script', template)}; style-src {_sha256_source('style', template)}; "
            "media-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


def render_page(data: dict) -> str:
    template = resources.files("clapcurate").joinpath("templates").joinpath("browse.html")
    template = template.read_text(encoding="utf-8")
    return (template.replace("{{CSP}}", html.escape(content_security_policy(template)))
            .replace("{{TITLE}}", html.escape(data["title"]))
            .replace("{{DATA}}", _script_json(data)))


def write_browser(curated: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  limit: int = DEFAULT_LIMIT, right: Sequence[bool] | None = None,
                  windows: "MatchedWindows | None" = None, audio: AudioMode = "link",
                  title: str | None = None, overwrite: bool = False) -> Path:
    """Write the browser of a curated set (folder or manifest) into `out_dir` (default
    `{curated folder}/browser`); returns the page's path.

    `right` (one per manifest row, e.g. from the embedded world's ground truth) adds a right /
    wrong mark to each pair; `windows` (`matched_windows`) makes the player of a long clip play
    the window that matched the caption. `audio="link"` links the clips with relative symbolic links,
    `"copy"` copies them (a page to move elsewhere). `out_dir` must be new, empty or an earlier
    page (`clear_earlier_page`; `overwrite` writes beside foreign files)."""
    if limit < 1:
        raise ClapcurateError(f"--limit must be at least 1, got {limit}")
    curated_set = read_curated_set(curated)
    n_rows = len(curated_set.rows)
    start_seconds = None if windows is None else windows.start_seconds
    for name, values in (("right", right), ("windows", start_seconds)):
        if values is not None and len(values) != n_rows:
            raise ClapcurateError(f"{name}: {len(values)} values for {n_rows} curated pairs")
    out_dir = Path(out_dir) if out_dir is not None else curated_set.folder / BROWSER_DIR
    clear_earlier_page(out_dir, overwrite)
    folder = PageFolder(out_dir)
    try:
        clips = curated_set.rows.drop_duplicates("clip_id")
        placed = place_audio(clips["audio_path"].astype(str).tolist(), folder, audio)
        data = page_data(curated_set, placed.sources, limit, right, start_seconds,
                         None if windows is None else windows.window_seconds, title)
        page = folder.write_text(PAGE_FILE, render_page(data))
    finally:
        folder.save_record()  # what it wrote, also when it stopped half-way
    for paths, what in ((placed.missing, "missing"), (placed.not_audio, "not audio files, neither linked nor copied")):
        if paths:
            log.warning("%d of %d clips get no player (%s), e.g. %s", len(paths), len(clips), what, paths[0])
    return page
