"""Training configurations: nested dataclasses, read from YAML with `--set` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..config import load_config
from .. import method
from ..device import AUTO, check_auto, check_device, check_precision, hardware_settings
from ..errors import ConfigError
from ..model.config import AudioConfig, CLAPConfig

if TYPE_CHECKING:  # torch loads when a fit starts, not when its config is checked
    import torch


@dataclasses.dataclass
class DataConfig:
    """Pairs, the validation split and batching.

    The validation set holds the clips whose seeded hash (`split_seed`, `clip_id`) falls below
    `val_fraction`: the same clip is on the same side in every manifest and run that share the
    split seed (a teacher and its students agree). `subset` keeps a random fraction of the
    pairs (seeded by `seed`) before the split. `batch_size` is the global batch.
    `num_workers` (DataLoader workers making batches, and decoding audio for the feature cache)
    and `pin_memory` are `auto`: several workers and pinned batches when training on CUDA, none
    on the CPU.
    A fit warns when its training, curated or replay pairs number fewer than `min_pairs_warning`,
    or its validation pairs (when validation was asked for) fewer than `min_val_pairs_warning`
    (0 turns a warning off): results of so few pairs cannot mean much.
    """

    val_fraction: float = 0.17
    split_seed: int = 0
    subset: float = 1.0
    batch_size: int = 128
    num_workers: int | str = AUTO
    pin_memory: bool | str = AUTO
    feature_cache: str | None = None
    max_missing_fraction: float = 0.5
    min_pairs_warning: int = 64
    min_val_pairs_warning: int = 16

    def __post_init__(self):
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0.0 < self.subset <= 1.0:
            raise ValueError(f"subset must lie in (0, 1], got {self.subset}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        check_auto("num_workers", self.num_workers, int)
        check_auto("pin_memory", self.pin_memory, bool)
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ValueError(f"max_missing_fraction must lie in [0, 1], got {self.max_missing_fraction}")
        for key in ("min_pairs_warning", "min_val_pairs_warning"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")


@dataclasses.dataclass
class TeacherDataConfig(DataConfig):
    train_manifest: str = ""  # the captioned pairs: a manifest file or a dataset spec (`read_data`)


@dataclasses.dataclass
class OptimConfig:
    """Adam with ReduceLROnPlateau on the validation loss (stepped after each validation)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    plateau_factor: float = 0.1
    plateau_patience: int = 10

    def __post_init__(self):
        if not self.lr >= 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor must lie in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {self.plateau_patience}")


