"""The claims of a finished study under both bootstraps: recordings resampled (as the study does)
and clips resampled as if each were its own recording (as it did before). Prints each claim's two
intervals and lists the verdicts that differ, from the run's results.csv and predictions.csv alone.

    python docs/clip_vs_recording.py runs/world
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from clapcurate.study.outputs import load_results
from clapcurate.study.tables import claim_rows


def both_bootstraps(out: Path) -> pd.DataFrame:
    """claims.csv's rows computed twice: `*_recordings` (the study's) and `*_clips`."""
    results = load_results(out)
    low = next((kind for kind in results["teacher"].unique() if kind != "full"), "")
    tasks = list(dict.fromkeys(results["benchmark"]))
    by_recording = claim_rows(results, low, tasks)
    by_clip = claim_rows(results.assign(recordings=results["clip_ids"]), low, tasks)
    keys = ["claim", "teacher", "model", "baseline", "target_norm", "benchmark"]
    return by_recording.merge(by_clip, on=keys + ["difference", "seeds", "seed_differences"],
                              suffixes=("_recordings", "_clips"))


def main(out: str) -> None:
    claims = both_bootstraps(Path(out))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 60)
    for column in ("difference", "low_recordings", "high_recordings", "low_clips", "high_clips"):
        claims[column] = claims[column].map(lambda value: f"{value:+.1f}")
    shown = claims[["claim", "teacher", "target_norm", "benchmark", "difference", "low_recordings",
                    "high_recordings", "verdict_recordings", "low_clips", "high_clips", "verdict_clips"]]
    print(shown.to_string(index=False))
    changed = shown[shown["verdict_recordings"] != shown["verdict_clips"]]
    print(f"\n{len(changed)} of {len(shown)} verdicts differ between the two bootstraps")
    if len(changed):
        print(changed.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/world")
