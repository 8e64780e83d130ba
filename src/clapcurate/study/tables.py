"""The report's tables, each a DataFrame read from the study's results, and their markdown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..intervals import Interval
from .paper import BENCHMARK_TITLES, BENCHMARKS, CLAIMS, PAPER_TABLE1, SIDE_BY_SIDE_NORMS, ReportedTask
from .statistics import (
    POOLED,
    difference_text,
    mean_std,
    paired_difference,
    paired_interval,
    position,
    seed_differences,
    verdict,
)


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown pipe table (cells as `str` gives them)."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *lines])


def _titles(tasks: list[ReportedTask]) -> dict[str, str]:
    return {task.name: task.title for task in tasks}


def accuracy_table(results: pd.DataFrame, teacher: str, rows, paper: dict, tasks: list[ReportedTask]) -> pd.DataFrame:
    """Mean ± std of accuracy (%) over seeds per model and task, the paper's figure beside each
    task that is one of the paper's benchmarks, and a last row of each task's chance level."""
    sub = results[results["teacher"] == teacher]
    table = []
    for model in rows:
        line = {"model": model}
        for task in tasks:
            acc = sub[(sub["model"] == model) & (sub["benchmark"] == task.name)]["accuracy"] * 100
            line[task.title] = mean_std(acc)
            if paper and task.paper is not None:
                ref = paper.get(model)
                line[f"paper {task.title}"] = f"{ref[BENCHMARKS.index(task.paper)]:.1f}" if ref else "-"
        table.append(line)
    chance = {"model": "chance (1 / classes)"}
    for task in tasks:
        chance[task.title] = f"{task.chance:.1f}"
        if paper and task.paper is not None:
            chance[f"paper {task.title}"] = f"{task.chance:.1f}"  # the same classes
    return pd.DataFrame(table + [chance])


def gain_table(results: pd.DataFrame, teacher: str, rows, tasks: list[ReportedTask], baseline: str = "teacher",
               pooled: bool = False) -> pd.DataFrame:
    """Each student's gain over `baseline` (its own teacher) of the same seed: `paired_difference`
    per task, and with `pooled` the mean of the per-task differences."""
    titles = _titles(tasks)
    table = []
    for model in rows:
        if model == baseline:
            continue
        line = {"model": model}
        for bench in [*titles, *((POOLED,) if pooled else ())]:
            line[titles.get(bench, bench)] = paired_difference(results, teacher, model, baseline, bench)
        table.append(line)
    return pd.DataFrame(table)


def model_named(results: pd.DataFrame, teacher: str, student: str, target_norm: str) -> str | None:
    """The name of the model of `teacher` that is the paper's `student` at the main length, not a
    bracket, with soft labels under `target_norm` (when it has soft labels): the main table's
    student, else the variant with the main student's teacher targets; None when none ran."""
    rows = results[(results["teacher"] == teacher) & (results["student"] == student) & (results["bracket"] == "")
                   & results["table"].isin(["main", "variant"])]
    main = rows[rows["table"] == "main"]
    rows = rows[~rows["soft_labels"] | (rows["target_norm"] == target_norm)]
    if len(main):
        rows = rows[(rows["table"] == "main") | (rows["teacher_targets"] == main["teacher_targets"].iloc[0])]
    rows = rows.sort_values("table", key=lambda t: t != "main", kind="stable")
    return rows["model"].iloc[0] if len(rows) else None


