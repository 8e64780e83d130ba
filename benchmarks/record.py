"""One figure of a benchmark, as `make bench` collects it: each benchmark prints its figures and
also hands each to `record`, which appends it as one JSON line to the file named by the
environment variable CLAPCURATE_BENCH_RECORD (set by `benchmarks/suite.py`; unset, it does
nothing)."""

from __future__ import annotations

import json
import os

RECORD_VARIABLE = "CLAPCURATE_BENCH_RECORD"


def record(what: str, figure: float, unit: str, baseline: float | None = None, baseline_what: str = "",
           target: str = "", higher_is_better: bool = True, threshold: float | None = None) -> None:
    """`figure` (in `unit`) of `what`; `baseline` is the same quantity of the bare reference
    measured in the same process (`baseline_what`), so the ratio is figure / baseline. `threshold`:
    the ratio (or, without a baseline, the figure) the target asks for, at least when
    `higher_is_better`, at most otherwise; `target` says it in words."""
    path = os.environ.get(RECORD_VARIABLE)
    if not path:
        return
    row = {"what": what, "figure": float(figure), "unit": unit, "target": target,
           "baseline": None if baseline is None else float(baseline), "baseline_what": baseline_what,
           "higher_is_better": higher_is_better, "threshold": threshold}
    with open(path, "a") as file:
        file.write(json.dumps(row) + "\n")
