"""The study's config: its sections (world, datasets, curation thresholds, training lengths),
the keys the study sets itself, loading and validating a study config, and checking its inputs
exist before anything runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import method
from ..config import apply_overrides, deep_merge, from_dict, read_yaml, to_dict
from ..device import AUTO, check_auto, check_device
from ..errors import ConfigError
from ..method import DEFAULT_SELECTION_K, SELECTIONS
from ..model.config import CLAPConfig
from ..tasks import TaskSpec, check_task, task_from_config
from ..train.config import StudentConfig, TaggerConfig, TeacherConfig

# Keys of the stage sections that the study sets itself (a value given in the study config
# would be ignored, so it is refused).
STUDY_OWNED_KEYS = {
    "pretrain_audio": ("audio", "data.train", "data.labels_csv", "out_dir", "resume", "overwrite", "trainer.device"),
    "teacher": ("model", "data.train_manifest", "seed", "out_dir", "resume", "overwrite", "trainer.device"),
    "low_resource_teacher": ("model", "data.train_manifest", "seed", "out_dir", "resume", "overwrite", "trainer.device"),
    "student": ("teacher", "text_encoder", "improvement_set", "replay_manifest", "val_manifest", "seed", "out_dir", "resume",
                "overwrite", "loss.kind", "loss.teacher_audio_embeddings", "loss.teacher_text_embeddings",
                "trainer.device"),
}


@dataclass
class WorldSettings:
    """Generate (or reuse) the embedded synthetic world at `dir`."""

    dir: str = "world"
    seed: int = 0
    scale: float = 1.0

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")


@dataclass
class DataSettings:
    """Real datasets: each a `kind:path` spec or a manifest file (see `clapcurate.data.readers.read_data`).

    `benchmarks`: the target tasks by the names the report gives them, each its labelled data
    (`esc50:DIR`, `csv:FILE`, `classes:DIR`, a manifest) or a mapping of `data`, `template`,
    `label_words`, `recording_column` (`clapcurate.tasks.TaskSpec`)."""

    captioned: list[str] = field(default_factory=list)
    pool: str = ""
    benchmarks: dict[str, Any] = field(default_factory=dict)
    tagged: str = ""  # labelled clips for `pretrain_audio` (e.g. audioset:balanced_train_segments.csv)

    def __post_init__(self):
        self.tasks()  # every task checked when the config loads

    def tasks(self) -> dict[str, TaskSpec]:
        """The target tasks by name."""
        return {str(name): task_from_config(str(name), value, f"data.benchmarks.{name}")
                for name, value in self.benchmarks.items()}


@dataclass
class LengthSettings:
    """Training length measured, not assumed: the full teacher's students `models` of one
    `benchmark` trained for each number of `steps` (first seed only; the configured
    `student.trainer.max_steps` is the main table's length). `ADS oracle` needs the embedded world."""

    benchmark: str = "esc50"
    steps: list[int] = field(default_factory=lambda: [320, 1280])
    models: list[str] = field(default_factory=lambda: ["SL", "ADS", "ADS+SL", "ADS oracle"])

    def __post_init__(self):
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"steps must be positive numbers of steps, got {self.steps}")
        known = [*method.STUDENT_METHODS, *(f"{m} oracle" for m in method.STUDENT_METHODS)]
        unknown = [name for name in self.models if name not in known]
        if unknown:
            raise ValueError(f"models: {unknown[0]!r} is not a student (known: {', '.join(known)})")