def claim_rows(results: pd.DataFrame, low_resource: str, tasks: list[str]) -> pd.DataFrame:
    """Each claim of the paper (`paper.CLAIMS`) on each target task (names in `tasks`) and on their mean (`POOLED`),
    under each target normalisation its "+SL" students ran with (the configured one first, then
    the paper's and the default, `paper.SIDE_BY_SIDE_NORMS`): the models compared, the difference
    in points, its 95% interval, each seed's difference, the verdict, and the benchmark's clips and
    recordings (the resampled units). The rows of claims.csv."""
    out = []
    for claim, teacher, student, baseline in CLAIMS:
        teacher = low_resource if teacher == "low" else teacher
        main = results[(results["teacher"] == teacher) & (results["student"] == student) & (results["table"] == "main")]
        if not len(main):
            continue
        norms = list(dict.fromkeys([main["target_norm"].iloc[0], *SIDE_BY_SIDE_NORMS]))
        for norm in norms:
            model, base = model_named(results, teacher, student, norm), model_named(results, teacher, baseline, norm)
            if model is None or base is None:
                continue
            for bench in (*tasks, POOLED):
                interval = paired_interval(results, teacher, model, base, bench)
                if interval is None:
                    continue
                per_seed = seed_differences(results, teacher, model, base, bench)
                out.append({"claim": claim, "teacher": teacher, "model": model, "baseline": base,
                            "target_norm": norm, "benchmark": bench, "difference": interval.difference,
                            "low": interval.low, "high": interval.high, "seeds": len(per_seed),
                            "seed_differences": " ".join(f"{d:+.2f}" for d in per_seed),
                            "verdict": verdict(interval)})
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)


CLAIM_COLUMNS = ["claim", "teacher", "model", "baseline", "target_norm", "benchmark", "difference", "low", "high",
                 "seeds", "seed_differences", "verdict"]


def claims_table(claims: pd.DataFrame, tasks: list[ReportedTask]) -> pd.DataFrame:
    """The claims (`claim_rows`, or claims.csv read back) as the report shows them: one row per
    claim and target normalisation of its "+SL" students, one column per benchmark and their mean,
    each cell the difference with its interval (and each seed's difference) and the verdict."""
    titles = _titles(tasks)
    table = {}
    for row in claims.itertuples(index=False):
        key = (row.claim, row.target_norm)
        line = table.setdefault(key, {"claim": row.claim, "+SL targets": row.target_norm or "-",
                                      **{titles.get(b, b): "-" for b in (*titles, POOLED)}})
        interval = Interval(row.difference, row.low, row.high)
        per_seed = [float(d) for d in str(row.seed_differences).split()] if row.seeds else []
        shown = difference_text(interval, per_seed).replace(" within noise", "")
        line[titles.get(row.benchmark, row.benchmark)] = f"{shown}: {row.verdict}"
    return pd.DataFrame(list(table.values()))


def counts_table(counts: pd.DataFrame, teacher: str, tasks: list[ReportedTask]) -> pd.DataFrame:
    """Table 1: curated pairs (mean over seeds), the paper's counts beside ours; when a per-clip
    cap (`max_captions_per_clip`) kept fewer pairs than reached sigma, a row of the pairs >= sigma
    before the cap too (the paper's DU keeps every caption of a clip)."""
    sub = counts[counts["teacher"] == teacher]

    def mean_count(method, bench, column="pairs"):
        if column not in sub.columns:
            return "-"
        values = sub[(sub["method"] == method) & (sub["benchmark"] == bench)][column].dropna()
        return f"{values.mean():,.0f}" if len(values) else "-"

    cells = [("DU", "DU", "all", "all")] + [(f"{task.title} {method}", method, task.name, task.paper)
                                            for task in tasks for method in ("DS", "ADS")]
    kept = {key: mean_count(method, bench) for key, method, bench, _ in cells}
    before_cap = {key: mean_count(method, bench, "pairs_at_sigma") for key, method, bench, _ in cells}
    paper = {"DU": f"{PAPER_TABLE1['DU']:.1e}"}
    paper.update({key: f"{PAPER_TABLE1[method][bench]:.1e}" if bench is not None else "-"
                  for key, method, _, bench in cells[1:]})
    rows = [{"": "ours", **kept}]
    if any(before_cap[key] not in ("-", kept[key]) for key in kept):
        rows.append({"": "ours, >= sigma before the per-clip cap", **before_cap})
    if any(task.paper is not None for task in tasks):  # the paper's counts only beside its own benchmarks
        rows.append({"": "paper", **paper})
    return pd.DataFrame(rows)


