"""The study's files: results.csv, brackets.csv, the selection criteria's files, the config it ran
with, and the report."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from ..config import to_dict
from . import report, selections
from .analysis import per_class_rows

if TYPE_CHECKING:
    from .pipeline import Study


def write_outputs(study: Study, rows, variant_rows, counts, seconds: float, bracket_rows=(), length_rows=(),
                  selection_rows=(), curves=()) -> str:
    """results.csv (and brackets.csv, the selection criteria's files), config.yaml and the report
    from the evaluations' rows and the criteria's precision curves; returns the study folder."""
    results = pd.DataFrame(rows)
    selection_section = []
    if curves:
        selection_section = selections.write_comparison(study.out, results, pd.DataFrame(list(selection_rows)),
                                                        pd.DataFrame(list(bracket_rows)), pd.DataFrame(curves),
                                                        study.config.curation)
    results.drop(columns=["per_class", "correct", "clips"], errors="ignore").to_csv(study.out / "results.csv",
                                                                                      index=False)
    if bracket_rows:
        pd.DataFrame(list(bracket_rows)).drop(columns=["per_class", "correct", "clips"], errors="ignore").to_csv(
            study.out / "brackets.csv", index=False)
    variants = pd.DataFrame(variant_rows)
    if len(variants):
        variants = pd.concat([results[(results["teacher"] == "full") & (results["method"] == "ADS+SL")],
                              variants], ignore_index=True)
    (study.out / "config.yaml").write_text(yaml.safe_dump(to_dict(study.config), sort_keys=False))
    header = (f"# Study `{study.config.name}`\n\nSeeds: {study.config.seeds}. "
              f"Total wall time of this run: {seconds:.0f} s "
              f"({len(study.stages.computed)} stages computed, the rest resumed from disk).\n\n"
              f"Software: {_versions()}.")
    text = report.write_report(study.out, results, pd.DataFrame(counts), per_class_rows(study.truth(), rows),
                               study.stages.timings, header, variants if len(variants) else None, study.notes,
                               low_resource=study.config.low_resource.label if study.config.low_resource else "",
                               validation_curves=validation_curves(study.out),
                               brackets=pd.DataFrame(list(bracket_rows)), lengths=pd.DataFrame(list(length_rows)),
                               base_steps=study.config.student.trainer.max_steps,
                               peakedness=study.peakedness, selection_section=selection_section)
    study.console.print(text)
    study.console.print(f"[bold]report written to {study.out / 'report.md'}[/bold]")
    return str(study.out)


def validation_curves(out: Path) -> dict[str, pd.DataFrame]:
    """Each student's `metrics.csv` (its validation loss by step), by student name."""
    return {str(path.parent.relative_to(out / "students")): pd.read_csv(path)
            for path in sorted((out / "students").glob("*/*/metrics.csv"))}


def _versions() -> str:
    import torch

    from .. import __version__

    return f"clapcurate {__version__}, torch {torch.__version__}, Python {platform.python_version()}"
