"""The study's files, and the report rendered from them: results.csv (one row per evaluated model,
seed and benchmark, with the model's structured identity and its checkpoint folder),
predictions.csv (every evaluated model's per-clip outcome, with each clip's recording), claims.csv
(the paper's claims with their intervals and verdicts), the selection criteria's files, the config
the study ran with, then the report."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from ..config import to_dict
from ..data.manifest import RECORDING_COLUMN
from . import report, selections
from .analysis import per_class_rows
from .paper import ReportedTask
from .tables import claim_rows

if TYPE_CHECKING:
    from .pipeline import Study

RESULT_COLUMNS = ["teacher", "model", "student", "curated_set", "soft_labels", "target_norm", "teacher_targets",
                  "steps", "bracket", "selection", "table", "seed", "benchmark", "clips", "correct", "skipped", "accuracy",
                  "checkpoint"]
PREDICTION_COLUMNS = ["teacher", "model", "seed", "benchmark", "clip_id", "recording_id", "label", "predicted",
                      "correct"]


def reported_tasks(study: Study, manifests: dict[str, str]) -> list[ReportedTask]:
    """The configured target tasks as the report shows them, read from the study's manifests."""
    from ..data.manifest import read_manifest
    from ..tasks import read_task

    return [ReportedTask.of(read_task(spec, read_manifest(manifests[name])))
            for name, spec in study.data.tasks().items()]


def write_outputs(study: Study, rows: list[dict], counts: list[dict], manifests: dict[str, str],
                  seconds: float, curves=()) -> str:
    """results.csv, predictions.csv, claims.csv, the selection criteria's files (from their
    precision `curves`) and config.yaml from the evaluations' rows, then the report from those
    files; returns the study folder."""
    from ..data.manifest import read_manifest, recording_ids

    out = study.out
    tasks = reported_tasks(study, manifests)
    results = pd.DataFrame(rows)
    results[RESULT_COLUMNS].to_csv(out / "results.csv", index=False)
    recordings = {bench: recording_ids(read_manifest(manifests[bench])) for bench in set(results["benchmark"])}
    predictions = []
    for row in rows:
        clips = pd.read_csv(out / row["predictions"], dtype={"clip_id": str, "label": str, "predicted": str},
                            keep_default_na=False)
        predictions.append(clips.assign(teacher=row["teacher"], model=row["model"], seed=row["seed"],
                                        benchmark=row["benchmark"],
                                        recording_id=recordings[row["benchmark"]].loc[clips["clip_id"]].to_numpy(),
                                        correct=(clips["label"] == clips["predicted"]).astype(int)))
    pd.concat(predictions, ignore_index=True)[PREDICTION_COLUMNS].to_csv(out / "predictions.csv", index=False)
    loaded = load_results(out)
    low = study.config.low_resource.label if study.config.low_resource else ""
    claim_rows(loaded, low, [task.name for task in tasks]).to_csv(out / "claims.csv", index=False)
    selection_section = (selections.write_comparison(out, loaded, pd.DataFrame(list(curves)), study.config.curation)
                         if curves else [])
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(study.config), sort_keys=False))
    header = (f"# Study `{study.config.name}`\n\nSeeds: {study.config.seeds}. "
              f"Total wall time of this run: {seconds:.0f} s "
              f"({len(study.stages.computed)} stages computed, the rest resumed from disk).\n\n"
              f"Software: {_versions()}.")
    report.write_report(out, loaded, pd.read_csv(out / "claims.csv", keep_default_na=False),
                        recording_table(loaded), pd.DataFrame(counts), per_class_rows(study.truth(), rows),
                        study.stages.timings, header, study.notes, tasks, low_resource=low,
                        validation_curves=validation_curves(out),
                        base_steps=study.config.student.trainer.max_steps, peakedness=study.peakedness,
                        selection_section=selection_section)
    print_summary(study, loaded[loaded["table"] == "main"], tasks, seconds)
    return str(out)


def load_results(out: Path) -> pd.DataFrame:
    """results.csv with each row's per-clip outcomes from predictions.csv: `outcomes` (0/1),
    `clip_ids` and `recordings`, in the order the clips were evaluated."""
    results = pd.read_csv(out / "results.csv", keep_default_na=False, na_values={"steps": [""]})
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False,
                              dtype={"clip_id": str, "recording_id": str, "label": str, "predicted": str})
    by_model = {key: group for key, group in predictions.groupby(["teacher", "model", "seed", "benchmark"], sort=False)}
    keys = list(zip(results["teacher"], results["model"], results["seed"], results["benchmark"]))
    results["outcomes"] = [by_model[key]["correct"].to_numpy(dtype=bool) for key in keys]
    results["clip_ids"] = [by_model[key]["clip_id"].to_numpy() for key in keys]
    results["recordings"] = [by_model[key]["recording_id"].to_numpy() for key in keys]
    return results


def recording_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark: its evaluated clips, the recordings they were cut from (the units the
    intervals resample) and where the recording ids came from."""
    out = []
    for bench, rows in results.groupby("benchmark", sort=False):
        clips, recordings = rows["clip_ids"].iloc[0], rows["recordings"].iloc[0]
        own = bool(np.array_equal(clips, recordings))
        out.append({"benchmark": bench, "clips": len(clips), "recordings": len(set(recordings)),
                    "recording ids": "none: each clip is its own recording" if own
                    else f"the manifest's `{RECORDING_COLUMN}` column"})
    return pd.DataFrame(out)


def print_summary(study: Study, results: pd.DataFrame, tasks: list[ReportedTask], seconds: float) -> None:
    """A few lines on the console: each task's teacher and best student of the full teacher (mean
    accuracy over seeds, chance beside it), and where the report is."""
    console = study.console
    console.print(f"[bold]study {study.config.name} done[/bold] in {seconds:.0f} s "
                  f"({len(study.stages.computed)} stages computed)", soft_wrap=True)
    full = results[results["teacher"] == "full"]
    for task in tasks:
        accuracy = full[full["benchmark"] == task.name].groupby("model")["accuracy"].mean() * 100
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