def precision_table(counts: pd.DataFrame, teacher: str) -> pd.DataFrame:
    """Each curated set's precision by the ground truth beside the tried estimate without labels
    (`curate.false_discovery_precision`) and its error (estimated - true, points)."""
    sub = counts[(counts["teacher"] == teacher) & counts["precision"].notna()]
    estimated = sub["tried_estimate"] if "tried_estimate" in sub else pd.Series(np.nan, index=sub.index)
    sub = sub.assign(estimated=estimated.astype(float))
    table = []
    for (method, bench), rows in sub.groupby(["method", "benchmark"], sort=True):
        table.append({"set": method, "benchmark": bench, "pairs": f"{rows['pairs'].mean():,.0f}",
                      "precision %": mean_std(rows["precision"] * 100),
                      "tried estimate %": mean_std(rows["estimated"] * 100),
                      "error (points)": mean_std((rows["estimated"] - rows["precision"]) * 100, signed=True)})
    return pd.DataFrame(table)


def estimate_error(counts: pd.DataFrame) -> tuple[float, float, int]:
    """(mean absolute error, largest absolute error, sets) of the curated sets' tried estimate
    against their precision by the ground truth, in points, over every set and teacher (NaNs when
    no set has both)."""
    if "tried_estimate" not in counts:
        return np.nan, np.nan, 0
    both = counts[counts["precision"].notna() & counts["tried_estimate"].notna()]
    errors = (both["tried_estimate"].astype(float) - both["precision"]).abs() * 100
    return (float(errors.mean()), float(errors.max()), len(errors)) if len(errors) else (np.nan, np.nan, 0)


def marked_precision_table(counts: pd.DataFrame) -> pd.DataFrame:
    """The curated sets with a hand-marked sample (`marks`): the marks, the sample's precision
    (right / (right + wrong)) with its 95% Wilson interval and, where known, the ground truth's."""
    if "marked_precision" not in counts:
        return pd.DataFrame()
    table = []
    for row in counts[counts["marked_right"].notna()].itertuples():
        marked = f"{row.marked_right:.0f} right, {row.marked_wrong:.0f} wrong, {row.marked_unsure:.0f} unsure"
        sample = ("-" if np.isnan(row.marked_precision) else
                  f"{100 * row.marked_precision:.1f} [{100 * row.marked_low:.1f}, {100 * row.marked_high:.1f}]")
        table.append({"set": row.folder, "pairs": f"{row.pairs:,}", "marked": marked,
                      "sample precision % [95% Wilson]": sample,
                      "ground truth %": "" if np.isnan(row.precision) else f"{100 * row.precision:.1f}"})
    return pd.DataFrame(table)


def rare_frequent_table(per_class: pd.DataFrame, teacher: str, rows, tasks: list[ReportedTask]) -> pd.DataFrame:
    """Mean per-class accuracy on benchmark classes rare versus frequent in the caption corpus."""
    sub = per_class[per_class["teacher"] == teacher]
    table = []
    for model in rows:
        line = {"model": model}
        for task in tasks:
            for group in ("rare", "frequent"):
                acc = sub[(sub["model"] == model) & (sub["benchmark"] == task.name) & (sub["group"] == group)]
                by_seed = acc.groupby("seed")["accuracy"].mean() * 100
                line[f"{task.title} {group}"] = mean_std(by_seed)
        table.append(line)
    return pd.DataFrame(table)


