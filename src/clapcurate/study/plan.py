"""The experiment plan: which students a teacher gets (the paper's Tables 2 and 3, the ADS+SL
variants, training lengths) with their data and loss, and the names of their folders and stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import method
from .config import StudyConfig
from .paper import SIDE_BY_SIDE_NORMS


@dataclass
class StudentSpec:
    """One student of the study: its model name, data and loss."""

    model: str  # its name in results.csv: the paper's student, then its variant ("ADS+SL norm=none")
    benchmark: str | None  # DS / ADS students belong to one benchmark
    improvement_set: str
    replay: str
    soft_labels: bool
    loss_overrides: dict[str, Any] = field(default_factory=dict)
    table: str = "main"  # "main", "variant", "bracket", "length" or "selection"
    max_steps: int | None = None  # another training length than student.trainer.max_steps
    bracket: str = ""  # "oracle" or "shuffled" for the students that bracket a curated one
    selection: str = ""  # the curation criterion of its set where the study compares them (`study.selections`)

    @property
    def student(self) -> str:
        """The paper's student it is (`method.STUDENT_METHODS`), whatever its variant."""
        return self.model.split(" ")[0]


def identity(config: StudyConfig, spec: StudentSpec | None) -> dict:
    """The structured identity of an evaluated model (columns of results.csv): the paper's student
    it is, its curated set, soft labels, the target normalisation and teacher targets of its soft
    labels, its training steps, its bracket arm and its table; `spec` None: the teacher."""
    if spec is None:
        return {"student": "teacher", "curated_set": "", "soft_labels": False, "target_norm": "",
                "teacher_targets": "", "steps": None, "bracket": "", "selection": "", "table": "main"}
    loss = {"target_norm": config.student.loss.target_norm, "teacher_targets": config.student.loss.teacher_targets,
            **spec.loss_overrides}
    curated_set, soft_labels = method.STUDENT_METHODS[spec.student]
    return {"student": spec.student, "curated_set": curated_set, "soft_labels": soft_labels,
            "target_norm": loss["target_norm"] if soft_labels else "",
            "teacher_targets": loss["teacher_targets"] if soft_labels else "",
            "steps": spec.max_steps or config.student.trainer.max_steps, "bracket": spec.bracket,
            "selection": spec.selection, "table": spec.table}


def slug(config: StudyConfig, kind: str) -> str:
    """Folder and stage name of a teacher kind: `full`, or the low-resource slug (`low10`)."""
    return "full" if kind == "full" else config.low_resource.slug


def student_name(config: StudyConfig, kind: str, spec: StudentSpec, seed: int) -> str:
    """The student's folder under `students/` and its stage name."""
    name = spec.model.replace("+", "_").replace(" ", "_").replace("=", "-").replace("@", "")
    return f"{slug(config, kind)}_s{seed}/{name}" + (f"_{spec.benchmark}" if spec.benchmark else "")


def planned_students(config: StudyConfig, benchmarks, kind: str, train_manifest: str,
                     sets: dict[str, str]) -> list[StudentSpec]:
    """The students of one teacher: the paper's Table 2 for the full teacher, Table 3 for the
    low-resource one (`method.STUDENT_METHODS`, `method.LOW_RESOURCE_METHODS`), each with the
    Improvement-Set and the replay set `method.replayed_set` prescribes; then the ADS+SL
    variants of the full teacher, for each of `benchmarks`: ADS+SL under every other target
    normalisation and teacher targets, and SL and DS+SL under the paper's targets and the default
    (`paper.SIDE_BY_SIDE_NORMS`) where the configured normalisation is another, so that every
    soft-label claim can be read under both."""

    def path(curated_set: str, bench: str | None) -> str:
        return {"train": train_manifest, "du": sets["DU"]}.get(curated_set) or sets[f"{curated_set.upper()}/{bench}"]

    def spec(name: str, bench: str | None, overrides: dict | None = None, table: str = "main") -> StudentSpec:
        curated_set, soft_labels = method.STUDENT_METHODS[name.split(" ")[0]]
        return StudentSpec(name, bench, path(curated_set, bench), path(method.replayed_set(curated_set), bench),
                           soft_labels, overrides or {}, table)

    names = method.STUDENT_METHODS if kind == "full" else method.LOW_RESOURCE_METHODS
    per_benchmark = [name for name in names if method.STUDENT_METHODS[name][0] in ("ds", "ads")]
    specs = [spec(name, None) for name in names if name not in per_benchmark]
    specs += [spec(name, bench) for bench in benchmarks for name in per_benchmark]
    if kind == "full" and config.variants:
        main_loss = config.student.loss
        other_targets = "cached" if main_loss.teacher_targets == "online" else "online"
        side_by_side = [norm for norm in SIDE_BY_SIDE_NORMS if norm != main_loss.target_norm]
        specs += [spec(f"SL norm={norm}", None, {"target_norm": norm}, "variant") for norm in side_by_side]
        specs += [spec(f"DS+SL norm={norm}", bench, {"target_norm": norm}, "variant")
                  for bench in benchmarks for norm in side_by_side]
        for bench in benchmarks:
            specs += [spec(f"ADS+SL norm={norm}", bench, {"target_norm": norm}, "variant")
                      for norm in method.TARGET_NORMS if norm != main_loss.target_norm]
            specs.append(spec(f"ADS+SL targets={other_targets}", bench, {"teacher_targets": other_targets},
                              "variant"))
    return specs


def length_students(config: StudyConfig, specs: list[StudentSpec],
                    brackets: Callable[[StudentSpec], list[StudentSpec]]) -> list[StudentSpec]:
    """`lengths.models` of `lengths.benchmark` again at each of `lengths.steps` steps (a
    bracket arm whose model `brackets` leaves out also at the main length); `brackets(spec)` gives
    the oracle and shuffled students of a main student."""
    lengths = config.lengths
    out = []
    for name in lengths.models:
        base, _, arm = name.partition(" ")
        bench = None if method.STUDENT_METHODS[base][0] in ("train", "du") else lengths.benchmark
        spec = next((s for s in specs if s.model == base and s.benchmark == bench and s.table == "main"), None)
        if spec is None:
            continue
        if arm:
            spec = next(s for s in brackets(spec) if s.model == name)
        steps = list(lengths.steps)
        if arm and base not in config.brackets:  # no bracket student at the main length: train one
            steps = [config.student.trainer.max_steps, *steps]
        out += [dataclasses.replace(spec, model=f"{name} @{count}", table="length", max_steps=count)
                for count in steps]
    return out