@dataclass
class CurationSettings:
    """Thresholds: sigma (absolute cosine) or keep_fraction (a quantile of all pairs)."""

    du_sigma: float | None = method.SIGMA["du"]
    du_keep_fraction: float | None = None
    du_max_captions_per_clip: int | None = 1
    ds_sigma: float | None = method.SIGMA["ds"]
    ds_keep_fraction: float | None = None
    ads_sigma: float | None = method.SIGMA["ads"]
    ads_keep_fraction: float | None = None
    ads_max_captions_per_clip: int | None = 1
    block_size: int = 8192
    # selection criteria compared on the embedded world (`study.selections`), e.g. [cosine, csls,
    # mutual]: each curates DU and ADS once more at selection_keep_fraction for the precision
    # curves, and trains DU and ADS+SL students on its best pairs at the cosine sets' sizes
    selections: list[str] = field(default_factory=list)
    selection_k: int = DEFAULT_SELECTION_K
    selection_keep_fraction: float = 0.02

    def __post_init__(self):
        for name in self.selections:
            if name not in SELECTIONS:
                raise ValueError(f"selections: {name!r} is not a selection ({', '.join(SELECTIONS)})")
        if self.selection_k < 1:
            raise ValueError(f"selection_k must be at least 1, got {self.selection_k}")
        if not 0.0 < self.selection_keep_fraction <= 1.0:
            raise ValueError(f"selection_keep_fraction must lie in (0, 1], got {self.selection_keep_fraction}")
        for kind in ("du", "ds", "ads"):
            sigma, keep = getattr(self, f"{kind}_sigma"), getattr(self, f"{kind}_keep_fraction")
            if sigma is not None and not -1.0 <= sigma <= 1.0:
                raise ValueError(f"{kind}_sigma is a cosine similarity and must lie in [-1, 1], got {sigma}")
            if keep is not None and not 0.0 < keep <= 1.0:
                raise ValueError(f"{kind}_keep_fraction must lie in (0, 1], got {keep}")
        for key in ("du_max_captions_per_clip", "ads_max_captions_per_clip", "block_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")


MARKED_SET = re.compile(r"[^/]+_s(\d+)/(du|ds_[\w-]+|ads_[\w-]+)")  # a `marks` key: a curated set's folder


