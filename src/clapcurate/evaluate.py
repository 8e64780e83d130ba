"""Did my student beat my teacher? Zero-shot accuracy of one or more models on target tasks.

For each task (`clapcurate.tasks`) and model: correct / clips, the accuracy with its 95%
interval, top-k accuracy, per-class accuracy and the task's chance level (1 / classes). With two
or more models, each model after the first is compared with the first on the clips every model
could read: the paired difference in accuracy (points) with its 95% interval. Intervals come
from `clapcurate.intervals` (`accuracy_bootstrap`, `paired_bootstrap`: recordings resampled,
the clips of one recording together, seed 0), the same function and seed the study uses, so the
study and this agree to the digit on the same models and clips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .intervals import AccuracyInterval, Interval, accuracy_bootstrap, paired_bootstrap
from .tasks import Task, TaskSpec, check_task, read_task


@dataclass
class ModelResult:
    """One model on one task: per-clip outcomes and what follows from them."""

    model: str
    task: Task
    predictions: pd.DataFrame  # id (the clip), label, predicted, score, rank
    skipped: pd.DataFrame  # id, audio_path, reason

    @property
    def correct(self) -> np.ndarray:
        return (self.predictions["rank"] == 1).to_numpy()

    @property
    def clips(self) -> int:
        return len(self.predictions)

    def accuracy(self) -> AccuracyInterval:
        ids = self.predictions["id"]
        return accuracy_bootstrap(self.correct, self.task.recordings(ids) if self.task.has_recordings else None)

    def top_k(self, k: int) -> float:
        """Share of clips whose class is among the `k` best-scored prompts."""
        return float((self.predictions["rank"] <= k).mean())

    def per_class(self) -> pd.DataFrame:
        """label, clips, correct per class (every class of the task, in its order)."""
        table = self.predictions.assign(correct=self.correct).groupby("label")["correct"].agg(["size", "sum"])
        table = table.reindex(self.task.labels, fill_value=0)
        return pd.DataFrame({"label": self.task.labels, "clips": table["size"].to_numpy(dtype=int),
                             "correct": table["sum"].to_numpy(dtype=int)})


@dataclass
class Comparison:
    """`model` minus `baseline` on `task`, over the `clips` both read."""

    model: str
    baseline: str
    task: str
    clips: int
    interval: Interval


@dataclass
class Evaluation:
    """Every model on every task (results in task order, then model order) and each model after
    the first compared with the first."""

    tasks: list[Task]
    models: list[str]
    results: list[ModelResult]
    comparisons: list[Comparison] = field(default_factory=list)
    top_k: tuple[int, ...] = ()

    def rows(self, per_class: bool = False) -> pd.DataFrame:
        """One row per task and model (and, with `per_class`, per class: `class` not empty), the
        model's paired difference against the first beside it; accuracies in percent."""
        versus = {(c.task, c.model): c for c in self.comparisons}
        rows = []
        for result in self.results:
            task = result.task
            accuracy = result.accuracy()
            comparison = versus.get((task.name, result.model))
            row = {"task": task.name, "model": result.model, "class": "", "clips": result.clips,
                   "correct": int(result.correct.sum()), "accuracy_percent": round(accuracy.accuracy, 4),
                   "low_percent": round(accuracy.low, 4), "high_percent": round(accuracy.high, 4),
                   **{f"top{k}_percent": round(100 * result.top_k(k), 4) for k in self.top_k},
                   "chance_percent": round(100 * task.chance, 4), "classes": len(task.labels),
                   "skipped": len(result.skipped), "baseline": comparison.baseline if comparison else "",
                   "paired_clips": comparison.clips if comparison else np.nan,
                   "difference_points": round(comparison.interval.difference, 4) if comparison else np.nan,
                   "difference_low": round(comparison.interval.low, 4) if comparison else np.nan,
                   "difference_high": round(comparison.interval.high, 4) if comparison else np.nan}
            rows.append(row)
            if per_class:
                for item in result.per_class().itertuples():
                    rows.append({"task": task.name, "model": result.model, "class": item.label, "clips": item.clips,
                                 "correct": item.correct,
                                 "accuracy_percent": round(100 * item.correct / item.clips, 4) if item.clips else np.nan})
        table = pd.DataFrame(rows)
        counts = [column for column in ("classes", "skipped", "paired_clips") if column in table]
        return table.astype({column: "Int64" for column in counts})  # whole numbers, empty on per-class rows

    def as_json(self, per_class: bool = False) -> dict:
        """The evaluation as plain data: tasks, each with its models (and their comparison)."""
        versus = {(c.task, c.model): c for c in self.comparisons}
        tasks = []
        for task in self.tasks:
            models = []
            for result in (r for r in self.results if r.task is task):
                accuracy = result.accuracy()
                comparison = versus.get((task.name, result.model))
                entry = {"model": result.model, "clips": result.clips, "correct": int(result.correct.sum()),
                         "accuracy_percent": accuracy.accuracy, "interval_percent": [accuracy.low, accuracy.high],
                         "top_k_percent": {str(k): 100 * result.top_k(k) for k in self.top_k},
                         "skipped": len(result.skipped)}
                if comparison:
                    entry["versus_first"] = {"baseline": comparison.baseline, "clips": comparison.clips,
                                             "difference_points": comparison.interval.difference,
                                             "interval_points": [comparison.interval.low, comparison.interval.high],
                                             "within_noise": comparison.interval.holds_zero}
                if per_class:
                    entry["per_class"] = result.per_class().to_dict(orient="records")
                models.append(entry)
            tasks.append({"task": task.name, "data": task.spec.data, "classes": len(task.labels),
                          "chance_percent": 100 * task.chance, "paper_benchmark": task.paper_benchmark,
                          "recordings": "from the data" if task.has_recordings else "each clip its own recording",
                          "models": models})
        return {"tasks": tasks}