@dataclasses.dataclass
class AugmentConfig:
    """Training-time augmentation, applied to log-mel frames.

    `random_crop`: random clip excerpt / random offset of short clips (else the clip's start);
    `gain_db`: a uniform random gain in [-gain_db, gain_db] dB (0 = off); SpecAugment masks:
    `time_masks` masks of up to `time_mask_frames` frames and `freq_masks` masks of up to
    `freq_mask_bins` mel bins (0 masks = off), filled with the clip's mean log-mel level.
    """

    random_crop: bool = True
    gain_db: float = 6.0
    time_masks: int = 2
    time_mask_frames: int = 10
    freq_masks: int = 2
    freq_mask_bins: int = 8

    def __post_init__(self):
        for key in ("gain_db", "time_masks", "time_mask_frames", "freq_masks", "freq_mask_bins"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")


@dataclasses.dataclass
class TrainerConfig:
    """Lightning Trainer settings. `val_check_interval`: an int counts steps, a float is a
    fraction of an epoch.

    Several processes (`devices` x `num_nodes`, Lightning DDP) split each global batch
    (`data.batch_size`) between them and train as one process on the whole batch would:
    `local_loss` has each compute only its own rows of the CLAP loss's similarity matrix (memory
    batch / processes x batch instead of batch x batch; the same loss and gradients);
    `sync_batchnorm` gives trained BatchNorm layers the whole batch's statistics (GPUs only:
    without it each process normalises with its own share's).

    `device` (`auto`, `cpu`, `cuda`, `cuda:N`; see `clapcurate.device`) sets Lightning's
    `accelerator` and, for `cuda:N`, `devices` where those are left at `auto` and 1 (an explicit
    `accelerator` decides instead; a device that contradicts it is an error). `precision` (`auto`:
    bf16-mixed on CUDA, 32 elsewhere) and `channels_last` (`auto`: on for CUDA; the CNN's 4-D
    tensors in channels-last memory format) follow the device the fit trains on.
    """

    max_steps: int = -1
    max_epochs: int | None = 10
    val_check_interval: int | float = 1.0
    device: str = AUTO
    accelerator: str = AUTO
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = AUTO
    channels_last: bool | str = AUTO
    num_nodes: int = 1
    log_every_n_steps: int = 10
    progress_bar: bool = True
    keep_best: bool = True  # keep `best/` (lowest validation loss) beside `last/`
    # stop when the validation loss (on the run's own held-out pairs, never benchmark data) has not
    # improved for this many validations; max_steps stays the cap. null: train to max_steps
    early_stopping_patience: int | None = None
    save_resume_state: bool = True  # `resume.ckpt` and `last/` at each validation, for `resume`
    local_loss: bool = False
    sync_batchnorm: bool = False

    def __post_init__(self):
        check_device(self.device)
        check_precision(self.precision)
        check_auto("channels_last", self.channels_last, bool)
        if self.max_steps < 0 and self.max_epochs is None:
            raise ValueError("set max_steps or max_epochs")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be positive (or -1: no limit), got {self.max_steps}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"max_epochs must be positive, got {self.max_epochs}")
        if not self.val_check_interval > 0:
            raise ValueError(f"val_check_interval must be positive, got {self.val_check_interval}")
        if isinstance(self.val_check_interval, float) and self.val_check_interval > 1.0:
            raise ValueError(f"val_check_interval as a float is a fraction of an epoch (at most 1.0); "
                             f"give an int to count steps, got {self.val_check_interval}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be at least 1, got {self.early_stopping_patience}")
        if self.log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be positive, got {self.log_every_n_steps}")
        if self.sync_batchnorm and self.accelerator == "cpu":
            raise ValueError("sync_batchnorm needs GPUs (PyTorch synchronises BatchNorm on GPUs only)")

    def processes(self) -> int | None:
        """How many processes a fit with these settings runs (`devices` x `num_nodes`); None when
        Lightning decides (`devices: auto`, -1 or a list of devices)."""
        devices = self.devices
        if isinstance(devices, str) and devices.strip().isdigit():
            devices = int(devices)
        return devices * self.num_nodes if isinstance(devices, int) and devices > 0 else None


@dataclasses.dataclass
class TextTrainConfig:
    """A frozen text encoder (projection still trained) and cached pooled features of it."""

    freeze_text_encoder: bool = False
    cache_text_features: bool = False

    def __post_init__(self):
        if self.cache_text_features and not self.freeze_text_encoder:
            raise ValueError("cache_text_features needs freeze_text_encoder: true")


