"""The selection criteria compared on the embedded world (`curation.selections`): the paper's
raw cosine against the hub-aware CSLS and mutual nearest neighbours (`clapcurate.search`).

For each criterion the study curates the DU and ADS sets once more with one generous
`curation.selection_keep_fraction` (the same for every criterion) and ranks their pairs by the
criterion's score. Against the ground truth this gives the precision of the n best pairs for
every n: a precision-versus-pairs curve per set and teacher, read at matched sizes. The n best
pairs, n the size of the study's own (cosine) set, are the criterion's set at matched size: its
DU and ADS+SL students (named `DU selection=csls`, ...) train on it with everything else as the
cosine students, so their difference is the criterion's alone. Their bracket position uses the
cosine set's oracle and shuffled students (sets of the same size). Nothing here is read by
curation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SELECTED_MODELS = ("DU", "ADS+SL")  # the students trained per criterion


def student_name(model: str, selection: str) -> str:
    """The student of `model` (DU, ADS+SL) trained on the criterion's set at matched size."""
    return model if selection == "cosine" else f"{model} selection={selection}"


def ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """Curated pairs best first: by descending score (`similarity`), ties by id."""
    order = np.lexsort((rows["id"].to_numpy(), -rows["similarity"].to_numpy()))
    return rows.iloc[order].reset_index(drop=True)


def precision_curve(right_in_rank_order: np.ndarray) -> np.ndarray:
    """Precision of the n best pairs for n = 1 .. len: the running share of right pairs."""
    right = np.asarray(right_in_rank_order, dtype=float)
    return np.cumsum(right) / np.arange(1, len(right) + 1)


def curve_rows(teacher: str, seed: int, curated_set: str, selection: str, right_in_rank_order: np.ndarray,
               matched: int) -> list[dict]:
    """The curve of one ranked set as rows (teacher, seed, set, selection, pairs, precision,
    matched: the size of the study's own set)."""
    curve = precision_curve(right_in_rank_order)
    return [{"teacher": teacher, "seed": seed, "set": curated_set, "selection": selection, "pairs": n + 1,
             "precision": float(p), "matched": matched} for n, p in enumerate(curve)]


def precision_at_matched_size(curves: pd.DataFrame) -> pd.DataFrame:
    """Precision (%) of each criterion's n best pairs, n the study's own set size (mean over
    seeds), one row per teacher and set; where a criterion kept fewer pairs, the precision of all
    of them with their number."""
    table = []
    for (teacher, curated_set), sub in curves.groupby(["teacher", "set"], sort=False):
        line = {"teacher": teacher, "set": curated_set, "pairs": int(sub["matched"].iloc[0])}
        for selection, rows in sub.groupby("selection", sort=False):
            ends = rows[rows["pairs"] <= rows["matched"]].groupby("seed").tail(1)  # each seed's last point up to n
            short = ends["pairs"] < ends["matched"]
            line[selection] = f"{100 * ends['precision'].mean():.1f}" + (
                f" (of {ends['pairs'].mean():.0f} pairs)" if short.any() else "")
        table.append(line)
    return pd.DataFrame(table)


def plot_precision_curves(curves: pd.DataFrame, path: Path) -> bool:
    """Precision against the number of best pairs kept, one panel per teacher and set, one line
    per criterion (the first seed), the study's own set size marked; False when there is none."""
    from .figures import _pyplot, _save

    if curves.empty:
        return False
    plt = _pyplot()
    first = curves[curves["seed"] == curves["seed"].min()]
    panels = list(first.groupby(["teacher", "set"], sort=False))
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, ((teacher, curated_set), sub) in zip(axes.flat, panels):
        for selection, line in sub.groupby("selection", sort=False):
            ax.plot(line["pairs"], 100 * line["precision"], label=selection)
        ax.axvline(sub["matched"].iloc[0], color="black", linestyle=":", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.set_title(f"{teacher} teacher: {curated_set}")
        ax.set_xlabel("best pairs kept (dotted: the study's set)")
        ax.set_ylabel("precision (%)")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _save(fig, path)
    return True


def selection_table(results: pd.DataFrame, selections) -> pd.DataFrame:
    """Each criterion's DU and ADS+SL students: the gain over the teacher and the difference to
    the cosine student (95% paired intervals over recordings and seeds), and the bracket position
    between the cosine set's shuffled and oracle students where those were trained. `results`:
    every evaluation with its per-clip outcomes (`outputs.load_results`)."""
    from ..intervals import bracket_position
    from .figures import evaluated_benchmarks
    from .paper import BENCHMARK_TITLES
    from .statistics import model_scores, paired_difference

    table = []
    for teacher in results["teacher"].drop_duplicates():
        for model in SELECTED_MODELS:
            for bench in evaluated_benchmarks(results):
                for selection in selections:
                    name = student_name(model, selection)
                    if not ((results["teacher"] == teacher) & (results["model"] == name)
                            & (results["benchmark"] == bench)).any():
                        continue
                    line = {"teacher": teacher, "model": model, "benchmark": BENCHMARK_TITLES.get(bench, bench),
                            "selection": selection,
                            "gain": paired_difference(results, teacher, name, "teacher", bench),
                            "minus cosine": "-" if selection == "cosine" else paired_difference(
                                results, teacher, name, model, bench)}
                    found = model_scores(results, teacher, (name, f"{model} oracle", f"{model} shuffled"), bench)
                    line["position"] = "-"
                    if found is not None:
                        point, low, high = bracket_position(*found[0].correct, recordings=found[0].recordings)
                        line["position"] = ("n/a (the oracle does not beat the shuffled pairs)" if np.isnan(point)
                                            else f"{point:.2f} [{low:.2f}, {high:.2f}]")
                    table.append(line)
    return pd.DataFrame(table)


def write_comparison(out_dir: Path, results: pd.DataFrame, curves: pd.DataFrame, settings) -> list[str]:
    """Write `selection_curves.csv` and `selection_precision.png`; return the report's section on
    the criteria. `results`: every evaluation with its per-clip outcomes (the criteria's students
    are the rows of table `selection` of results.csv); `settings`: the study's `CurationSettings`."""
    from .tables import markdown_table

    curves.to_csv(out_dir / "selection_curves.csv", index=False)
    parts = ["## Selection criteria: raw cosine against hub-aware selection (embedded world)",
             f"Each criterion curates the DU and ADS sets at keep_fraction {settings.selection_keep_fraction:g} "
             f"(k = {settings.selection_k}): `cosine` keeps the pairs of highest cosine (the paper's), `csls` "
             "those of highest 2 cos - r_audio - r_text (r: a side's mean cosine to its k nearest neighbours on "
             "the other side), `mutual` those of highest cosine among the pairs whose clip and caption are each "
             "among the other's k nearest. Precision (%) of each criterion's best pairs at the size of the "
             "study's own set (ground truth as below):",
             markdown_table(precision_at_matched_size(curves))]
    if plot_precision_curves(curves, out_dir / "selection_precision.png"):
        parts.append("![precision against pairs kept, per criterion](selection_precision.png)")
    table = selection_table(results, settings.selections)
    if len(table):
        parts += ["The DU and ADS+SL students of each criterion, trained on its best pairs at the cosine set's "
                  "size with everything else the same: gain over the teacher, difference to the cosine student "
                  "(points, 95% paired intervals over recordings and seeds) and position between the cosine set's "
                  "shuffled and oracle students.", markdown_table(table)]
    return parts