def read_tasks(specs: list[TaskSpec], key: str = "--dataset") -> list[Task]:
    """Check every task's paths, then read every task (before any model loads); two tasks of one
    name are refused."""
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        from .errors import ConfigError

        raise ConfigError(f"{key}: two tasks named {repeated[0]!r}; name them apart as NAME=DATA")
    for spec in specs:
        check_task(spec, key)
    return [read_task(spec) for spec in specs]


def compare(results: list[ModelResult]) -> list[Comparison]:
    """Each model after the first minus the first, per task, on the clips every model read (in
    the task's order), recordings resampled (`paired_bootstrap`)."""
    comparisons = []
    for task in dict.fromkeys(r.task.name for r in results):
        on_task = [r for r in results if r.task.name == task]
        shared = set.intersection(*(set(r.predictions["id"]) for r in on_task))
        ids = [i for i in on_task[0].predictions["id"] if i in shared]
        correct = [r.predictions.set_index("id").loc[ids, "rank"].to_numpy() == 1 for r in on_task]
        recordings = on_task[0].task.recordings(ids) if on_task[0].task.has_recordings else None
        for result, outcome in zip(on_task[1:], correct[1:]):
            comparisons.append(Comparison(result.model, on_task[0].model, task, len(ids),
                                          paired_bootstrap(outcome, correct[0], recordings=recordings)))
    return comparisons


def model_names(models: list[str]) -> dict[str, str]:
    """A short name for each model (`NAME=PATH` names it; else the path's last part, more of the
    path where two would share one) -> its path."""
    named = [model.partition("=") if "=" in model and not Path(model).exists() else ("", "", model) for model in models]
    paths = [path for _, _, path in named]
    for depth in range(1, max((len(Path(p).parts) for p in paths), default=1) + 1):
        short = [name or "/".join(Path(path).parts[-depth:]) for name, _, path in named]
        if len(set(short)) == len(short):
            return dict(zip(short, paths))
    from .errors import ConfigError

    raise ConfigError("--model: the same model given twice; compare different models")


def evaluate_models(models: dict[str, str], tasks: list[Task], text_encoder: str | None = None, device=None,
                    batch_size: int = 64, num_workers: int | str = "auto", feature_cache=None,
                    top_k: tuple[int, ...] = (), progress: bool = True) -> Evaluation:
    """Zero-shot evaluation of every model (name -> a checkpoint folder or published weights, the
    first is the baseline) on every task, one model in memory at a time."""
    from .model import load_model
    from .zeroshot import evaluate

    by_model = {}
    for name, path in models.items():
        model = load_model(path, text_encoder, device=device)
        by_model[name] = [
            evaluate(model, task.manifest, labels=task.labels, batch_size=batch_size, num_workers=num_workers,
                     template=task.spec.template, words=task.words,
                     progress=f"{task.name} ({name})" if progress else False, feature_cache=feature_cache)
            for task in tasks]
        del model
    results = [ModelResult(name, task, by_model[name][i].predictions, by_model[name][i].skipped)
               for i, task in enumerate(tasks) for name in models]
    return Evaluation(tasks, list(models), results, compare(results), tuple(top_k))