@dataclasses.dataclass
class TeacherConfig:
    """`fit_teacher`: a new CLAP model trained with the contrastive loss (Eq. 1)."""

    model: CLAPConfig = dataclasses.field(default_factory=CLAPConfig)
    data: TeacherDataConfig = dataclasses.field(default_factory=TeacherDataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    text: TextTrainConfig = dataclasses.field(default_factory=TextTrainConfig)
    init_audio_encoder: str | None = None  # a PANNs checkpoint (e.g. Cnn14_mAP=0.431.pth) to start from
    freeze_audio_encoder: bool = False  # train only the projections on top of it (few pairs)
    seed: int = 0
    out_dir: str = "runs/teacher"
    resume: bool = False  # continue an interrupted run in out_dir
    overwrite: bool = False  # replace a run already in out_dir


@dataclasses.dataclass
class ReplayConfig:
    """Each step is a replay batch with probability `replay_prob`, else an Improvement-Set batch
    (paper: 0.5). What is replayed is the student config's `replay_manifest`."""

    replay_prob: float = method.REPLAY_PROB

    def __post_init__(self):
        if not 0.0 <= self.replay_prob <= 1.0:
            raise ValueError(f"replay_prob must lie in [0, 1], got {self.replay_prob}")


@dataclasses.dataclass
class LossConfig:
    """The student's loss: Eq. 1 or the soft-label loss (Eq. 2-5) with beta and target_norm.

    Soft-label teacher targets are `online` (the frozen teacher embeds each step's crops) or
    `cached` (embedding folders written by `embed`: audio by `clip_id`, text by `text_key`;
    several folders each, e.g. the pool's and the teacher's own training audio).
    """

    kind: Literal["contrastive", "soft_label"] = "soft_label"
    beta: float = method.BETA
    target_norm: str = method.TARGET_NORM
    target_temperature: float | None = None  # softmax targets: tau of the teacher cosines (default: the teacher's)
    teacher_targets: Literal["online", "cached"] = "online"
    teacher_audio_embeddings: list[str] = dataclasses.field(default_factory=list)
    teacher_text_embeddings: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {self.beta}")
        if self.target_temperature is not None and not self.target_temperature > 0:
            raise ValueError(f"target_temperature must be positive, got {self.target_temperature}")
        if self.target_norm not in method.TARGET_NORMS:
            raise ValueError(f"target_norm must be one of {list(method.TARGET_NORMS)}, got {self.target_norm!r}")
        if self.kind == "soft_label" and self.teacher_targets == "cached" and not (
            self.teacher_audio_embeddings and self.teacher_text_embeddings
        ):
            raise ValueError("teacher_targets: cached needs teacher_audio_embeddings and teacher_text_embeddings")


@dataclasses.dataclass
class StudentConfig:
    """`fit_student`: fine-tune a teacher checkpoint on an Improvement-Set with replay.

    `val_manifest` (optional) is the validation set; without it the replay manifest is split
    as the teacher split its training pairs (same `data.split_seed`), and when that holds out
    fewer than `data.min_val_pairs_warning` pairs, the student validates on the held-out pairs of
    the teacher's clean training data (`teacher_val_manifest`, default the `val_pairs.csv` of the
    teacher's run folder), or stops before training (`train.fit.student_validation`). `teacher` is a checkpoint
    folder or a published weights file (with `text_encoder` where the file needs one; see
    `load_model`); every data key takes a manifest file or a dataset spec (`read_data`).
    """

    teacher: str = ""
    text_encoder: str | None = None  # a weights-file teacher's text encoder (name or folder)
    improvement_set: str = ""
    replay_manifest: str = ""
    val_manifest: str | None = None  # held-out captioned pairs to validate on (default: see student_validation)
    teacher_val_manifest: str = ""  # the teacher's held-out pairs (default: val_pairs.csv of its run folder)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    freeze_batchnorm: bool = True
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    text: TextTrainConfig = dataclasses.field(default_factory=TextTrainConfig)
    seed: int = 0
    out_dir: str = "runs/student"
    resume: bool = False  # continue an interrupted run in out_dir
    overwrite: bool = False  # replace a run already in out_dir


@dataclasses.dataclass
class TaggerDataConfig(DataConfig):
    """Labelled clips: `train` is a manifest file or a dataset spec (`audioset:segments.csv`)
    whose `label` column holds comma-separated labels; `labels_csv` (AudioSet's
    `class_labels_indices.csv`, column `mid`) fixes the classes and their order, else every
    label present is a class, sorted."""

    train: str = ""
    labels_csv: str | None = None


@dataclasses.dataclass
class TaggerConfig:
    """`fit_tagger`: pretrain an audio encoder as a PANNs-style tagger (binary cross-entropy per
    class) on labelled audio; the result starts a teacher via `init_audio_encoder`."""

    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    data: TaggerDataConfig = dataclasses.field(default_factory=TaggerDataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-3))
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    seed: int = 0
    out_dir: str = "runs/tagger"
    resume: bool = False  # continue an interrupted run in out_dir
    overwrite: bool = False  # replace a run already in out_dir


