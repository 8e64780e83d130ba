"""The paper's study as one resumable pipeline.

data -> (audio-encoder pretraining on labelled clips) -> teachers (all pairs; 10% of them) -> per teacher: embeddings, DU once, DS and ADS per
benchmark -> students of Tables 2 and 3 (+ ADS+SL variants) -> zero-shot evaluation -> report.
Every stage is kept on disk (`runs/<name>/stages/`): a second run recomputes nothing that is done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .. import method
from ..config import apply_overrides, deep_merge, from_dict, read_yaml, to_dict
from ..data.readers import check_data
from ..device import AUTO, check_auto, check_device
from ..errors import ConfigError
from ..files import check_output_folder
from ..model.checkpoints import require_model_path
from ..model.clap import CLAPConfig
from ..search import DEFAULT_SELECTION_K, SELECTIONS
from ..train.config import StudentConfig, TaggerConfig, TeacherConfig, result_settings
from . import browsers, report, selections
from .fits import run_fit
from .stages import StageRunner

# Settings a resumed run may change: which seeds and variants to add, and how fast and where to
# compute (a finished stage stays valid on another device; `precision: auto` is compared as what
# it resolves to there, see `train.config.result_settings`).
RESUMABLE_KEYS = ("seeds", "variants", "brackets", "lengths", "num_workers", "eval_batch_size", "out_root", "name",
                  "device")
SETTINGS_FILE = "settings.json"  # the settings a run's stages were computed with
FEATURES_DIR = "features"  # the log-mel cache of fits that run in child processes (`study.fits`)

# Each fit is one resumable stage of the study: no per-validation resume state (a crash reruns
# that fit); students are evaluated at their last step, so they keep no `best/`.
STAGE_TRAINER = {"save_resume_state": False, "progress_bar": False}
# The benchmark clips' log-mels, computed once per front-end and read by every evaluated model.
BENCHMARK_FEATURES = "benchmark_features"

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
    """Real datasets: each a `kind:path` spec or a manifest file (see `clapcurate.data.readers.read_data`)."""

    captioned: list[str] = field(default_factory=list)
    pool: str = ""
    benchmarks: dict[str, str] = field(default_factory=dict)
    tagged: str = ""  # labelled clips for `pretrain_audio` (e.g. audioset:balanced_train_segments.csv)


@dataclass
class LengthSettings:
    """Training length measured, not assumed: the full teacher's students `methods` of one
    `benchmark` trained for each number of `steps` (first seed only; the configured
    `student.trainer.max_steps` is the main table's length). `ADS oracle` needs the embedded world."""

    benchmark: str = "esc50"
    steps: list[int] = field(default_factory=lambda: [320, 1280])
    methods: list[str] = field(default_factory=lambda: ["SL", "ADS", "ADS+SL", "ADS oracle"])

    def __post_init__(self):
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"steps must be positive numbers of steps, got {self.steps}")
        known = [*method.STUDENT_METHODS, *(f"{m} oracle" for m in method.STUDENT_METHODS)]
        unknown = [name for name in self.methods if name not in known]
        if unknown:
            raise ValueError(f"methods: {unknown[0]!r} is not a student (known: {', '.join(known)})")


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

    def __post_init__(self):
        check_device(self.device)
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
        if self.lengths and any(m.endswith(" oracle") for m in self.lengths.methods) and self.world is None:
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
    unknown = set(config.data.benchmarks) - set(report.BENCHMARKS)
    if unknown:
        raise ConfigError(f"data.benchmarks: unknown benchmark {sorted(unknown)[0]!r} "
                          f"(known: {', '.join(report.BENCHMARKS)})")
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


@dataclass
class StudentSpec:
    """One student of the study: its method name, data and loss."""

    method: str
    benchmark: str | None  # DS / ADS students belong to one benchmark
    improvement_set: str
    replay: str
    soft_labels: bool
    loss_overrides: dict[str, Any] = field(default_factory=dict)
    table: str = "main"  # "main", "variant", "bracket" or "length"
    max_steps: int | None = None  # another training length than student.trainer.max_steps


