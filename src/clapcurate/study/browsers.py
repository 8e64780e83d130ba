"""One Improvement-Set browser per curated set of the study (`clapcurate.browse`), each pair
marked right or wrong where the embedded world's ground truth is known."""

from __future__ import annotations

from pathlib import Path

from ..browse import DEFAULT_LIMIT, read_curated_set, write_browser


def write_browsers(sets: dict[str, str], train_manifest: str, truth=None,
                   limit: int = DEFAULT_LIMIT) -> dict[str, Path]:
    """Write `browser/index.html` beside each curated manifest of `sets` ({"DU": path,
    "ADS/esc50": path, ...}); `truth` is a `WorldTruth` or None. Returns the pages by set."""
    pages = {}
    for key, manifest in sets.items():
        _, _, benchmark = key.partition("/")
        right = None
        if truth is not None:
            right = truth.pair_is_right(read_curated_set(manifest).rows, train_manifest, benchmark or None)
        pages[key] = write_browser(manifest, limit=limit, right=right)
    return pages
