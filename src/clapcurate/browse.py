"""Browse an Improvement-Set: one self-contained static page to look at and listen to the pairs.

`write_browser(curated)` turns a curated folder (`improvement_set.csv`, `stats.json`,
`similarity_histogram.npz`, as `curate.write_improvement_set` writes them) into
`{out_dir}/index.html` plus `{out_dir}/audio/` (the clips it plays, linked or copied). The page
needs no server, no network and no external script or font: it works from `file://` and behind
`python -m http.server`. It shows

- the similarity histogram of the whole search, the chosen sigma marked;
- a sigma control: the pairs, distinct clips and distinct captions a stricter sigma' would keep
  (from the rows: the pairs kept at sigma' > sigma are a subset of them) and the search's pairs
  >= sigma' before any per-clip cap (from the histogram), without a new search;
- the pairs, best first, borderline first or in random order, `limit` per page, each with an audio
  player, its caption, similarity, clip and source and, when given, whether the pair is right;
- filters by caption text, benchmark class (DS, ADS) and right / wrong.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from .curate import HISTOGRAM_DATA_FILE, STATS_FILE, read_histogram
from .data.manifest import read_manifest
from .errors import ClapcurateError

BROWSER_DIR = "browser"  # default output folder, inside the curated folder
PAGE_FILE = "index.html"
AUDIO_DIR = "audio"
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
    stats_path = manifest_path.parent / STATS_FILE
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    histogram_path = manifest_path.parent / HISTOGRAM_DATA_FILE
    histogram = read_histogram(histogram_path) if histogram_path.is_file() else None
    return CuratedSet(manifest_path, rows, stats, histogram)


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
    try:
        clips = stats["pool_clips"] - stats.get("unreadable_pool_clips", 0) - stats.get("excluded_training_clips", 0)
        return int(clips * stats["candidate_captions"])
    except (KeyError, TypeError):
        return None


def histogram_scale(histogram, stats: dict) -> float:
    """Factor from the histogram's counts to the whole search's: 1 when it counted every pair,
    more when it was drawn from a sample of the pool's rows (absolute sigma, DU / ADS)."""
    size = search_size(stats)
    if histogram is None or size is None or histogram.total == 0 or histogram.total >= size:
        return 1.0
    return size / histogram.total


# --------------------------------------------------------------------------- audio


def _folder_name(index: int, folder: str) -> str:
    """`audio/` entry of the `index`-th audio folder: its number and a readable part of its name."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.basename(folder.rstrip(os.sep)))[:40]
    return f"{index:03d}_{readable}" if readable else f"{index:03d}"


def place_audio(paths: Sequence[str], audio_dir: Path, mode: AudioMode = "link") -> list[str]:
    """Make each audio file reachable below `audio_dir` and return its page-relative `src`
    (`audio/000_pool/clip%201.wav`; '' for a missing file).

    `link`: one relative symbolic link per folder holding audio (`audio/000_pool -> ../../pool`),
    so a set of 100k clips from one pool folder costs one link, not 100k. `copy`: the files are
    copied (a page to move to another machine). `audio_dir` is emptied first (links are removed,
    never their targets)."""
    if mode not in ("link", "copy"):
        raise ClapcurateError(f"audio mode must be link or copy, got {mode!r}")
    if audio_dir.is_symlink() or audio_dir.is_file():
        audio_dir.unlink()
    elif audio_dir.is_dir():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    base = os.path.realpath(audio_dir)
    entry_of: dict[str, tuple[str, bool]] = {}  # audio folder -> (its entry in audio_dir, copied)
    sources = []
    for path in paths:
        if not path or not os.path.isfile(path):
            sources.append("")
            continue
        folder, name = os.path.split(os.path.abspath(path))
        if folder not in entry_of:
            entry = _folder_name(len(entry_of), folder)
            copied = mode == "copy"
            if not copied:
                try:
                    os.symlink(os.path.relpath(os.path.realpath(folder), base), audio_dir / entry,
                               target_is_directory=True)
                except OSError:  # no symbolic links here (some Windows setups): copy instead
                    copied = True
            if copied:
                (audio_dir / entry).mkdir()
            entry_of[folder] = (entry, copied)
        entry, copied = entry_of[folder]
        if copied:
            shutil.copyfile(path, audio_dir / entry / name)
        sources.append(f"{AUDIO_DIR}/{entry}/{quote(name)}")
    return sources


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

    from .audio import inference_windows, load_audio
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
        try:
            windows = inference_windows(load_audio(path, sample_rate), n_samples)  # [W, n_samples]
        except ClapcurateError:
            continue
        with torch.inference_mode():
            embedded = torch.cat([model.encode_audio(torch.from_numpy(windows[i:i + batch_size]))
                                  for i in range(0, len(windows), batch_size)]).float().cpu().numpy()  # [W, d]
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
    return {
        "title": title or " ".join(filter(None, [method.upper(), "Improvement-Set", stats.get("benchmark")])),
        "method": method,
        "benchmark": stats.get("benchmark") or "",
        "sigma": float(stats.get("sigma", rows["similarity"].min() if len(rows) else 0.0)),
        "stats": _finite(stats),
        "limit": int(limit),
        "histogram": _histogram_data(curated.histogram, histogram_scale(curated.histogram, stats)),
        "captions": captions,
        "labels": labels,
        "clips": {"id": clip_ids, "src": list(audio_sources),
                  "source": first_rows["source"].astype(str).tolist() if "source" in rows else [""] * len(clip_ids)},
        "rows": {
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


def render_page(data: dict) -> str:
    template = resources.files("clapcurate").joinpath("templates").joinpath("browse.html")
    template = template.read_text(encoding="utf-8")
    return (template.replace("{{TITLE}}", html.escape(data["title"]))
            .replace("{{DATA}}", _script_json(data)))


def write_browser(curated: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  limit: int = DEFAULT_LIMIT, right: Sequence[bool] | None = None,
                  windows: "MatchedWindows | None" = None, audio: AudioMode = "link",
                  title: str | None = None) -> Path:
    """Write the browser of a curated set (folder or manifest) into `out_dir` (default
    `{curated folder}/browser`); returns the page's path.

    `right` (one per manifest row, e.g. from the embedded world's ground truth) adds a right /
    wrong mark to each pair; `windows` (`matched_windows`) makes the player of a long clip play
    the window that matched the caption. `audio="link"` links the clips with relative symbolic links,
    `"copy"` copies them (a page to move elsewhere)."""
    if limit < 1:
        raise ClapcurateError(f"--limit must be at least 1, got {limit}")
    curated_set = read_curated_set(curated)
    n_rows = len(curated_set.rows)
    start_seconds = None if windows is None else windows.start_seconds
    for name, values in (("right", right), ("windows", start_seconds)):
        if values is not None and len(values) != n_rows:
            raise ClapcurateError(f"{name}: {len(values)} values for {n_rows} curated pairs")
    out_dir = Path(out_dir) if out_dir is not None else curated_set.folder / BROWSER_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = curated_set.rows.drop_duplicates("clip_id")
    sources = place_audio(clips["audio_path"].astype(str).tolist(), out_dir / AUDIO_DIR, audio)
    data = page_data(curated_set, sources, limit, right, start_seconds,
                     None if windows is None else windows.window_seconds, title)
    page = out_dir / PAGE_FILE
    page.write_text(render_page(data), encoding="utf-8")
    return page