def load_tagger_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TaggerConfig:
    """A `TaggerConfig` from YAML `path` with `--set key=value` overrides."""
    return load_config(TaggerConfig, path, overrides)


def load_teacher_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TeacherConfig:
    """A `TeacherConfig` from YAML `path` with `--set key=value` overrides."""
    return load_config(TeacherConfig, path, overrides)


def load_student_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudentConfig:
    """A `StudentConfig` from YAML `path` with `--set key=value` overrides."""
    return load_config(StudentConfig, path, overrides)


def training_device(trainer: TrainerConfig) -> torch.device:
    """The device a fit trains on: `trainer.device` resolved (`clapcurate.device.resolve_device`),
    or with an explicit `trainer.accelerator` its kind (`gpu` / `cuda`: CUDA; others: not CUDA)."""
    import torch

    from ..device import resolve_device

    if trainer.accelerator == AUTO:
        return resolve_device(trainer.device)
    cuda = trainer.accelerator in ("gpu", "cuda")
    if trainer.device != AUTO and (torch.device(trainer.device).type == "cuda") != cuda:
        raise ConfigError(f"trainer.device {trainer.device} and trainer.accelerator {trainer.accelerator} "
                          "disagree; set only one of them")
    return torch.device("cuda" if cuda else "cpu")


def _processes(devices, device: torch.device) -> int:
    """Training processes on this machine (each starts its own DataLoader workers)."""
    import torch

    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1


def placed(config):
    """`config` (a teacher, student or tagger config) as its fit runs it: Lightning's
    `accelerator` and `devices` from `trainer.device` where they are left at `auto` and 1, and
    every `auto` of precision, channels_last, pin_memory and num_workers resolved for the device
    it trains on (`training_device`, `clapcurate.device.hardware_settings`)."""
    import torch

    trainer, data = config.trainer, config.data
    device = training_device(trainer)
    accelerator = trainer.accelerator if trainer.accelerator != AUTO else ("gpu" if device.type == "cuda" else "cpu")
    devices = trainer.devices
    # `cuda:N` names one GPU (a setting resolved to something else, e.g. a test's stand-in, does not)
    index = torch.device(trainer.device).index if trainer.device != AUTO and device.type == "cuda" else None
    if index is not None:
        if devices not in (1, [index]):
            raise ConfigError(f"trainer.device {trainer.device} names one GPU but trainer.devices is {devices!r}: "
                              "use device cuda (or auto) with several devices")
        devices = [index]
    hardware = hardware_settings(device, trainer.precision, trainer.channels_last, data.pin_memory, data.num_workers,
                                 processes=_processes(devices, device))
    return dataclasses.replace(
        config,
        trainer=dataclasses.replace(trainer, accelerator=accelerator, devices=devices, precision=hardware.precision,
                                    channels_last=hardware.channels_last),
        data=dataclasses.replace(data, pin_memory=hardware.pin_memory, num_workers=hardware.num_workers))


# Keys of a training config that change where and how fast a fit runs (on which devices, in how
# many processes), never what it computes beyond float rounding (`precision` does change it: a
# study compares its resolved value, see `result_settings`).
SPEED_KEYS = {"trainer": ("device", "channels_last", "accelerator", "devices", "num_nodes", "strategy", "local_loss"),
              "data": ("num_workers", "pin_memory")}


def result_settings(settings: dict, device: str) -> dict:
    """Nested settings (a study's, as plain data) reduced to what decides results: the keys of
    `SPEED_KEYS` left out of every `trainer` and `data` section, and each trainer's `precision:
    auto` replaced by what it resolves to when the fit trains on `device` (a device setting)."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            value = result_settings(value, device)
            if key == "trainer" and value.get("precision") == AUTO:
                trainer = TrainerConfig(device=device, accelerator=value.get("accelerator", AUTO))
                value["precision"] = hardware_settings(training_device(trainer), AUTO).precision
            value = {name: v for name, v in value.items() if name not in SPEED_KEYS.get(key, ())}
        out[key] = value
    return out
