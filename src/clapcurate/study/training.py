"""The study's fits as resumable stages: the audio-encoder pretraining, the teachers (or a given
teacher imported once) and the students."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import ConfigError
from .fits import run_fit
from .plan import StudentSpec, slug, student_name

if TYPE_CHECKING:
    from .pipeline import Study


FEATURES_DIR = "features"  # the log-mel cache of fits that run in child processes (`study.fits`)


# Each fit is one resumable stage of the study: no per-validation resume state (a crash reruns
# that fit); students are evaluated at their last step, so they keep no `best/`.
STAGE_TRAINER = {"save_resume_state": False, "progress_bar": False}


def _stage_trainer(trainer, **changes):
    """A fit's trainer settings inside the study (`STAGE_TRAINER`, plus `changes`)."""
    return dataclasses.replace(trainer, **STAGE_TRAINER, **changes)


def pretrain_audio(study: Study) -> str | None:
    """The pretrained audio encoder the teachers start from (None: they start from scratch)."""
    from ..train.module import TAGGER_CHECKPOINT

    cfg = study.config
    if cfg.pretrain_audio is None or cfg.teacher.init_audio_encoder or cfg.teacher_checkpoint:
        return None
    if not study.data.tagged:
        raise ConfigError("pretrain_audio needs data.tagged (labelled clips, e.g. audioset:balanced_train_segments.csv)")

    def fit():
        labels_csv = (str(Path(cfg.world.dir) / "tagged" / "class_labels_indices.csv")
                      if cfg.world is not None else None)
        base = cfg.pretrain_audio
        config = dataclasses.replace(
            base, audio=cfg.model.audio, trainer=_stage_trainer(base.trainer, keep_best=True, device=cfg.device),
            data=dataclasses.replace(base.data, train=study.data.tagged, labels_csv=labels_csv),
            out_dir=str(study.out / "pretrained_audio"), overwrite=True)
        run_dir = run_fit(config, study.out / FEATURES_DIR)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        summary = json.loads((run_dir / "summary.json").read_text())
        val_map = metrics["val_mAP"].dropna()
        return {"checkpoint": str(run_dir / "best" / TAGGER_CHECKPOINT),
                "train_clips": summary["train_clips"], "classes": summary["classes"],
                "val_mAP": float(val_map.max()) if len(val_map) else float("nan")}

    record = study.stages.run("pretrain_audio", fit)
    study.notes.append(
        f"Both teachers' audio encoders start from a tagger pretrained on {record['train_clips']:,} labelled clips "
        f"of `data.tagged` ({record['classes']} classes, validation mAP {record['val_mAP']:.2f}), as MS CLAP's "
        "CNN14 starts from PANNs pretrained on AudioSet; the pool stays unlabelled.")
    return record["checkpoint"]


def fit_teacher(study: Study, kind: str, train_manifest: str, seed: int,
                init_audio_encoder: str | None = None) -> str:
    """The teacher of `kind` (full or low-resource) and `seed`, trained on `train_manifest`; its
    checkpoint folder."""
    if study.config.teacher_checkpoint:  # a given teacher: every seed's students start from it
        return given_teacher(study)

    def fit():
        base = study.config.teacher if kind == "full" else study.config.low_resource_teacher_config()
        config = dataclasses.replace(
            base, model=study.config.model, data=dataclasses.replace(base.data, train_manifest=train_manifest),
            trainer=_stage_trainer(base.trainer, device=study.config.device), seed=seed,
            init_audio_encoder=init_audio_encoder or base.init_audio_encoder, overwrite=True,
            out_dir=str(study.out / "teachers" / f"{slug(study.config, kind)}_s{seed}"))
        return str(run_fit(config, study.out / FEATURES_DIR) / "best")

    return study.stages.run(f"teacher/{slug(study.config, kind)}_s{seed}", fit)


def given_teacher(study: Study) -> str:
    """The checkpoint folder of `teacher_checkpoint`: the folder itself, or a published weights
    file imported once into the study folder (`teachers/given`)."""
    from ..model.checkpoints import load, load_model, save

    given = Path(study.config.teacher_checkpoint)
    if given.is_dir():
        load(given)  # a readable checkpoint folder, or a clear error now
        return str(given)

    def imported() -> str:
        return str(save(load_model(given, study.config.teacher_text_encoder), study.out / "teachers" / "given"))

    return study.stages.run("teacher/given", imported)


def fit_student(study: Study, kind: str, teacher_ckpt: str, spec: StudentSpec, seed: int,
                embeddings: dict[str, str]) -> str:
    name = student_name(study.config, kind, spec, seed)

    def fit():
        base = study.config.student
        loss = {"kind": "soft_label" if spec.soft_labels else "contrastive", **spec.loss_overrides}
        if loss.get("teacher_targets", base.loss.teacher_targets) == "cached":
            loss.update(teacher_audio_embeddings=[embeddings["audio"], embeddings["train_audio"]],
                        teacher_text_embeddings=[embeddings["text"]])
        loss = dataclasses.replace(base.loss, **loss)
        # a student trained to a stopping rule is evaluated at its best validation loss, one
        # trained for a fixed number of steps at its last step
        stopping = bool(base.trainer.early_stopping_patience)
        trainer = _stage_trainer(base.trainer, keep_best=stopping, device=study.config.device,
                                 **({"max_steps": spec.max_steps} if spec.max_steps else {}))
        config = dataclasses.replace(
            base, teacher=teacher_ckpt, improvement_set=spec.improvement_set, replay_manifest=spec.replay,
            loss=loss, trainer=trainer, seed=seed, overwrite=True,
            out_dir=str(study.out / "students" / name))
        return str(run_fit(config, study.out / FEATURES_DIR) / ("best" if stopping else "last"))

    return study.stages.run(f"student/{name}", fit)
