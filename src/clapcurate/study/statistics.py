"""The study's statistics: mean ± std over seeds, and paired differences between two models of the
same seeds on the same clips with their 95% intervals from `clapcurate.intervals`: recordings
resampled within each benchmark (the clips of one recording together; a clip without a recording
id is its own recording) and, with several seeds, the seeds. A pooled difference is the mean of
the per-benchmark differences. Verdicts are read from the intervals' numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..intervals import Interval, Scores, bracket_position, paired_bootstrap, pooled_paired_bootstrap

POOLED = "all (mean of benchmarks)"
FEW_SEEDS = 5  # up to this many seeds, each seed's difference is shown beside the interval


def mean_std(values, signed: bool = False) -> str:
    """`mean ± std` (sample std over seeds) of finite values, one decimal; `-` when none."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if values.size == 0:
        return "-"
    mean = f"{values.mean():+.1f}" if signed else f"{values.mean():.1f}"
    return mean if values.size == 1 else f"{mean} ± {values.std(ddof=1):.1f}"


def model_scores(results: pd.DataFrame, teacher: str, models, bench: str) -> tuple[Scores, list] | None:
    """Per-clip outcomes of `models` (names in `results["model"]`) of one teacher on `bench`, over
    the seeds all of them were evaluated with, as `Scores` (with each clip's recording) and those
    seeds; None when one of them lacks an evaluation there or they were scored on other clips.
    `results` holds per row `outcomes` (0/1 per clip), `clip_ids` and `recordings` (`outputs.load_results`)."""
    sub = results[(results["teacher"] == teacher) & (results["benchmark"] == bench)]
    if "outcomes" not in sub:
        return None
    frames = [sub[sub["model"] == model].set_index("seed") for model in models]
    seeds = sorted(set.intersection(*(set(frame.index) for frame in frames)))
    if not seeds:
        return None
    clips = frames[0].at[seeds[0], "clip_ids"]
    if any(not np.array_equal(frame.at[seed, "clip_ids"], clips) for frame in frames for seed in seeds):
        return None
    return Scores.of(*([frame.at[seed, "outcomes"] for seed in seeds] for frame in frames),
                     recordings=frames[0].at[seeds[0], "recordings"]), seeds


def _benchmarks(results: pd.DataFrame, bench: str) -> list[str]:
    return sorted(set(results["benchmark"])) if bench == POOLED else [bench]


def paired_interval(results: pd.DataFrame, teacher: str, model: str, baseline: str, bench: str) -> Interval | None:
    """`model` minus `baseline` on `bench` (points) with its 95% paired bootstrap interval over
    recordings and seeds; `bench` = `POOLED`: the mean of the differences on every benchmark both
    were scored on, each benchmark resampled on its own. None without evaluations of both."""
    scored = [found[0] for b in _benchmarks(results, bench)
              if (found := model_scores(results, teacher, (model, baseline), b)) is not None]
    if not scored:
        return None
    if bench == POOLED:
        return pooled_paired_bootstrap(scored)
    return paired_bootstrap(scored[0].correct[0], scored[0].correct[1], recordings=scored[0].recordings)


def seed_differences(results: pd.DataFrame, teacher: str, model: str, baseline: str, bench: str) -> list[float]:
    """`model` minus `baseline` (points) of each seed both were evaluated with, in seed order
    (`POOLED`: the mean over the benchmarks of each seed's differences)."""
    per_bench = [dict(zip(found[1], 100 * (found[0].correct[0].mean(axis=1) - found[0].correct[1].mean(axis=1))))
                 for b in _benchmarks(results, bench)
                 if (found := model_scores(results, teacher, (model, baseline), b)) is not None]
    seeds = sorted(set.intersection(*(set(d) for d in per_bench))) if per_bench else []
    return [float(np.mean([d[seed] for d in per_bench])) for seed in seeds]


def difference_text(interval: Interval | None, per_seed: list[float]) -> str:
    """An interval as the report shows it, each seed's difference beside it when there are 2 to
    `FEW_SEEDS` seeds; `-` without one."""
    if interval is None:
        return "-"
    seeds = f" (seeds: {', '.join(f'{d:+.1f}' for d in per_seed)})" if 1 < len(per_seed) <= FEW_SEEDS else ""
    return f"{interval}{seeds}"


def paired_difference(results: pd.DataFrame, teacher: str, model: str, baseline: str, bench: str) -> str:
    """`paired_interval` as the report shows it (`difference_text`); "within noise" when it holds 0."""
    return difference_text(paired_interval(results, teacher, model, baseline, bench),
                           seed_differences(results, teacher, model, baseline, bench))


def verdict(interval: Interval | None) -> str:
    """replicated (the interval lies above 0), not replicated (below), within noise (holds 0);
    `-` without an interval."""
    if interval is None:
        return "-"
    if interval.holds_zero:
        return "within noise"
    return "replicated" if interval.low > 0 else "not replicated"


def position(results: pd.DataFrame, teacher: str, model: str, bench: str) -> tuple[float, float, float] | None:
    """Where `model` sits between its shuffled (0) and oracle (1) brackets on `bench`, with its 95%
    interval (`intervals.bracket_position`); None without the three evaluations on the same clips."""
    found = model_scores(results, teacher, (model, f"{model} oracle", f"{model} shuffled"), bench)
    if found is None:
        return None
    scores = found[0]
    return bracket_position(*scores.correct, recordings=scores.recordings)
