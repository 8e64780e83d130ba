"""The study's statistics: mean ± std over seeds, paired differences between two models of the
same seeds with their 95% bootstrap intervals (`clapcurate.intervals`), and the verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..intervals import paired_bootstrap


def mean_std(values, signed: bool = False) -> str:
    """`mean ± std` (sample std over seeds) of finite values, one decimal; `-` when none."""
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if values.size == 0:
        return "-"
    mean = f"{values.mean():+.1f}" if signed else f"{values.mean():.1f}"
    return mean if values.size == 1 else f"{mean} ± {values.std(ddof=1):.1f}"


POOLED = "all (pooled clips)"


def paired_interval(results: pd.DataFrame, teacher: str, method: str, baseline: str, bench: str):
    """`method` minus `baseline` on `bench` (points) as an `Interval` (95% paired bootstrap over
    clips and seeds); `bench` = `POOLED` pools the clips of every benchmark both were scored on.
    None without per-clip scores of both on the same clips (older runs)."""
    sub = results[(results["teacher"] == teacher)]
    benches = sorted(set(sub["benchmark"])) if bench == POOLED else [bench]
    a = sub[sub["method"] == method]
    b = sub[sub["method"] == baseline]
    pairs = [(a[a["benchmark"] == x].set_index("seed"), b[b["benchmark"] == x].set_index("seed")) for x in benches]
    pairs = [(x, y) for x, y in pairs if len(x) and len(y)]
    seeds = sorted(set.intersection(*(set(x.index) & set(y.index) for x, y in pairs))) if pairs else []
    paired = seeds and "correct" in sub and all(
        isinstance(x.at[s, "correct"], str) and isinstance(y.at[s, "correct"], str) and x.at[s, "clips"] == y.at[s, "clips"]
        for x, y in pairs for s in seeds)
    if not paired:
        return None
    scores = [np.array([[c == "1" for x in frames for c in x.at[s, "correct"]] for s in seeds])
              for frames in zip(*pairs)]
    return paired_bootstrap(*scores)


def paired_difference(results: pd.DataFrame, teacher: str, method: str, baseline: str, bench: str) -> str:
    """`paired_interval` as text, "within noise" when it holds 0; without per-clip scores, mean ±
    std of the per-seed differences."""
    interval = paired_interval(results, teacher, method, baseline, bench)
    if interval is not None:
        return str(interval)
    sub = results[(results["teacher"] == teacher) & (results["benchmark"] == bench)]
    a = sub[sub["method"] == method].set_index("seed")["accuracy"]
    b = sub[sub["method"] == baseline].set_index("seed")["accuracy"]
    seeds = sorted(set(a.index) & set(b.index))
    return mean_std([100 * (a[s] - b[s]) for s in seeds], signed=True) if seeds else "-"


def verdict(difference: str) -> str:
    """replicated / not replicated / within noise, from a `paired_difference` cell."""
    if "[" not in difference:
        return "-"
    if "within noise" in difference:
        return "within noise"
    return "replicated" if difference.startswith("+") else "not replicated"


def clip_scores(results: pd.DataFrame, teacher: str, method: str, bench: str) -> np.ndarray | None:
    """0/1 scores [seeds, clips] of one model on one benchmark, seeds in order; None without them."""
    sub = results[(results["teacher"] == teacher) & (results["method"] == method) & (results["benchmark"] == bench)]
    if not len(sub) or "correct" not in sub or not all(isinstance(c, str) for c in sub["correct"]):
        return None
    return np.array([[c == "1" for c in text] for text in sub.sort_values("seed")["correct"]])