def bracket_table(results: pd.DataFrame, brackets: pd.DataFrame, tasks: list[ReportedTask]) -> pd.DataFrame:
    """For each bracketed student: its gain, the oracle's and the shuffled student's over the
    teacher, the oracle against the SL control, and where the curated student sits,
    (curated - shuffled) / (oracle - shuffled) with its 95% interval."""
    both = pd.concat([results, brackets], ignore_index=True)
    table = []
    keys = brackets[["teacher", "model", "benchmark"]].drop_duplicates()
    for teacher, arm, bench in keys.itertuples(index=False):
        model, _, kind = arm.rpartition(" ")
        if kind != "oracle":
            continue
        line = {"teacher": teacher, "model": model, "benchmark": _titles(tasks).get(bench, bench)}
        for name, compared in (("curated", model), ("oracle", f"{model} oracle"), ("shuffled", f"{model} shuffled")):
            line[f"{name} gain"] = paired_difference(both, teacher, compared, "teacher", bench)
        has_sl = ((both["teacher"] == teacher) & (both["model"] == "SL")).any()
        line["oracle - SL"] = paired_difference(both, teacher, f"{model} oracle", "SL", bench) if has_sl else "-"
        found = position(both, teacher, model, bench)
        if found is None:
            line["position"] = "-"
        else:
            point, low, high = found
            line["position"] = ("n/a (the oracle does not beat the shuffled pairs)" if np.isnan(point)
                                else f"{point:.2f} [{low:.2f}, {high:.2f}]")
        table.append(line)
    return pd.DataFrame(table)


def length_table(results: pd.DataFrame, lengths: pd.DataFrame, brackets: pd.DataFrame | None,
                 base_steps: int) -> pd.DataFrame:
    """Accuracy of the length students (`model @steps`) beside the main students (`base_steps`)
    of the same benchmark, each as its gain over the teacher with the 95% interval."""
    both = pd.concat([results, lengths, brackets if brackets is not None else None], ignore_index=True)
    bench = lengths["benchmark"].iloc[0]
    names = list(dict.fromkeys(m.rsplit(" @", 1)[0] for m in lengths["model"]))
    steps = sorted({int(m.rsplit(" @", 1)[1]) for m in lengths["model"]} | {base_steps})
    table = []
    for name in names:
        line = {"model": name}
        for count in steps:
            line[f"{count} steps"] = paired_difference(both, "full", _at_length(both, name, count, base_steps),
                                                       "teacher", bench)
        table.append(line)
    return pd.DataFrame(table)


