"""The study's files: results.csv, brackets.csv, the config it ran with, and the report."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from ..config import to_dict
from . import report
from .analysis import per_class_rows
from .paper import ReportedTask

if TYPE_CHECKING:
    from .pipeline import Study


def reported_tasks(study: Study, manifests: dict[str, str]) -> list[ReportedTask]:
    """The configured target tasks as the report shows them, read from the study's manifests."""
    from ..data.manifest import read_manifest
    from ..tasks import read_task

    return [ReportedTask.of(read_task(spec, read_manifest(manifests[name])))
            for name, spec in study.data.tasks().items()]


def write_outputs(study: Study, rows, variant_rows, counts, seconds: float, manifests: dict[str, str],
                  bracket_rows=(), length_rows=()) -> str:
    """results.csv (and brackets.csv), config.yaml and the report from the evaluations' rows;
    prints a short summary and the report's path; returns the study folder."""
    results = pd.DataFrame(rows)
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
    tasks = reported_tasks(study, manifests)
    report.write_report(study.out, results, pd.DataFrame(counts), per_class_rows(study.truth(), rows),
                        study.stages.timings, header, variants if len(variants) else None, study.notes,
                        tasks, low_resource=study.config.low_resource.label if study.config.low_resource else "",
                        validation_curves=validation_curves(study.out),
                        brackets=pd.DataFrame(list(bracket_rows)), lengths=pd.DataFrame(list(length_rows)),
                        base_steps=study.config.student.trainer.max_steps,
                        peakedness=study.peakedness)
    print_summary(study, results, tasks, seconds)
    return str(study.out)


def print_summary(study: Study, results: pd.DataFrame, tasks: list[ReportedTask], seconds: float) -> None:
    """A few lines on the console: each task's teacher and best student of the full teacher (mean
    accuracy over seeds, chance beside it), and where the report is."""
    console = study.console
    console.print(f"[bold]study {study.config.name} done[/bold] in {seconds:.0f} s "
                  f"({len(study.stages.computed)} stages computed)", soft_wrap=True)
    full = results[results["teacher"] == "full"]
    for task in tasks:
        accuracy = full[full["benchmark"] == task.name].groupby("method")["accuracy"].mean() * 100
        if accuracy.empty:
            continue
        students = accuracy.drop("teacher", errors="ignore")
        best = f"; best student {students.idxmax()} {students.max():.1f}%" if len(students) else ""
        teacher = f"teacher {accuracy['teacher']:.1f}%" if "teacher" in accuracy else "no teacher row"
        console.print(f"  {task.title}: {teacher}{best} (chance {task.chance:.1f}%)", soft_wrap=True, highlight=False)
    console.print(f"[bold]report: {study.out / 'report.md'}[/bold] (and report.html; the gains with their "
                  "intervals and the paper's claims are there)", soft_wrap=True)


def validation_curves(out: Path) -> dict[str, pd.DataFrame]:
    """Each student's `metrics.csv` (its validation loss by step), by student name."""
    return {str(path.parent.relative_to(out / "students")): pd.read_csv(path)
            for path in sorted((out / "students").glob("*/*/metrics.csv"))}


def _versions() -> str:
    import torch

    from .. import __version__

    return f"clapcurate {__version__}, torch {torch.__version__}, Python {platform.python_version()}"