@dataclass
class StudyConfig:
    """The whole study. The stage sections are the stage configs they become (`TaggerConfig`,
    `TeacherConfig`, `StudentConfig`, `CLAPConfig`), without the keys the study sets itself
    (`STUDY_OWNED_KEYS`: data paths, seeds, output folders)."""

    name: str = "study"
    out_root: str = "runs"
    world: WorldSettings | None = None
    data: DataSettings = field(default_factory=DataSettings)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    low_resource_fraction: float | None = method.LOW_RESOURCE_FRACTION
    model: CLAPConfig = field(default_factory=CLAPConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # changes to `teacher` for the low-resource teacher (any `teacher` key, nested)
    low_resource_teacher: dict[str, Any] = field(default_factory=dict)
    # a checkpoint folder or published weights file (LAION-CLAP, MS CLAP 2022/2023; imported once
    # into the study folder) to use as the teacher instead of training one; needs
    # low_resource_fraction: null, and `model`, `teacher`, `pretrain_audio` then go unused
    teacher_checkpoint: str = ""
    teacher_text_encoder: str | None = None  # a weights file's text encoder (name or folder; default: its family's)
    # pretrain the teachers' audio encoder (`model.audio`) as a tagger on `data.tagged` once, as
    # PANNs' CNNs were pretrained on AudioSet; null: no pretraining (real data: give
    # `teacher.init_audio_encoder` a PANNs checkpoint instead)
    pretrain_audio: TaggerConfig | None = None
    student: StudentConfig = field(default_factory=StudentConfig)
    curation: CurationSettings = field(default_factory=CurationSettings)
    variants: bool = True
    # student methods bracketed by an oracle and a shuffled student (`study.brackets`; the
    # embedded world only, it needs ground truth), e.g. [DU, ADS+SL]
    brackets: list[str] = field(default_factory=list)
    lengths: LengthSettings | None = None  # students trained for other numbers of steps
    eval_batch_size: int = 64
    num_workers: int | str = AUTO  # audio-decoding workers of embedding and evaluation (auto: several on a GPU)
    device: str = AUTO  # where every stage runs: auto (a GPU when there is one), cpu, cuda, cuda:N
    # hand-marked samples of curated sets (CSVs saved by the browser's "mark a random sample"), by the
    # set's folder under curated/, e.g. {full_s0/ads_esc50: marks/ads_esc50.csv}: the report shows
    # each sample's precision with its 95% Wilson interval beside the set
    marks: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_device(self.device)
        for key in self.marks:
            found = MARKED_SET.fullmatch(key)
            if not found or int(found.group(1)) not in self.seeds:
                raise ValueError(f"marks: {key!r} is not a curated set's folder under curated/ "
                                 f"(TEACHER_sSEED/SET with a seed of `seeds`, e.g. full_s{self.seeds[0]}/ads_esc50)")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.low_resource_fraction is not None and not 0.0 < self.low_resource_fraction < 1.0:
            raise ValueError(f"low_resource_fraction must lie in (0, 1) (or null: no low-resource teacher), "
                             f"got {self.low_resource_fraction}")
        if self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
        check_auto("num_workers", self.num_workers, int)
        pool_methods = [name for name, (curated, _) in method.STUDENT_METHODS.items() if curated in ("du", "ads")]
        for name in self.brackets:
            if name not in pool_methods:
                raise ValueError(f"brackets: {name!r} is not a student of pool pairs ({', '.join(pool_methods)})")
        if self.brackets and self.world is None:
            raise ValueError("brackets need the embedded world's ground truth (a `world` section)")
        if self.curation.selections and self.world is None:
            raise ValueError("curation.selections need the embedded world's ground truth (a `world` section)")
        if self.lengths and any(m.endswith(" oracle") for m in self.lengths.models) and self.world is None:
            raise ValueError("lengths: oracle students need the embedded world's ground truth (a `world` section)")

    @property
    def low_resource(self) -> method.LowResource | None:
        return method.LowResource(self.low_resource_fraction) if self.low_resource_fraction else None

    def low_resource_teacher_config(self) -> TeacherConfig:
        """`teacher` with the `low_resource_teacher` changes."""
        return from_dict(TeacherConfig, deep_merge(to_dict(self.teacher), self.low_resource_teacher),
                         prefix="low_resource_teacher.")


def _given(section: dict, dotted: str) -> bool:
    node = section
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def load_study_config(path, overrides=None) -> StudyConfig:
    """A validated `StudyConfig`: every section is checked completely when loaded (full key paths
    in the messages), including the low-resource teacher's changes."""
    data = apply_overrides(read_yaml(path), overrides)
    for section, owned in STUDY_OWNED_KEYS.items():
        given = [key for key in owned if _given(data.get(section) or {}, key)]
        if given:
            raise ConfigError(f"{section}.{given[0]} is set by the study itself; remove it from the study config")
    config = from_dict(StudyConfig, data)
    config.low_resource_teacher_config()
    if config.teacher_checkpoint and config.low_resource_fraction:
        raise ConfigError("teacher_checkpoint: a given teacher has no 10% counterpart; set low_resource_fraction: null")
    if config.world is None and not (config.data.captioned and config.data.pool and config.data.benchmarks):
        raise ConfigError("data.captioned, data.pool and data.benchmarks are required without `world`")
    return config


def world_data(world_dir: Path) -> DataSettings:
    """The embedded world's parts as dataset specs."""
    return DataSettings(
        captioned=[f"clotho:{world_dir / 'corpus' / 'clotho'}", f"audiocaps:{world_dir / 'corpus' / 'audiocaps'}"],
        pool=f"audioset:{world_dir / 'pool' / 'unbalanced_train_segments.csv'}",
        tagged=f"audioset:{world_dir / 'tagged' / 'balanced_train_segments.csv'}",
        benchmarks={"esc50": f"esc50:{world_dir / 'benchmarks' / 'esc50'}",
                    "urbansound8k": f"urbansound8k:{world_dir / 'benchmarks' / 'urbansound8k'}",
                    "tut2017": f"tut2017:{world_dir / 'benchmarks' / 'tut2017'}"},
    )


def check_study_inputs(config: StudyConfig) -> None:
    """The given teacher and every dataset (without `world`) exist, before the study folder is made
    or any model loaded, and the device is there; `ConfigError` naming the key otherwise."""
    from ..data.readers import check_data
    from ..device import resolve_device
    from ..model.checkpoints import require_model_path

    resolve_device(config.device)
    if config.teacher_checkpoint:
        require_model_path(config.teacher_checkpoint, "teacher_checkpoint")
    if config.world is None:
        given = {**{f"data.captioned[{i}]": spec for i, spec in enumerate(config.data.captioned)},
                 "data.pool": config.data.pool, "data.tagged": config.data.tagged}
        for key, spec in given.items():
            if spec:
                check_data(spec, key)
        for name, task in config.data.tasks().items():
            check_task(task, f"data.benchmarks.{name}")
    for key, path in config.marks.items():
        if not Path(path).is_file():
            raise ConfigError(f"marks.{key}: {path} is not a file (a CSV saved by the browser's \"save marks\")")
