"""Target tasks: a labelled dataset under the name the user gives it.

A task is what curation aims at (DS, ADS), what `clapcurate evaluate` scores and what the study
reports: its data (any labelled dataset: a manifest file, `esc50:`, `urbansound8k:`, `tut2017:`,
`csv:FILE` with a `label` column, or `classes:DIR` with one subfolder per class), its prompt
template (default "this is a sound of {label}"), the words of each class (`crying_baby` ->
"crying baby", or the user's own mapping file) and the column naming each clip's recording (for
the bootstrap's clusters; default `recording_id` when the manifest has one, else each clip is its
own recording).

One label per clip: a row whose label lists several (`"dog, rain"`) is refused; multi-label data
is not a zero-shot classification task.

The paper's own benchmarks are known by their layout (`esc50:`, `urbansound8k:`, `tut2017:`) and
their number of classes (50, 10, 15), never by the name a task is given, so the paper's figures
stand only beside them (a 45-class set laid out like ESC-50 is not ESC-50).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .data.manifest import RECORDING_COLUMN, given_recordings
from .errors import ConfigError, ManifestError
from .prompts import PROMPT_TEMPLATE, benchmark_labels, prompts

if TYPE_CHECKING:  # numpy and pandas load when a task is read, not when a config naming one is checked
    import numpy as np
    import pandas as pd

PAPER_BENCHMARKS = {"esc50": "ESC-50", "urbansound8k": "UrbanSound8K", "tut2017": "TUT17"}  # layout -> paper's name
PAPER_CLASSES = {"esc50": 50, "urbansound8k": 10, "tut2017": 15}


@dataclass(frozen=True)
class TaskSpec:
    """A target task as a config or the command line gives it (`name` is the key it is given
    under; `data` a manifest file or a dataset spec KIND:PATH)."""

    data: str
    name: str = ""
    template: str = PROMPT_TEMPLATE  # the class prompt; {label} stands for the class's words
    label_words: str = ""  # a YAML file mapping labels to their words (`crying_baby: a crying baby`)
    recording_column: str = ""  # the manifest column naming each clip's recording (default recording_id)

    def __post_init__(self):
        if "{label}" not in self.template:
            raise ValueError(f"template must contain {{label}}, got {self.template!r}")
        try:
            self.template.format(label="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"template {self.template!r}: only {{label}} may stand in braces ({exc})") from None
        if not self.name:
            object.__setattr__(self, "name", default_task_name(self.data))

    @property
    def layout(self) -> str:
        """The reader kind of `data` (`esc50`, `classes`, ...; aliases resolved), '' for a manifest file."""
        return data_layout(self.data)

    @property
    def paper_layout(self) -> str | None:
        """The paper's name of the layout ("ESC-50", ...) when the data has one of its benchmarks'
        layouts, else None (`Task.paper_benchmark` checks the classes too)."""
        return PAPER_BENCHMARKS.get(self.layout)


def data_layout(data: str) -> str:
    """The reader kind of a dataset spec (aliases resolved), '' for a manifest file."""
    from .data.readers import dataset_kind

    text = str(data).strip()
    return (dataset_kind(text) or "") if not Path(text).is_file() else ""


def default_task_name(data: str) -> str:
    """A task's name when none is given: a paper benchmark's kind (`esc50`), else the stem of the
    file or folder the data names (`classes:/data/birds` -> `birds`)."""
    layout = data_layout(data)
    if layout in PAPER_BENCHMARKS:
        return layout
    path = Path(str(data).strip().partition(":")[2] if layout else str(data).strip())
    return path.stem or path.name or str(data)


def parse_task(text: str, **settings) -> TaskSpec:
    """A task from the command line: `NAME=DATA` or `DATA` (named by `default_task_name`);
    `settings` are the other `TaskSpec` fields."""
    name, separator, data = text.partition("=")
    if not separator or ":" in name or os.sep in name:  # `=` inside a path, not a name
        name, data = "", text
    if separator and not name.strip() and not data:
        raise ConfigError(f"a task is NAME=DATA or DATA, got {text!r}")
    return TaskSpec(data=data.strip(), name=name.strip(), **settings)


def task_from_config(name: str, value, key: str) -> TaskSpec:
    """The task `name` of a config mapping: its value is the data (a string) or a mapping of
    `TaskSpec` fields (`data`, `template`, `label_words`, `recording_column`)."""
    from .config import from_dict

    if isinstance(value, TaskSpec):
        return dataclasses.replace(value, name=name)
    if isinstance(value, str):
        value = {"data": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a dataset (a manifest file or KIND:PATH) or a mapping with data, "
                          f"template, label_words, recording_column; got {value!r}")
    if "name" in value:
        raise ConfigError(f"{key}.name: a task's name is its key ({name})")
    return from_dict(TaskSpec, {**value, "name": name}, prefix=f"{key}.")


def check_task(spec: TaskSpec, key: str) -> None:
    """`ConfigError` naming `key` when the task's data or label-words file does not exist;
    reads nothing else."""
    from .data.readers import check_data

    check_data(spec.data, key)
    if spec.label_words and not Path(spec.label_words).is_file():
        raise ConfigError(f"{key}: label_words file {spec.label_words} does not exist "
                          "(a YAML mapping of class labels to their words, e.g. `crying_baby: a crying baby`)")


@dataclass
class Task:
    """A read task: its manifest (one labelled row per clip), its classes in order, the words of
    the classes the user mapped, and each clip's recording."""

    spec: TaskSpec
    manifest: pd.DataFrame
    labels: list[str]
    words: dict[str, str]  # label -> its words in the prompt, for the labels of the label_words file

    @property
    def prompts(self) -> list[str]:
        """The class prompts, in the order of `labels`."""
        return prompts(self.labels, self.spec.template, self.words)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def paper_benchmark(self) -> str | None:
        """The paper's name of this benchmark ("ESC-50", ...) when the data has its layout and its
        number of classes, else None."""
        layout = self.spec.layout
        return PAPER_BENCHMARKS[layout] if PAPER_CLASSES.get(layout) == len(self.labels) else None

    @property
    def chance(self) -> float:
        """Accuracy of guessing one class for every clip: 1 / classes."""
        return 1.0 / len(self.labels)

    def _given_recordings(self):
        return given_recordings(self.manifest, self.spec.recording_column or RECORDING_COLUMN)

    def recordings(self, clip_ids) -> np.ndarray:
        """The recording of each of `clip_ids`: a clip without one is its own recording, named by
        its clip id (as `data.manifest.recording_ids` names it)."""
        import numpy as np

        recording_of = dict(zip(self.manifest["clip_id"].astype(str), self._given_recordings()))
        return np.asarray([recording_of.get(str(c)) or str(c) for c in clip_ids], dtype=object)

    @property
    def has_recordings(self) -> bool:
        return bool((self._given_recordings() != "").any())


