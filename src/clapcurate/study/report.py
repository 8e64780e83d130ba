"""The study's report (report.md and report.html): Table 1 (curated pair counts), Table 2 (students
of the full teacher), Table 3 (students of the 10% teacher), gains over the teacher, the paper's
claims, brackets, training lengths, what limits the method, rare versus frequent classes,
curated-set precision, variants and stage timings, with the paper's published numbers beside ours."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .figures import plot_accuracy, plot_gains, plot_validation_curves
from .paper import BENCHMARK_TITLES, PAPER_TABLE2, PAPER_TABLE3, TABLE2_ROWS, TABLE3_ROWS
from .rendering import write_report_html
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
    precision_table,
    rare_frequent_table,
)


def write_report(out_dir: Path, results: pd.DataFrame, counts: pd.DataFrame, per_class: pd.DataFrame,
                 timings: dict[str, float], header: str, ablations: pd.DataFrame | None,
                 notes: list[str], low_resource: str = "10%",
                 validation_curves: dict[str, pd.DataFrame] | None = None,
                 brackets: pd.DataFrame | None = None, lengths: pd.DataFrame | None = None,
                 base_steps: int | None = None, peakedness: dict | None = None) -> str:
    """Write report.md (with the plots of accuracy, gains with intervals and the students'
    validation curves) and return the markdown text. `low_resource` is the label of the teacher
    trained on a fraction of the pairs (`method.LowResource.label`)."""
    low = low_resource
    parts = [header]
    parts += ["## Table 1: curated Improvement-Set pairs (full teacher)", markdown_table(counts_table(counts, "full"))]
    if (counts["teacher"] == low).any():
        parts += [f"Curated pairs with the {low} teacher:", markdown_table(counts_table(counts, low))]
    parts += ["## Table 2: zero-shot accuracy (%), students of the full teacher",
              "DS and ADS students are trained per benchmark and evaluated on their own benchmark.",
              markdown_table(accuracy_table(results, "full", TABLE2_ROWS, PAPER_TABLE2)),
              "Gain over the teacher of the same seed (points, with the 95% paired-bootstrap interval over "
              "benchmark clips and seeds; \"within noise\" when it holds 0):",
              markdown_table(gain_table(results, "full", TABLE2_ROWS))]
    claims = claims_table(results, low)
    if len(claims):
        parts += ["## The paper's claims on this data",
                  "Each claim as a paired difference in accuracy (points) with its 95% interval: replicated "
                  "when the interval lies above 0, not replicated when below, within noise when it holds 0. "
                  "The last column pools the clips of all three benchmarks (each seed's models scored on the "
                  "same clips).",
                  markdown_table(claims)]
    if (results["teacher"] == low).any():
        parts += [f"## Table 3: zero-shot accuracy (%), students of the {low} teacher",
                  markdown_table(accuracy_table(results, low, TABLE3_ROWS, PAPER_TABLE3)),
                  f"Gain over the {low} teacher of the same seed (points):",
                  markdown_table(gain_table(results, low, TABLE3_ROWS))]
    if brackets is not None and len(brackets):
        parts += ["## Brackets: oracle and shuffled pairs (embedded world)",
                  "Each bracketed student beside two more with the same replay, loss, steps and seed: one on as "
                  "many pool pairs that are all right by the ground truth (for the same captions where the pool "
                  "allows), one on the same clips and captions paired at random. Position = (curated - shuffled) "
                  "/ (oracle - shuffled) in accuracy, with its 95% interval; oracle - SL says whether right pool "
                  "pairs teach more than training on the teacher's own pairs.",
                  markdown_table(bracket_table(results, brackets))]
    if lengths is not None and len(lengths):
        bench = lengths["benchmark"].iloc[0]
        parts += [f"## Training length ({BENCHMARK_TITLES.get(bench, bench)}, first seed)",
                  "Gain over the teacher (points, 95% interval over clips) of the same students trained for "
                  "other numbers of steps; the main tables use the configured length.",
                  markdown_table(length_table(results, lengths, brackets, base_steps))]
    limits = limits_table(results, brackets, lengths, ablations, counts, peakedness, base_steps)
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
        names = list(dict.fromkeys(ablations["method"]))
        parts += ["## ADS+SL variants (full teacher): soft-target normalisation and teacher targets",
                  markdown_table(accuracy_table(ablations, "full", names, {})),
                  "Each variant minus the configured ADS+SL of the same seed (points, 95% interval; the last "
                  "column pools the clips of all three benchmarks):",
                  markdown_table(gain_table(ablations, "full", names, baseline="ADS+SL", pooled=True))]
    if len(per_class):
        parts += ["## Rare versus frequent classes (mean per-class accuracy %)",
                  "A benchmark class is rare when its sound is among the least captioned half of the "
                  "classes in the teacher's caption corpus.",
                  markdown_table(rare_frequent_table(per_class, "full", TABLE2_ROWS))]
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
    parts += ["![accuracy per method](accuracy.png)"]
    text = "\n\n".join(parts) + "\n"
    plot_accuracy(results, out_dir / "accuracy.png")
    if plot_gains(results, out_dir / "gains.png"):
        text = text.replace("![accuracy per method](accuracy.png)",
                            "![gain of each student over its teacher](gains.png)\n\n![accuracy per method](accuracy.png)")
    if plot_validation_curves(validation_curves or {}, out_dir / "validation.png"):
        text += "\n![validation loss of each student](validation.png)\n"
    (out_dir / "report.md").write_text(text)
    write_report_html(out_dir, text)
    return text
