"""The study's report (report.md and report.html): Table 1 (curated pair counts), Table 2 (students
of the full teacher), Table 3 (students of the 10% teacher), gains over the teacher, the paper's
claims, brackets, training lengths, what limits the method, rare versus frequent classes,
curated-set precision, variants and stage timings, with the paper's published numbers beside ours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import plot_accuracy, plot_gains, plot_validation_curves
from .paper import PAPER_TABLE2, PAPER_TABLE3, PAPER_TARGET_NORM, TABLE2_ROWS, TABLE3_ROWS, ReportedTask
from .rendering import write_report_html
from .statistics import FEW_SEEDS
from .tables import (
    accuracy_table,
    bracket_table,
    claims_table,
    counts_table,
    gain_table,
    length_table,
    limits_table,
    markdown_table,
    estimate_error,
    marked_precision_table,
    precision_table,
    rare_frequent_table,
)


def write_report(out_dir: Path, evaluated: pd.DataFrame, claims: pd.DataFrame, recordings: pd.DataFrame,
                 counts: pd.DataFrame, per_class: pd.DataFrame, timings: dict[str, float], header: str,
                 notes: list[str], tasks: list[ReportedTask], low_resource: str = "10%",
                 validation_curves: dict[str, pd.DataFrame] | None = None,
                 base_steps: int | None = None, peakedness: dict | None = None,
                 selection_section: list[str] = ()) -> str:
    """Write report.md (with the plots of accuracy, gains with intervals and the students'
    validation curves) and report.html, and return the markdown text. `evaluated`: every evaluated
    model's results with their per-clip outcomes (`outputs.load_results`); `claims`: claims.csv;
    `recordings`: the tasks' clips and recordings (`outputs.recording_table`); `tasks`: the
    configured target tasks, the tables' columns (the paper's figures only beside the paper's own
    benchmarks); `low_resource`: the label of the teacher trained on a fraction of the pairs
    (`method.LowResource.label`)."""
    low = low_resource
    results = evaluated[evaluated["table"] == "main"]
    brackets = evaluated[evaluated["table"] == "bracket"]
    lengths = evaluated[evaluated["table"] == "length"]
    ablations = evaluated[(evaluated["table"] == "variant") & (evaluated["student"] == "ADS+SL")]
    if len(ablations):
        ablations = pd.concat([results[(results["teacher"] == "full") & (results["model"] == "ADS+SL")], ablations],
                              ignore_index=True)
    parts = [header]
    parts += ["Target tasks: " + "; ".join(
        f"{task.title} ({task.classes} classes, chance {task.chance:.1f}%"
        + (f", the paper's {task.paper} layout" if task.paper else ", not one of the paper's benchmarks") + ")"
        for task in tasks) + "."]
    parts += ["## Table 1: curated Improvement-Set pairs (full teacher)",
              markdown_table(counts_table(counts, "full", tasks))]
    if (counts["teacher"] == low).any():
        parts += [f"Curated pairs with the {low} teacher:", markdown_table(counts_table(counts, low, tasks))]
    parts += ["## Table 2: zero-shot accuracy (%), students of the full teacher",
              "DS and ADS students are trained per task and evaluated on their own task.",
              markdown_table(accuracy_table(results, "full", TABLE2_ROWS, PAPER_TABLE2, tasks)),
              "Gain over the teacher of the same seed (points, with the 95% paired-bootstrap interval over "
              "the task's recordings and the seeds; \"within noise\" when it holds 0):",
              markdown_table(gain_table(results, "full", TABLE2_ROWS, tasks))]
    if len(claims):
        seeds = sorted(set(evaluated["seed"]))
        parts += ["## The paper's claims on this data",
                  "Each claim as a paired difference in accuracy (points) with its 95% interval: replicated "
                  "when the interval lies above 0, not replicated when below, within noise when it holds 0. "
                  "The last column is the mean of the per-task differences (each task weighs the same). "
                  "\"+SL targets\" is the target normalisation of the claim's soft-label students "
                  f"(`{PAPER_TARGET_NORM}`: the paper's Eq. 3, unnormalised as the authors' code computes it); "
                  "a claim appears once per normalisation its students ran with. Every interval and verdict "
                  "is computed from `predictions.csv` and listed in `claims.csv`.",
                  "What the intervals cover: the choice of test clips, resampled by recording within each "
                  "benchmark (the clips of one recording drawn together), "
                  + (f"and the {len(seeds)} seeds (training randomness), resampled too"
                     + ("; each seed's own difference is shown beside the interval." if len(seeds) <= FEW_SEEDS
                        else ".") if len(seeds) > 1 else
                     "not training randomness: with one seed, a rerun with another seed can move a difference "
                     "beyond its interval."),
                  markdown_table(recordings),
                  markdown_table(claims_table(claims, tasks))]
    if (results["teacher"] == low).any():
        parts += [f"## Table 3: zero-shot accuracy (%), students of the {low} teacher",
                  markdown_table(accuracy_table(results, low, TABLE3_ROWS, PAPER_TABLE3, tasks)),
                  f"Gain over the {low} teacher of the same seed (points):",
                  markdown_table(gain_table(results, low, TABLE3_ROWS, tasks))]
    if brackets is not None and len(brackets):
        parts += ["## Brackets: oracle and shuffled pairs (embedded world)",
                  "Each bracketed student beside two more with the same replay, loss, steps and seed: one on as "
                  "many pool pairs that are all right by the ground truth (for the same captions where the pool "
                  "allows), one on the same clips and captions paired at random. Position = (curated - shuffled) "
                  "/ (oracle - shuffled) in accuracy, with its 95% interval; oracle - SL says whether right pool "
                  "pairs teach more than training on the teacher's own pairs.",
                  markdown_table(bracket_table(results, brackets, tasks))]
    parts += list(selection_section)  # `study.selections.write_comparison`
    if lengths is not None and len(lengths):
        bench = lengths["benchmark"].iloc[0]
        parts += [f"## Training length ({next((t.title for t in tasks if t.name == bench), bench)}, first seed)",
                  "Gain over the teacher (points, 95% interval over recordings) of the same students trained for "
                  "other numbers of steps; the main tables use the configured length.",
                  markdown_table(length_table(results, lengths, brackets, base_steps))]
    limits = limits_table(results, brackets if len(brackets) else None, lengths if len(lengths) else None,
                          ablations if len(ablations) else None, counts, peakedness, base_steps, tasks)
    if len(limits):
        parts += ["## What limits the method on this data",
                  "Each candidate cause read from the measured comparisons (points, 95% paired intervals).",
                  markdown_table(limits)]
    if peakedness:
        table = pd.DataFrame(peakedness["rows"])
        for column in ("self", "alike items", "other items"):
            table[column] = [f"{value:.3f}" for value in table[column]]
        parts += ["## How peaked the soft targets are",
                  f"Mean target mass per row of the full teacher's audio-audio targets on batches of its own "
                  f"training clips (beta as configured; softmax at the teacher's temperature, 1 / "
                  f"{peakedness['scale']:.1f}): on the clip itself, on the other clips of the batch that share a "
                  f"sound event with it ({100 * peakedness['alike_share']:.1f}% of them) and on the rest. Soft "
                  "labels can only say \"these clips are alike\" when alike items get more than their share.",
                  markdown_table(table)]
    if ablations is not None and len(ablations):
        names = list(dict.fromkeys(ablations["model"]))
        parts += ["## ADS+SL variants (full teacher): soft-target normalisation and teacher targets",
                  markdown_table(accuracy_table(ablations, "full", names, {}, tasks)),
                  "Each variant minus the configured ADS+SL of the same seed (points, 95% interval; the last "
                  "column is the mean of the per-task differences):",
                  markdown_table(gain_table(ablations, "full", names, tasks, baseline="ADS+SL", pooled=True))]
    if len(per_class):
        parts += ["## Rare versus frequent classes (mean per-class accuracy %)",
                  "A benchmark class is rare when its sound is among the least captioned half of the "
                  "classes in the teacher's caption corpus.",
                  markdown_table(rare_frequent_table(per_class, "full", TABLE2_ROWS, tasks))]
    if counts["precision"].notna().any():
        parts += ["## Precision of the curated sets (embedded world's ground truth)",
                  "A curated pool pair (DU, ADS) is right when the pool clip holds everything its caption "
                  "names: every sound event of the clip the caption was written for, and that clip's "
                  "scene when the caption names the place. A DS pair is right when its clip holds the "
                  "sound of the benchmark class its caption was matched to. The tried estimate uses no "
                  "label (the teacher's held-out mismatched pairs as the null distribution of a "
                  "false-discovery rate, `curate.false_discovery_precision`); curation does not report it, "
                  "as it missed by more than 10 points when measured; `teacher_reference.png` beside each "
                  "set shows the teacher's matched and mismatched pairs and the search's similarities. "
                  "DS sets (text-text similarities) have none.",
                  markdown_table(precision_table(counts, "full"))]
        mean_error, worst, n_sets = estimate_error(counts)
        if n_sets:
            parts.append(f"The tried estimate against the ground truth over {n_sets} sets and every teacher: "
                         f"mean absolute error {mean_error:.1f} points, largest {worst:.1f}.")
        if (counts["teacher"] == low).any():
            parts += [f"With the {low} teacher:", markdown_table(precision_table(counts, low))]
    marked = marked_precision_table(counts)
    if len(marked):
        parts += ["## Precision of hand-marked samples",
                  "Pairs marked right, wrong or unsure by a listener in the set's browser (\"mark a random "
                  "sample\", the CSVs named by `marks`); the precision leaves unsure marks out.",
                  markdown_table(marked)]
    if "path" in counts:
        from ..browse import BROWSER_DIR, PAGE_FILE

        pages = [(r, Path(r.path).parent / BROWSER_DIR / PAGE_FILE) for r in counts.itertuples()
                 if Path(r.path).is_relative_to(out_dir)]
        parts += ["## Browse and listen to the curated sets",
                  "One page per Improvement-Set (open it in any browser, no server needed): the similarity "
                  "histogram with sigma, the counts a stricter sigma would keep, and every pair with its audio.",
                  "\n".join(f"- [{r.method} {r.benchmark} ({r.teacher}, seed {r.seed})]({page.relative_to(out_dir)})"
                            for r, page in pages if page.is_file())]
        links = [f"[{r.method} {r.benchmark} ({r.teacher}, seed {r.seed})]"
                 f"({Path(r.path).parent.relative_to(out_dir) / 'similarity_histogram.png'})"
                 for r in counts.itertuples() if Path(r.path).is_relative_to(out_dir)]
        parts += ["## Similarity histograms (threshold marked)", ", ".join(links)]
    parts += ["## Wall time per stage", markdown_table(pd.DataFrame(
        [{"stage": k, "seconds": f"{v:.1f}"} for k, v in timings.items()]))]
    if notes:
        parts += ["## Notes", "\n".join(f"- {n}" for n in notes)]
    parts += ["![accuracy per model](accuracy.png)"]
    text = "\n\n".join(parts) + "\n"
    plot_accuracy(results, out_dir / "accuracy.png")
    if plot_gains(results, out_dir / "gains.png"):
        text = text.replace("![accuracy per model](accuracy.png)",
                            "![gain of each student over its teacher](gains.png)\n\n![accuracy per model](accuracy.png)")
    if plot_validation_curves(validation_curves or {}, out_dir / "validation.png"):
        text += "\n![validation loss of each student](validation.png)\n"
    (out_dir / "report.md").write_text(text)
    write_report_html(out_dir, text)
    return text