def _label_words(spec: TaskSpec, labels: list[str]) -> dict[str, str]:
    if not spec.label_words:
        return {}
    import yaml

    try:
        words = yaml.safe_load(Path(spec.label_words).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"task {spec.name}: label_words {spec.label_words}: {exc}") from None
    if not isinstance(words, dict) or not all(isinstance(v, str) and v.strip() for v in words.values()):
        raise ConfigError(f"task {spec.name}: label_words {spec.label_words} must map each label to its words "
                          "(`crying_baby: a crying baby`, one per line)")
    unknown = sorted(str(label) for label in words if str(label) not in labels)
    if unknown:
        raise ConfigError(f"task {spec.name}: label_words {spec.label_words} names {unknown[0]!r}, which is not "
                          f"a class of the task (classes: {', '.join(labels)})")
    return {str(label): text.strip() for label, text in words.items()}


def read_task(spec: TaskSpec, manifest: pd.DataFrame | None = None) -> Task:
    """Read (or take `manifest`, already read from `spec.data`) and check the task's data: every
    clip has exactly one label, there are at least two classes, the recording column (when named)
    exists."""
    from .data.readers import read_data

    manifest = read_data(spec.data) if manifest is None else manifest
    if "clip_id" in manifest.columns:
        manifest = manifest.drop_duplicates("clip_id").reset_index(drop=True)
    unlabelled = manifest[manifest["label"] == ""]
    if len(unlabelled) == len(manifest):
        raise ManifestError(f"task {spec.name}: {spec.data} has no class labels; a task needs a labelled dataset "
                            "(esc50:, urbansound8k:, tut2017:, csv: with a label column, or classes:DIR "
                            "with one subfolder per class)")
    if len(unlabelled):
        raise ManifestError(f"task {spec.name}: {len(unlabelled)} of {len(manifest)} clips have no label "
                            f"(e.g. {unlabelled['id'].iloc[0]}); give every clip its class")
    several = manifest[manifest["label"].str.contains(",")]
    if len(several):
        raise ManifestError(f"task {spec.name}: clip {several['id'].iloc[0]} has several labels "
                            f"({several['label'].iloc[0]!r}); a task takes one label per clip "
                            "(multi-label data is not a zero-shot classification task)")
    if spec.recording_column and spec.recording_column not in manifest.columns:
        raise ConfigError(f"task {spec.name}: recording_column {spec.recording_column!r} is not a column of "
                          f"{spec.data} (columns: {', '.join(manifest.columns)})")
    labels = benchmark_labels(manifest)
    if len(labels) < 2:
        raise ManifestError(f"task {spec.name}: {spec.data} has a single class ({labels[0]}); "
                            "classification needs at least two")
    return Task(spec, manifest, labels, _label_words(spec, labels))