class Study:
    """One study run in `out_root/name`: every stage is kept on disk and skipped when done."""

    def __init__(self, config: StudyConfig, console=None):
        from rich.console import Console

        self.config = config
        self.console = console or Console()
        self.out = check_output_folder((Path(config.out_root) / config.name).resolve(), "study folder")
        self.check_settings()
        self.stages = StageRunner(self.out, log=self.console.print)
        self.data = config.data
        self.notes: list[str] = []

    def check_settings(self) -> None:
        """Refuse to resume stages computed with other settings (their results would be reused
        silently); record the settings of a new run."""
        settings = result_settings({key: value for key, value in to_dict(self.config).items()
                                    if key not in RESUMABLE_KEYS}, self.config.device)
        recorded = self.out / SETTINGS_FILE
        has_stages = any((self.out / "stages").glob("*.json"))
        if recorded.is_file():
            pretrain = TaggerConfig() if self.config.pretrain_audio is not None else None
            defaults = result_settings(json.loads(json.dumps(to_dict(StudyConfig(world=self.config.world,
                                                                                 pretrain_audio=pretrain)))),
                                       self.config.device)
            changed = _changed_keys(result_settings(json.loads(recorded.read_text()), self.config.device),
                                    json.loads(json.dumps(settings)), defaults)
            if changed:
                raise ConfigError(
                    f"{self.out} holds stages computed with other settings ({', '.join(changed[:8])}"
                    f"{', ...' if len(changed) > 8 else ''} changed); choose another name or delete that folder")
        elif has_stages:
            raise ConfigError(f"{self.out} holds stages whose settings were not recorded (an older clapcurate); "
                              "choose another name or delete that folder")
        else:
            recorded.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")

    # ----------------------------------------------------------------- data
    def prepare_data(self) -> dict[str, str]:
        from ..curate import refuse_benchmark_audio
        from ..data.manifest import write_manifest
        from ..data.readers import read_data

        cfg = self.config
        if cfg.world is not None:
            world_dir = Path(cfg.world.dir)

            def make_world():
                from ..data.synth import generate_world

                described = world_dir / "world.json"
                if not described.is_file():
                    generate_world(world_dir, seed=cfg.world.seed, scale=cfg.world.scale, progress=True)
                existing = json.loads(described.read_text())
                if (existing["seed"], existing["scale"]) != (cfg.world.seed, cfg.world.scale):
                    raise ConfigError(
                        f"{world_dir} holds a world of seed {existing['seed']} and scale {existing['scale']}, "
                        f"not the configured world.seed {cfg.world.seed} and world.scale {cfg.world.scale}: "
                        "choose another world.dir or delete that folder")
                return str(world_dir)

            self.stages.run("world", make_world)
            self.data = world_data(world_dir)

        def make_manifests():
            out = self.out / "manifests"
            out.mkdir(exist_ok=True)
            paths = {}
            train = pd.concat([read_data(spec) for spec in self.data.captioned], ignore_index=True)
            paths["train"] = str(write_manifest(train, out / "train.csv"))
            pool = read_data(self.data.pool)
            paths["pool"] = str(write_manifest(pool, out / "pool.csv"))
            for name, spec in self.data.benchmarks.items():
                benchmark = read_data(spec)
                refuse_benchmark_audio(pool, benchmark, name)  # before any pool audio is read
                paths[name] = str(write_manifest(benchmark, out / f"bench_{name}.csv"))
            return paths

        return self.stages.run("manifests", make_manifests)

    def low_resource_manifest(self, train_path: str, seed: int) -> str:
        """A reproducible random `low_resource_fraction` of the training pairs."""
        from ..data.manifest import read_manifest, take_subset, write_manifest

        name = f"train_{self.config.low_resource.slug}_s{seed}"

        def make():
            subset = take_subset(read_manifest(train_path), self.config.low_resource_fraction, seed)
            return str(write_manifest(subset, self.out / "manifests" / f"{name}.csv"))

        return self.stages.run(f"manifests/{name}", make)

    # ------------------------------------------------------------- training
    def pretrain_audio(self) -> str | None:
        """The pretrained audio encoder the teachers start from (None: they start from scratch)."""
        from .. import train

        cfg = self.config
        if cfg.pretrain_audio is None or cfg.teacher.init_audio_encoder or cfg.teacher_checkpoint:
            return None
        if not self.data.tagged:
            raise ConfigError("pretrain_audio needs data.tagged (labelled clips, e.g. audioset:balanced_train_segments.csv)")

        def fit():
            labels_csv = (str(Path(cfg.world.dir) / "tagged" / "class_labels_indices.csv")
                          if cfg.world is not None else None)
            base = cfg.pretrain_audio
            config = dataclasses.replace(
                base, audio=cfg.model.audio, trainer=_stage_trainer(base.trainer, keep_best=True, device=cfg.device),
                data=dataclasses.replace(base.data, train=self.data.tagged, labels_csv=labels_csv),
                out_dir=str(self.out / "pretrained_audio"), overwrite=True)
            run_dir = run_fit(config, self.out / FEATURES_DIR)
            metrics = pd.read_csv(run_dir / "metrics.csv")
            summary = json.loads((run_dir / "summary.json").read_text())
            val_map = metrics["val_mAP"].dropna()
            return {"checkpoint": str(run_dir / "best" / train.module.TAGGER_CHECKPOINT),
                    "train_clips": summary["train_clips"], "classes": summary["classes"],
                    "val_mAP": float(val_map.max()) if len(val_map) else float("nan")}

        record = self.stages.run("pretrain_audio", fit)
        self.notes.append(
            f"Both teachers' audio encoders start from a tagger pretrained on {record['train_clips']:,} labelled clips "
            f"of `data.tagged` ({record['classes']} classes, validation mAP {record['val_mAP']:.2f}), as MS CLAP's "
            "CNN14 starts from PANNs pretrained on AudioSet; the pool stays unlabelled.")
        return record["checkpoint"]

    def fit_teacher(self, kind: str, train_manifest: str, seed: int, init_audio_encoder: str | None = None) -> str:
        if self.config.teacher_checkpoint:  # a given teacher: every seed's students start from it
            return self.given_teacher()

        def fit():
            base = self.config.teacher if kind == "full" else self.config.low_resource_teacher_config()
            config = dataclasses.replace(
                base, model=self.config.model, data=dataclasses.replace(base.data, train_manifest=train_manifest),
                trainer=_stage_trainer(base.trainer, device=self.config.device), seed=seed,
                init_audio_encoder=init_audio_encoder or base.init_audio_encoder, overwrite=True,
                out_dir=str(self.out / "teachers" / f"{self.slug(kind)}_s{seed}"))
            return str(run_fit(config, self.out / FEATURES_DIR) / "best")

        return self.stages.run(f"teacher/{self.slug(kind)}_s{seed}", fit)

    def given_teacher(self) -> str:
        """The checkpoint folder of `teacher_checkpoint`: the folder itself, or a published weights
        file imported once into the study folder (`teachers/given`)."""
        from ..model.checkpoints import load, load_model, save

        given = Path(self.config.teacher_checkpoint)
        if given.is_dir():
            load(given)  # a readable checkpoint folder, or a clear error now
            return str(given)

        def imported() -> str:
            return str(save(load_model(given, self.config.teacher_text_encoder), self.out / "teachers" / "given"))

        return self.stages.run("teacher/given", imported)

    def fit_student(self, kind: str, teacher_ckpt: str, spec: StudentSpec, seed: int,
                    embeddings: dict[str, str]) -> str:
        name = self.student_name(kind, spec, seed)

        def fit():
            base = self.config.student
            loss = {"kind": "soft_label" if spec.soft_labels else "contrastive", **spec.loss_overrides}
            if loss.get("teacher_targets", base.loss.teacher_targets) == "cached":
                loss.update(teacher_audio_embeddings=[embeddings["audio"], embeddings["train_audio"]],
                            teacher_text_embeddings=[embeddings["text"]])
            loss = dataclasses.replace(base.loss, **loss)
            # a student trained to a stopping rule is evaluated at its best validation loss, one
            # trained for a fixed number of steps at its last step
            stopping = bool(base.trainer.early_stopping_patience)
            trainer = _stage_trainer(base.trainer, keep_best=stopping, device=self.config.device,
                                     **({"max_steps": spec.max_steps} if spec.max_steps else {}))
            config = dataclasses.replace(
                base, teacher=teacher_ckpt, improvement_set=spec.improvement_set, replay_manifest=spec.replay,
                loss=loss, trainer=trainer, seed=seed, overwrite=True,
                out_dir=str(self.out / "students" / name))
            return str(run_fit(config, self.out / FEATURES_DIR) / ("best" if stopping else "last"))

        return self.stages.run(f"student/{name}", fit)

    # ------------------------------------------------------------- curation
    def embed(self, kind: str, seed: int, ckpt: str, manifests: dict[str, str],
              train_manifest: str) -> dict[str, str]:
        """The teacher's embeddings: pool audio and all training captions (for curation), and its
        own training audio (for students with cached teacher targets on replay batches)."""
        from ..embed import embed_manifest

        def run():
            out = self.out / "embeddings" / f"{self.slug(kind)}_s{seed}"
            jobs = {"audio": (manifests["pool"], "pool_audio", "audio"),
                    "train_audio": (train_manifest, "train_audio", "audio"),
                    "text": (manifests["train"], "caption_text", "text")}
            return {key: str(embed_manifest(ckpt, manifest, out / name, modality=modality,
                                            num_workers=self.config.num_workers, progress=True,
                                            device=self.config.device))
                    for key, (manifest, name, modality) in jobs.items()}

        return self.stages.run(f"embed/{self.slug(kind)}_s{seed}", run)

    def curation_runner(self, kind: str, seed: int, ckpt: str, manifests: dict[str, str], train_manifest: str,
                        embeddings: dict[str, str], folder: str = "curated"):
        """run(method, name, settings) -> the manifest of one curation stage of this teacher, into
        `<folder>/<teacher>_s<seed>/<name>`."""
        from .. import curate

        base = dict(teacher=ckpt, pool_manifest=manifests["pool"], train_manifest=manifests["train"],
                    teacher_train_manifest=train_manifest, pool_embeddings=embeddings["audio"],
                    caption_embeddings=embeddings["text"], block_size=self.config.curation.block_size,
                    device=self.config.device)
        out = self.out / folder / f"{self.slug(kind)}_s{seed}"
        stage = f"curate/{self.slug(kind)}_s{seed}" if folder == "curated" else f"{folder}/{self.slug(kind)}_s{seed}"

        def run(method: str, name: str, settings: dict) -> str:
            if settings.get("keep_fraction") is not None:
                settings["sigma"] = None  # a quantile threshold replaces the absolute one
            config = from_dict(curate.CurationConfig, {**base, **settings, "out_dir": str(out / name), "overwrite": True})
            return self.stages.run(f"{stage}/{name}", lambda: str(curate.run_curation(method, config)))

        return run

    def curate(self, kind: str, seed: int, ckpt: str, manifests: dict[str, str], train_manifest: str,
               embeddings: dict[str, str]) -> dict[str, str]:
        c = self.config.curation
        run = self.curation_runner(kind, seed, ckpt, manifests, train_manifest, embeddings)
        sets = {"DU": run("du", "du", {"sigma": c.du_sigma, "keep_fraction": c.du_keep_fraction,
                                       "max_captions_per_clip": c.du_max_captions_per_clip})}
        for bench in self.data.benchmarks:
            target = {"benchmark_manifest": manifests[bench], "benchmark": bench}
            # DS selects among the teacher's own pairs (the 10% teacher's 10%, whose captions are
            # then embedded in the DS folder itself)
            own = {} if train_manifest == manifests["train"] else {"train_manifest": train_manifest,
                                                                   "caption_embeddings": ""}
            sets[f"DS/{bench}"] = run("ds", f"ds_{bench}", {**target, **own, "sigma": c.ds_sigma,
                                                            "keep_fraction": c.ds_keep_fraction})
            sets[f"ADS/{bench}"] = run("ads", f"ads_{bench}", {
                **target, "ds_manifest": sets[f"DS/{bench}"], "sigma": c.ads_sigma,
                "keep_fraction": c.ads_keep_fraction, "max_captions_per_clip": c.ads_max_captions_per_clip})
        return sets

    def selection_students(self, kind: str, seed: int, ckpt: str, manifests: dict[str, str], train_manifest: str,
                           embeddings: dict[str, str], sets: dict[str, str],
                           specs: list[StudentSpec]) -> tuple[list[dict], list[StudentSpec]]:
        """`curation.selections` (`study.selections`): each criterion's DU and ADS sets curated at
        `selection_keep_fraction`, ranked; (their precision curves, the students of the criteria
        other than cosine on their best pairs at the study's set sizes)."""
        from ..data.manifest import read_manifest, write_manifest

        c = self.config.curation
        run = self.curation_runner(kind, seed, ckpt, manifests, train_manifest, embeddings, "selections")
        curves, students = [], []
        for key, path in sets.items():
            set_kind, _, bench = key.partition("/")
            if set_kind not in ("DU", "ADS"):
                continue
            name = Path(path).parent.name
            for selection in c.selections:
                settings = {"keep_fraction": c.selection_keep_fraction, "selection": selection,
                            "selection_k": c.selection_k,
                            "max_captions_per_clip": c.du_max_captions_per_clip if set_kind == "DU"
                            else c.ads_max_captions_per_clip}
                if set_kind == "ADS":
                    settings.update(benchmark_manifest=manifests[bench], benchmark=bench, ds_manifest=sets[f"DS/{bench}"])
                curated = run(set_kind.lower(), f"{name}_{selection}", settings)

                def matched(curated=curated, selection=selection):
                    rows = selections.ranked(read_manifest(curated))
                    size = len(read_manifest(path))
                    right = self.truth().pair_is_right(rows, manifests["train"], bench or None)
                    out = Path(curated).parent / "matched"
                    out.mkdir(exist_ok=True)
                    return {"set": str(write_manifest(rows.iloc[:size], out / "improvement_set.csv")),
                            "matched": size, "right": "".join("1" if r else "0" for r in right)}

                record = self.stages.run(f"selections/{self.slug(kind)}_s{seed}/{name}_{selection}/matched", matched)
                right = np.array([char == "1" for char in record["right"]], dtype=bool)
                curves += selections.curve_rows(kind, seed, key, selection, right, record["matched"])
                model = "DU" if set_kind == "DU" else "ADS+SL"
                spec = next((s for s in specs if s.table == "main" and s.method == model
                             and s.benchmark == (bench or None)), None)
                if spec is not None and selection != "cosine":
                    students.append(dataclasses.replace(spec, method=selections.student_name(model, selection),
                                                        improvement_set=record["set"], table="selection"))
        return curves, students

    # ----------------------------------------------------------- evaluation
    def evaluate(self, kind: str, method: str, seed: int, ckpt: str, bench: str, manifests: dict[str, str],
                 stage: str) -> dict:
        from ..data.manifest import read_manifest
        from ..device import resolve_device
        from ..model.checkpoints import load
        from ..zeroshot import evaluate

        def run():
            model = load(ckpt, device=resolve_device(self.config.device))
            result = evaluate(model, read_manifest(manifests[bench]), batch_size=self.config.eval_batch_size,
                              num_workers=self.config.num_workers, feature_cache=self.out / BENCHMARK_FEATURES)
            correct = result.predictions["label"] == result.predictions["predicted"]
            return {"accuracy": result.accuracy, "per_class": result.per_class, "n_clips": result.n_clips,
                    "skipped": len(result.skipped), "correct": "".join("1" if c else "0" for c in correct),
                    "clips": _digest(result.predictions["id"])}

        record = self.stages.run(f"eval/{stage}/{bench}", run)
        return {"teacher": kind, "method": method, "seed": seed, "benchmark": bench, **record}

    # ---------------------------------------------------------------- plan
    def slug(self, kind: str) -> str:
        """Folder and stage name of a teacher kind: `full`, or the low-resource slug (`low10`)."""
        return "full" if kind == "full" else self.config.low_resource.slug

    def student_name(self, kind: str, spec: StudentSpec, seed: int) -> str:
        name = spec.method.replace("+", "_").replace(" ", "_").replace("=", "-").replace("@", "")
        return f"{self.slug(kind)}_s{seed}/{name}" + (f"_{spec.benchmark}" if spec.benchmark else "")

    def students(self, kind: str, train_manifest: str, sets: dict[str, str]) -> list[StudentSpec]:
        """The students of one teacher: the paper's Table 2 for the full teacher, Table 3 for the
        low-resource one (`method.STUDENT_METHODS`, `method.LOW_RESOURCE_METHODS`), each with the
        Improvement-Set and the replay set `method.replayed_set` prescribes; then the ADS+SL
        variants of the full teacher."""
        def path(curated_set: str, bench: str | None) -> str:
            return {"train": train_manifest, "du": sets["DU"]}.get(curated_set) or sets[f"{curated_set.upper()}/{bench}"]

        def spec(name: str, bench: str | None, overrides: dict | None = None, table: str = "main") -> StudentSpec:
            curated_set, soft_labels = method.STUDENT_METHODS[name.split(" ")[0]]
            return StudentSpec(name, bench, path(curated_set, bench), path(method.replayed_set(curated_set), bench),
                               soft_labels, overrides or {}, table)

        names = method.STUDENT_METHODS if kind == "full" else method.LOW_RESOURCE_METHODS
        per_benchmark = [name for name in names if method.STUDENT_METHODS[name][0] in ("ds", "ads")]
        specs = [spec(name, None) for name in names if name not in per_benchmark]
        specs += [spec(name, bench) for bench in self.data.benchmarks for name in per_benchmark]
        if kind == "full" and self.config.variants:
            main_loss = self.config.student.loss
            other_targets = "cached" if main_loss.teacher_targets == "online" else "online"
            for bench in self.data.benchmarks:
                specs += [spec(f"ADS+SL norm={norm}", bench, {"target_norm": norm}, "variant")
                          for norm in method.TARGET_NORMS if norm != main_loss.target_norm]
                specs.append(spec(f"ADS+SL targets={other_targets}", bench, {"teacher_targets": other_targets},
                                  "variant"))
        return specs

    # ----------------------------------------------------------------- run
    def run(self) -> str:
        t0 = time.perf_counter()
        manifests = self.prepare_data()
        pretrained = self.pretrain_audio()
        rows, variant_rows, counts, bracket_rows, length_rows = [], [], [], [], []
        selection_rows, curves = [], []
        low = self.config.low_resource
        kinds = ["full"] + ([low.label] if low else [])
        if low:
            self.notes.append(
                f"The {low.label} teacher trains on a random {low.label} of the pairs "
                "(per seed); its DS pairs come only from those pairs, while the captions of the other pairs "
                "serve as unpaired text for its DU and ADS matching, and its students replay its own pairs.")
        if self.truth() is not None:
            self.notes.append("Curated-set precision and rare/frequent classes use the embedded world's "
                              "ground truth (`ground_truth/`), which curation never reads.")
        for seed in self.config.seeds:
            for kind in kinds:
                train_manifest = (manifests["train"] if kind == "full"
                                  else self.low_resource_manifest(manifests["train"], seed))
                ckpt = self.fit_teacher(kind, train_manifest, seed, pretrained)
                for bench in self.data.benchmarks:
                    rows.append(self.evaluate(kind, "teacher", seed, ckpt, bench, manifests,
                                              f"{self.slug(kind)}_s{seed}/teacher"))
                embeddings = self.embed(kind, seed, ckpt, manifests, train_manifest)
                sets = self.curate(kind, seed, ckpt, manifests, train_manifest, embeddings)
                counts += self.curated_counts(kind, seed, sets, manifests)
                browsers.write_browsers(sets, manifests["train"], self.truth())
                if kind == "full" and seed == self.config.seeds[0] and self.truth() is not None:
                    self.peakedness = self.target_peakedness(seed, ckpt, train_manifest, embeddings)
                specs = self.students(kind, train_manifest, sets)
                specs += [arm for spec in specs if spec.table == "main" and spec.method in self.config.brackets
                          for arm in self.bracket_students(kind, seed, spec, train_manifest, manifests, embeddings)]
                if kind == "full" and seed == self.config.seeds[0] and self.config.lengths:
                    specs += self.length_students(seed, specs, train_manifest, manifests, embeddings)
                if self.config.curation.selections:
                    set_curves, selection_specs = self.selection_students(kind, seed, ckpt, manifests, train_manifest,
                                                                          embeddings, sets, specs)
                    curves += set_curves
                    specs += selection_specs
                for spec in specs:
                    student = self.fit_student(kind, ckpt, spec, seed, embeddings)
                    for bench in ([spec.benchmark] if spec.benchmark else self.data.benchmarks):
                        row = self.evaluate(kind, spec.method, seed, student, bench, manifests,
                                            self.student_name(kind, spec, seed))
                        {"main": rows, "variant": variant_rows, "bracket": bracket_rows,
                         "length": length_rows, "selection": selection_rows}[spec.table].append(row)
        return self.write_outputs(rows, variant_rows, counts, time.perf_counter() - t0, bracket_rows, length_rows,
                                  selection_rows, curves)

    def target_peakedness(self, seed: int, ckpt: str, train_manifest: str, embeddings: dict[str, str]) -> dict:
        """`study.targets.target_mass` of the full teacher's audio targets on batches of its own
        training clips (the student config's beta and batch size, the teacher's temperature)."""
        from ..data.manifest import read_manifest
        from ..embed import load_embeddings
        from ..model.checkpoints import load
        from .targets import target_mass

        def run():
            ids, emb = load_embeddings(embeddings["train_audio"])
            path_of = dict(zip(*read_manifest(train_manifest)[["clip_id", "audio_path"]].T.values))
            events = [self.truth().clip_events(path_of[clip]) for clip in ids]
            scale = float(load(ckpt).logit_scale_exp())
            student = self.config.student
            table = target_mass(emb, events, student.loss.beta, scale, student.data.batch_size, seed=seed)
            return {"rows": table.to_dict("records"), "alike_share": table.attrs["alike_share"], "scale": scale}

        return self.stages.run(f"targets/full_s{seed}", run)

    def length_students(self, seed: int, specs: list[StudentSpec], train_manifest: str,
                        manifests: dict[str, str], embeddings: dict[str, str]) -> list[StudentSpec]:
        """`lengths.methods` of `lengths.benchmark` again at each of `lengths.steps` steps (a
        bracket arm whose model `brackets` leaves out also at the main length)."""
        lengths = self.config.lengths
        out = []
        for name in lengths.methods:
            base, _, arm = name.partition(" ")
            bench = None if method.STUDENT_METHODS[base][0] in ("train", "du") else lengths.benchmark
            spec = next((s for s in specs if s.method == base and s.benchmark == bench and s.table == "main"), None)
            if spec is None:
                continue
            if arm:
                spec = next(s for s in self.bracket_students("full", seed, spec, train_manifest, manifests, embeddings)
                            if s.method == name)
            steps = list(lengths.steps)
            if arm and base not in self.config.brackets:  # no bracket student at the main length: train one
                steps = [self.config.student.trainer.max_steps, *steps]
            out += [dataclasses.replace(spec, method=f"{name} @{count}", table="length", max_steps=count)
                    for count in steps]
        return out

    def bracket_students(self, kind: str, seed: int, spec: StudentSpec, train_manifest: str,
                         manifests: dict[str, str], embeddings: dict[str, str]) -> list[StudentSpec]:
        """The oracle and shuffled students of a curated student (`study.brackets`): the same
        replay, loss, steps and seed, on sets of the same size; the oracle draws from the pool
        clips curation could use (readable, i.e. embedded, and not in the teacher's training set)."""
        from ..curate import training_clip_mask
        from ..data.manifest import read_manifest, write_manifest
        from ..embed import load_embeddings, unique_captions, unique_clips
        from .brackets import oracle_set, shuffled_set

        curated_dir = Path(spec.improvement_set).parent
        name = f"brackets/{self.slug(kind)}_s{seed}/{curated_dir.name}"

        def make():
            out = self.out / name
            out.mkdir(parents=True, exist_ok=True)
            curated = read_manifest(spec.improvement_set)
            train = read_manifest(manifests["train"])
            if curated_dir.name == "du":
                candidates = unique_captions(train).assign(source_id=lambda t: t["id"], best_label="")
            else:
                candidates = read_manifest(spec.replay)  # the DS set whose captions ADS matched
            pool = unique_clips(read_manifest(manifests["pool"]))
            readable = set(load_embeddings(embeddings["audio"], dtype=np.float16)[0])
            pool = pool[pool["clip_id"].isin(readable).to_numpy()
                        & ~training_clip_mask(pool, read_manifest(train_manifest))].reset_index(drop=True)
            oracle, same_caption = oracle_set(curated, candidates, pool, self.truth(),
                                              dict(zip(train["id"], train["audio_path"])), seed)
            return {"oracle": str(write_manifest(oracle, out / "oracle.csv")),
                    "shuffled": str(write_manifest(shuffled_set(curated, seed), out / "shuffled.csv")),
                    "pairs": len(curated), "oracle_pairs": len(oracle), "oracle_same_caption": same_caption}

        record = self.stages.run(name, make)
        return [dataclasses.replace(spec, method=f"{spec.method} {arm}", improvement_set=record[arm], table="bracket")
                for arm in ("oracle", "shuffled")]

    def validation_curves(self) -> dict[str, pd.DataFrame]:
        """Each student's `metrics.csv` (its validation loss by step), by student name."""
        return {str(path.parent.relative_to(self.out / "students")): pd.read_csv(path)
                for path in sorted((self.out / "students").glob("*/*/metrics.csv"))}

    def truth(self):
        """The embedded world's ground truth (None for real data)."""
        from .groundtruth import WorldTruth

        if self.config.world is None:
            return None
        if not hasattr(self, "_truth"):
            self._truth = WorldTruth(self.config.world.dir)
        return self._truth

    def curated_counts(self, kind: str, seed: int, sets: dict[str, str], manifests: dict[str, str]) -> list[dict]:
        from ..data.manifest import read_manifest

        truth = self.truth()
        out = []
        for key, path in sets.items():
            method, _, bench = key.partition("/")
            out.append({"teacher": kind, "seed": seed, "method": method, "benchmark": bench or "all",
                        "pairs": len(read_manifest(path)), "pairs_at_sigma": _pairs_before_cap(path),
                        "path": str(Path(path).resolve()),
                        "precision": truth.precision(path, manifests["train"], bench) if truth else np.nan})
        return out

    def per_class_rows(self, rows: list[dict]) -> pd.DataFrame:
        """Per-class accuracy of every evaluation, each class marked rare or frequent in the corpus."""
        truth = self.truth()
        columns = ["teacher", "method", "seed", "benchmark", "group", "accuracy"]
        if truth is None:
            return pd.DataFrame(columns=columns)
        groups = {}
        out = []
        for row in rows:
            bench = row["benchmark"]
            if bench not in groups:
                groups[bench] = truth.rare_classes(bench, list(row["per_class"]))
            for label, acc in row["per_class"].items():
                out.append({**{k: row[k] for k in columns[:4]}, "group": groups[bench][label], "accuracy": acc})
        return pd.DataFrame(out, columns=columns)

    def write_outputs(self, rows, variant_rows, counts, seconds: float, bracket_rows=(), length_rows=(),
                      selection_rows=(), curves=()) -> str:
        results = pd.DataFrame(rows)
        selection_section = []
        if curves:
            selection_section = selections.write_comparison(self.out, results, pd.DataFrame(list(selection_rows)),
                                                            pd.DataFrame(list(bracket_rows)), pd.DataFrame(curves),
                                                            self.config.curation)
        results.drop(columns=["per_class", "correct", "clips"], errors="ignore").to_csv(self.out / "results.csv",
                                                                                          index=False)
        if bracket_rows:
            pd.DataFrame(list(bracket_rows)).drop(columns=["per_class", "correct", "clips"], errors="ignore").to_csv(
                self.out / "brackets.csv", index=False)
        variants = pd.DataFrame(variant_rows)
        if len(variants):
            variants = pd.concat([results[(results["teacher"] == "full") & (results["method"] == "ADS+SL")],
                                  variants], ignore_index=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False))
        header = (f"# Study `{self.config.name}`\n\nSeeds: {self.config.seeds}. "
                  f"Total wall time of this run: {seconds:.0f} s "
                  f"({len(self.stages.computed)} stages computed, the rest resumed from disk).\n\n"
                  f"Software: {_versions()}.")
        text = report.write_report(self.out, results, pd.DataFrame(counts), self.per_class_rows(rows),
                                   self.stages.timings, header, variants if len(variants) else None, self.notes,
                                   low_resource=self.config.low_resource.label if self.config.low_resource else "",
                                   validation_curves=self.validation_curves(),
                                   brackets=pd.DataFrame(list(bracket_rows)), lengths=pd.DataFrame(list(length_rows)),
                                   base_steps=self.config.student.trainer.max_steps,
                                   peakedness=getattr(self, "peakedness", None), selection_section=selection_section)
        self.console.print(text)
        self.console.print(f"[bold]report written to {self.out / 'report.md'}[/bold]")
        return str(self.out)