def limits_table(results: pd.DataFrame, brackets: pd.DataFrame | None, lengths: pd.DataFrame | None,
                 ablations: pd.DataFrame | None, counts: pd.DataFrame, peakedness: dict | None,
                 base_steps: int | None, tasks: list[ReportedTask]) -> pd.DataFrame:
    """What limits the method on this data, one row per candidate cause, each read from the
    measured comparisons (paired differences in points with their 95% intervals):
    - the world: do right pool pairs (the oracle) teach more than the teacher's own pairs (SL)?
    - curation precision: how right the curated pairs are, and where the curated student sits
      between the shuffled and the oracle student;
    - training length: does ADS+SL (and the oracle) pull away from SL when students train longer?
    - soft targets: do targets put more mass per item on alike clips than on the rest, and does
      another normalisation beat the configured one?"""
    titles = _titles(tasks)
    rows = []
    both = pd.concat([results, brackets, lengths], ignore_index=True)
    brackets = brackets if brackets is not None and len(brackets) else None
    if brackets is not None:
        keys = [(t, arm.rpartition(" ")[0], b) for t, arm, b in
                brackets[["teacher", "model", "benchmark"]].drop_duplicates().itertuples(index=False)
                if arm.endswith(" oracle")]
        gaps = [(model, bench, paired_interval(both, teacher, f"{model} oracle", "SL", bench))
                for teacher, model, bench in keys]
        gaps = [(m, b, i) for m, b, i in gaps if i is not None]
        above = [(m, b, i) for m, b, i in gaps if i.low > 0]
        reading = (f"right pool pairs teach more than SL in {len(above)} of {len(gaps)} brackets"
                   + ("" if above else ": the world does not model the paper's premise"))
        rows.append({"cause": "the world (is there anything in the pool to learn?)",
                     "measured": "; ".join(f"{m} oracle - SL, {titles.get(b, b)}: {i}" for m, b, i in gaps),
                     "reading": reading})
        positions = []
        for teacher, model, bench in keys:
            found = position(both, teacher, model, bench)
            if found is not None:
                point, low, high = found
                if not np.isnan(point):
                    positions.append((model if teacher == "full" else f"{model} ({teacher} teacher)",
                                      bench, point, low, high))
        precision = counts[(counts["teacher"] == "full") & counts["precision"].notna()] if "precision" in counts else counts[:0]
        by_set = precision.groupby("method")["precision"].mean() * 100
        measured = ", ".join(f"{name} precision {value:.0f}%" for name, value in by_set.items())
        if positions:
            measured += "; position " + ", ".join(f"{m} {titles.get(b, b)} {p:.2f} [{lo:.2f}, {hi:.2f}]"
                                                  for m, b, p, lo, hi in positions)
        below = [p for p in positions if p[4] < 1]
        reading = (f"curated students fall short of the oracle in {len(below)} of {len(positions)} brackets "
                   "with a defined position" if positions else
                   "no bracket where the oracle beats the shuffled pairs: precision cannot be read from them")
        rows.append({"cause": "curation precision", "measured": measured, "reading": reading})
    if lengths is not None and len(lengths) and base_steps:
        bench = lengths["benchmark"].iloc[0]
        steps = sorted({int(m.rsplit(" @", 1)[1]) for m in lengths["model"]} | {base_steps})

        measured, growing = [], []
        for model in ("ADS+SL", "ADS oracle"):
            cells = [(count, paired_interval(both, "full", _at_length(both, model, count, base_steps),
                                             _at_length(both, "SL", count, base_steps), bench))
                     for count in steps]
            cells = [(c, i) for c, i in cells if i is not None]
            if len(cells) > 1:
                measured.append(f"{model} - SL on {titles.get(bench, bench)}: "
                                + ", ".join(f"{c} steps {i}" for c, i in cells))
                growing.append((model, cells[-1][1].difference - cells[0][1].difference))
        if measured:
            rows.append({"cause": "training length", "measured": "; ".join(measured),
                         "reading": ", ".join(f"{m} - SL moves by {g:+.1f} points from {steps[0]} to {steps[-1]} steps"
                                              for m, g in growing)})
    soft = []
    if peakedness:
        for row in peakedness["rows"]:
            share = peakedness["alike_share"]
            alike, other = row["alike items"] / max(share, 1e-9), row["other items"] / max(1 - share, 1e-9)
            soft.append(f"{row['target_norm']}: {alike / max(other, 1e-12):.1f}x the mass per alike item")
    readings = []
    if ablations is not None and len(ablations):
        variants = [m for m in dict.fromkeys(ablations["model"]) if m != "ADS+SL"]
        for variant in variants:
            cells = [(b, paired_interval(ablations, "full", variant, "ADS+SL", b)) for b in (*titles, POOLED)]
            cells = [(titles.get(b, b), i) for b, i in cells if i is not None]
            if not cells:
                continue
            soft.append(f"{variant} - ADS+SL: " + ", ".join(f"{b} {i}" for b, i in cells))
            better = [b for b, i in cells if i.low > 0]
            worse = [b for b, i in cells if i.high < 0]
            readings.append(f"{variant}: " + (f"better on {', '.join(better)}" if better else "")
                            + ("; " if better and worse else "") + (f"worse on {', '.join(worse)}" if worse else "")
                            + ("" if better or worse else "within noise everywhere"))
    if soft:
        rows.append({"cause": "soft targets", "measured": "; ".join(soft),
                     "reading": "; ".join(readings) if readings else "-"})
    return pd.DataFrame(rows, columns=["cause", "measured", "reading"])


def _at_length(results: pd.DataFrame, name: str, count: int, base_steps: int) -> str:
    """The model name of student `name` trained `count` steps: the main (or bracket) student at
    the configured length, else the length student `name @count`."""
    if count == base_steps and (results["model"] == name).any():
        return name
    return f"{name} @{count}"
