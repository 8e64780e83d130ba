"""The report's plots: accuracy per model, gains over the teacher with their intervals, and the
students' validation curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .paper import BENCHMARK_TITLES, BENCHMARKS
from .statistics import paired_interval


def evaluated_benchmarks(results: pd.DataFrame) -> list[str]:
    """The benchmarks `results` holds: the paper's in its order, then any others by name."""
    present = set(results["benchmark"])
    return [bench for bench in BENCHMARKS if bench in present] + sorted(present - set(BENCHMARKS))


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def plot_accuracy(results: pd.DataFrame, path: Path) -> list[str]:
    """Bar chart of accuracy per model, one panel per evaluated (configured) benchmark, with
    error bars (std over seeds); returns the benchmarks of the panels."""
    plt = _pyplot()

    benchmarks = evaluated_benchmarks(results)
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 4), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        sub = results[results["benchmark"] == bench]
        stats = sub.groupby(["teacher", "model"], sort=False)["accuracy"].agg(["mean", "std"]).reset_index()
        names = [f"{t}: {m}" for t, m in zip(stats["teacher"], stats["model"])]
        ax.barh(names, stats["mean"] * 100, xerr=stats["std"].fillna(0) * 100, color="tab:blue")
        ax.invert_yaxis()
        ax.set_title(BENCHMARK_TITLES.get(bench, bench))
        ax.set_xlabel("zero-shot accuracy (%)")
    _save(fig, path)
    return benchmarks


def plot_gains(results: pd.DataFrame, path: Path) -> bool:
    """Each student's gain over its own teacher (points) with its 95% interval, one panel per
    benchmark that was evaluated; False (nothing drawn) without per-clip scores."""
    plt = _pyplot()

    benches = evaluated_benchmarks(results)
    students = results[results["model"] != "teacher"][["teacher", "model"]].drop_duplicates()
    panels = {bench: [(f"{t}: {m}", paired_interval(results, t, m, "teacher", bench))
                      for t, m in students.itertuples(index=False)] for bench in benches}
    panels = {bench: [(name, i) for name, i in rows if i is not None] for bench, rows in panels.items()}
    if not any(panels.values()):
        return False
    height = max(3.0, 0.3 * max(len(rows) for rows in panels.values()) + 1.2)
    fig, axes = plt.subplots(1, len(benches), figsize=(5 * len(benches), height), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        rows = panels[bench]
        y = np.arange(len(rows))
        colors = ["tab:gray" if i.holds_zero else ("tab:green" if i.difference > 0 else "tab:red") for _, i in rows]
        ax.hlines(y, [i.low for _, i in rows], [i.high for _, i in rows], colors=colors, linewidth=2)
        ax.scatter([i.difference for _, i in rows], y, c=colors, zorder=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [name for name, _ in rows])
        ax.invert_yaxis()
        ax.set_title(BENCHMARK_TITLES.get(bench, bench))
        ax.set_xlabel("gain over its teacher (points, 95% interval)")
    _save(fig, path)
    return True


def plot_validation_curves(curves: dict[str, pd.DataFrame], path: Path) -> bool:
    """Validation loss against step of each student run (`metrics.csv`); False when none has one."""
    plt = _pyplot()

    curves = {name: frame.dropna(subset=["val_loss"]) for name, frame in curves.items()
              if "val_loss" in frame and frame["val_loss"].notna().any()}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, frame in curves.items():
        ax.plot(frame["step"], frame["val_loss"], marker=".", linewidth=0.8, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (held-out training pairs)")
    if len(curves) <= 12:
        ax.legend(fontsize="x-small")
    _save(fig, path)
    return True