def _digest(ids) -> str:
    """A short digest of an ordered list of clip ids (paired comparisons need the same clips)."""
    import hashlib

    return hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def _stage_trainer(trainer, **changes):
    """A fit's trainer settings inside the study (`STAGE_TRAINER`, plus `changes`)."""
    return dataclasses.replace(trainer, **STAGE_TRAINER, **changes)


_ABSENT = object()


def _changed_keys(old, new, defaults=None, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings. A key the old mapping lacks
    (a setting added by a later clapcurate) is no change while the new value is its default."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new or (old is _ABSENT and new == defaults) else [prefix or "(all)"]
    defaults = defaults if isinstance(defaults, dict) else {}
    return [changed for key in sorted(set(old) | set(new))
            for changed in _changed_keys(old.get(key, _ABSENT), new.get(key, _ABSENT), defaults.get(key, _ABSENT),
                                         f"{prefix}.{key}" if prefix else key)]




def _pairs_before_cap(improvement_set: str) -> float:
    """The pairs of the search >= sigma before the per-clip cap, from the set's `stats.json`
    (NaN for a set curated before it recorded them)."""
    stats = json.loads((Path(improvement_set).parent / "stats.json").read_text())
    return stats.get("pairs_at_sigma", {}).get("before_cap", np.nan)


def _versions() -> str:
    import torch

    from .. import __version__

    return f"clapcurate {__version__}, torch {torch.__version__}, Python {platform.python_version()}"


def quiet_banners() -> None:
    """Many short in-process fits: keep Lightning's per-fit banners (devices, "max_steps
    reached") and transformers' loading bars off the screen. Lightning's irrelevant warnings
    are filtered by every fit itself (`train.console.quiet_lightning`); its real warnings pass."""
    import logging

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def check_study_inputs(config: StudyConfig) -> None:
    """The given teacher and every dataset (without `world`) exist, before the study folder is made
    or any model loaded, and the device is there; `ConfigError` naming the key otherwise."""
    from ..device import resolve_device

    resolve_device(config.device)
    if config.teacher_checkpoint:
        require_model_path(config.teacher_checkpoint, "teacher_checkpoint")
    if config.world is None:
        given = {**{f"data.captioned[{i}]": spec for i, spec in enumerate(config.data.captioned)},
                 "data.pool": config.data.pool, "data.tagged": config.data.tagged,
                 **{f"data.benchmarks.{name}": spec for name, spec in config.data.benchmarks.items()}}
        for key, spec in given.items():
            if spec:
                check_data(spec, key)


def run_study(config: StudyConfig) -> str:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ConfigError("a study runs as one process (not under torchrun or another launcher): the `trainer` "
                          "settings devices and num_nodes of its sections start the processes of each fit")
    quiet_banners()
    check_study_inputs(config)
    return Study(config).run()
