"""`fit_teacher`, `fit_student` and `fit_tagger`: prepare the data, build the Lightning
Trainer, run it.

A run folder holds `best/` (lowest validation loss) and `last/` checkpoints (our format; for a
tagger a PANNs-style `audio_encoder.pth` inside each),
`metrics.csv` (Lightning's CSV logger), `resume.ckpt` (full training state for `resume`),
`summary.json` (pair counts, skipped clips, the number of processes), `skipped.csv`, `config.json`, and for teachers the
`train_pairs.csv` / `val_pairs.csv` manifests actually used.

A fit of several processes (`trainer.devices` x `trainer.num_nodes`, started by Lightning or by
torchrun) shares one run folder: the first process writes it, and with `data.feature_cache` one
process at a time computes the log-mels the cache lacks while the others wait, then read them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import logging
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from lightning.pytorch import Callback, LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ..config import to_dict
from ..data.manifest import label_names, split_by_clip, take_subset, write_manifest
from ..errors import ClapcurateError, ConfigError, ManifestError
from ..files import check_output_folder, naming_failed_writes, write_atomically
from ..locks import one_writer
from ..features import FrontendSettings, LogMelCache, TextFeatureCache, silence_level
from ..data.readers import check_data, read_data
from ..model import checkpoints
from ..model.audio_encoders import AudioTagger, load_panns_checkpoint
from ..model.clap import CLAP, AudioConfig
from ..model.weights import WeightsSource
from .config import DataConfig, LossConfig, StudentConfig, TaggerConfig, TeacherConfig, TrainerConfig, placed
from .data import (
    BatchMaker, FixedBatches, PairSchedule, PairSet, ReplaySchedule, StepBatches, StepSampler,
    label_matrix, prepare_pairs,
)
from .console import StepProgressBar, quiet_lightning, warn_if_few_pairs
from .module import TAGGER_CHECKPOINT, ClapModule, PlateauModule, TaggerModule, TrainingDivergedError

log = logging.getLogger("clapcurate.train")
RESUME_CHECKPOINT = "resume.ckpt"


class PairDataModule(LightningDataModule):
    """Step-indexed training batches and fixed validation batches."""

    def __init__(self, schedule, train_batches: BatchMaker, val_pairs: PairSet | None,
                 val_batches: BatchMaker, data: DataConfig, seed: int):
        super().__init__()
        self.schedule = schedule
        self.train_batches = train_batches
        self.val_pairs = val_pairs
        self.val_batches = val_batches
        self.data = data
        self.seed = seed

    def _loader(self, dataset, sampler=None) -> torch.utils.data.DataLoader:
        # A private generator: building the loader never draws from the global torch RNG.
        return torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=sampler, num_workers=self.data.num_workers,
            persistent_workers=self.data.num_workers > 0, pin_memory=self.data.pin_memory,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self):
        dataset = StepBatches(self.schedule, self.train_batches, self.seed,
                              self.trainer.global_rank, self.trainer.world_size)
        return self._loader(dataset, StepSampler(self.schedule.steps_per_epoch, lambda: self.trainer.global_step))

    def val_dataloader(self):
        if self.val_pairs is None:  # no validation set: a Trainer of one's own validates nothing
            return []
        return self._loader(FixedBatches(self.val_pairs, self.data.batch_size, self.val_batches))


class RunCheckpoints(Callback):
    """After each validation: `best/` when the validation loss improved (`keep_best`), and with
    `save_resume_state` also `last/` and `resume.ckpt`; at the end `last/` (and `resume.ckpt`)."""

    def __init__(self, run_dir: Path, has_validation: bool, keep_best: bool = True, save_resume_state: bool = True):
        self.run_dir = run_dir
        self.has_validation = has_validation
        self.keep_best = keep_best
        self.save_resume_state = save_resume_state
        self.best_val_loss = math.inf

    def _save_model(self, pl_module: PlateauModule, name: str) -> None:
        with naming_failed_writes(self.run_dir / name):
            pl_module.save_model(self.run_dir / name)

    def _save_state(self, trainer: Trainer, pl_module: PlateauModule) -> None:
        if trainer.is_global_zero:
            self._save_model(pl_module, "last")
        if self.save_resume_state:
            with naming_failed_writes(self.run_dir / RESUME_CHECKPOINT):
                trainer.save_checkpoint(self.run_dir / RESUME_CHECKPOINT, weights_only=False)

    def on_validation_end(self, trainer: Trainer, pl_module: PlateauModule) -> None:
        if trainer.sanity_checking:
            return
        val_loss = float(trainer.callback_metrics["val_loss"])
        if not math.isfinite(val_loss):
            raise TrainingDivergedError(
                f"the validation loss became {val_loss} at step {trainer.global_step}; training stopped "
                f"(the last good checkpoint is {self.run_dir / 'best'}; try a lower optim.lr or precision 32)")
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            if trainer.is_global_zero and self.keep_best:
                self._save_model(pl_module, "best")
        if self.save_resume_state:
            self._save_state(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: PlateauModule) -> None:
        self._save_state(trainer, pl_module)
        if self.keep_best and trainer.is_global_zero and math.isinf(self.best_val_loss):
            if self.has_validation:  # fewer steps than one validation interval
                log.warning("%s: no validation ran before the last step (%d); best/ is the last step",
                            self.run_dir, trainer.global_step)
            self._save_model(pl_module, "best")
        trainer.strategy.barrier("run folder written")  # every process returns with the checkpoints on disk

    def state_dict(self) -> dict:
        return {"best_val_loss": self.best_val_loss}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_val_loss = state_dict["best_val_loss"]


def _loggers(run_dir: Path) -> list:
    """`metrics.csv` always; TensorBoard event files too when tensorboard is installed."""
    loggers = [CSVLogger(run_dir, name="", version="")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    return loggers


def _build_trainer(config: TrainerConfig, run_dir: Path, has_validation: bool, callbacks: Sequence[Callback]) -> Trainer:
    validation = {"limit_val_batches": 0}
    callbacks = [RunCheckpoints(run_dir, has_validation, config.keep_best, config.save_resume_state), *callbacks]
    if has_validation:
        validation = {"val_check_interval": config.val_check_interval}
        if isinstance(config.val_check_interval, int):
            validation["check_val_every_n_epoch"] = None  # every N steps, across epochs
        if config.early_stopping_patience:
            callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience,
                                           check_on_train_epoch_end=False))
    elif config.early_stopping_patience:
        log.warning("%s: early stopping needs validation pairs; training to max_steps", run_dir)
    if config.progress_bar:
        callbacks.append(StepProgressBar())
    return Trainer(
        accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
        precision=config.precision, num_nodes=config.num_nodes, sync_batchnorm=config.sync_batchnorm,
        max_steps=config.max_steps, max_epochs=config.max_epochs,
        log_every_n_steps=config.log_every_n_steps, enable_progress_bar=config.progress_bar,
        logger=_loggers(run_dir), callbacks=callbacks,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False, default_root_dir=run_dir, **validation,
    )


@dataclasses.dataclass
class _Inputs:
    """What both fits share: the feature caches and how batches are made."""

    logmel_cache: LogMelCache
    text_cache: TextFeatureCache | None
    train_batches: BatchMaker
    val_batches: BatchMaker

    @classmethod
    def of(cls, model: CLAP, config: TeacherConfig | StudentConfig) -> "_Inputs":
        text_encoder = model.text_encoder if config.text.cache_text_features else None
        return cls.for_audio(model.config.audio, config, text_encoder)

    @classmethod
    def for_audio(cls, audio: AudioConfig, config, text_encoder=None) -> "_Inputs":
        """Inputs for an audio front-end; text features cached when `text_encoder` is given."""
        settings = FrontendSettings.of(audio)
        n_frames = settings.frames(audio.clip_samples)
        pad_level = silence_level(settings)
        return cls(
            logmel_cache=LogMelCache(settings, config.data.feature_cache),
            text_cache=TextFeatureCache(text_encoder) if text_encoder is not None else None,
            train_batches=BatchMaker(n_frames, pad_level, config.augment),
            val_batches=BatchMaker(n_frames, pad_level, None),
        )

    def prepare(self, manifest: pd.DataFrame, origin: str, data: DataConfig) -> tuple[PairSet, pd.DataFrame, pd.DataFrame]:
        if data.feature_cache is not None:
            with _one_builder(data.feature_cache):  # the processes of a fit compute each clip once
                self.logmel_cache.get_many(manifest["audio_path"], data.num_workers)
        return prepare_pairs(manifest, origin, self.logmel_cache, data.num_workers, data.max_missing_fraction,
                             self.text_cache)


def first_process() -> bool:
    """Whether this is the first process of its fit (rank 0), as the launcher tells before any
    process group exists: torchrun sets RANK in every process; Lightning's own launcher starts
    the other processes from the first one, with LOCAL_RANK and NODE_RANK set."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _one_builder(cache_dir: str) -> FileLock:
    """The feature cache folder's lock: processes sharing the cache (the ranks of a fit, or fits
    started side by side) compute its missing entries one at a time, so each entry is computed
    once and read by the others. The lock is released when its holder ends, however."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / ".build.lock")


def _alone_in_run_folder(config: TeacherConfig | StudentConfig | TaggerConfig):
    """The run folder's lock (`locks.one_writer`), held while the fit writes the folder; the other
    processes of a multi-process fit share the folder with the first, which holds it. Taken once
    the fit's inputs are checked: a fit refused on bad input writes nothing."""
    return one_writer(config.out_dir, "run folder") if first_process() else contextlib.nullcontext()


def _check_resume_state(path: Path) -> None:
    """Refuse, in one line naming it, a `resume.ckpt` that is corrupt or holds more than tensors
    and plain values (a pickle that would run code). Memory-mapped: no tensor is read here."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object
        raise ClapcurateError(f"{path}: refused: it holds objects other than tensors and plain values, which could "
                              "run code when loaded; start the run again without --resume (with --overwrite)") from exc
    except Exception as exc:  # torch raises several types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClapcurateError(f"{path}: cannot resume from this file ({reason}); "
                              "start the run again without --resume (with --overwrite)") from exc


def _start_run(config: TeacherConfig | StudentConfig | TaggerConfig) -> tuple[Path, str | None]:
    """The run folder and the checkpoint to resume from (None: a fresh run). Only the first
    process of a fit clears and writes the folder; the others check the same conditions."""
    run_dir = check_output_folder(config.out_dir, "run folder")
    resume_path = run_dir / RESUME_CHECKPOINT
    if config.resume and resume_path.is_file():
        _check_resume_state(resume_path)
        return run_dir, str(resume_path)
    if config.resume:
        log.warning("%s: nothing to resume, starting a fresh run", run_dir)
    elif (run_dir / "last").is_dir() and not config.overwrite:
        raise ClapcurateError(f"{run_dir} holds a run already (last/): continue it with --resume, replace it with "
                              "--overwrite, or choose another out_dir")
    if not first_process():
        return run_dir, None
    processes = config.trainer.processes()
    if processes and processes > 1 and config.data.feature_cache is None:
        log.warning("%s: %d processes and no data.feature_cache: each process computes the log-mels of every "
                    "clip itself; give data.feature_cache (a folder) to compute them once", run_dir, processes)
    for stale in ("metrics.csv", EARLIER_METRICS, RESUME_CHECKPOINT, "best", "last"):
        target = run_dir / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    return run_dir, None


def _write_summary(run_dir: Path, counts: dict[str, int], skipped: Sequence[pd.DataFrame],
                   minimums: dict[str, int]) -> None:
    """`summary.json` and `skipped.csv`; a warning for each count below its entry in `minimums`
    (by the first process of a fit)."""
    if not first_process():
        return
    skipped_all = pd.concat(skipped, ignore_index=True).drop_duplicates("audio_path")
    skipped_all.to_csv(run_dir / "skipped.csv", index=False)
    (run_dir / "summary.json").write_text(json.dumps({**counts, "skipped_clips": len(skipped_all)}, indent=2) + "\n")
    log.info("%s: %s, %d unreadable clip(s) skipped", run_dir, counts, len(skipped_all))
    warn_if_few_pairs(run_dir, counts, minimums)


def _minimums(data: DataConfig, train_keys: Sequence[str], validates: bool) -> dict[str, int]:
    """The warning thresholds of `data` for the counts named `train_keys` and, when the fit asked
    for validation, `val_pairs`."""
    minimums = {key: data.min_pairs_warning for key in train_keys}
    if validates:
        minimums["val_pairs"] = data.min_val_pairs_warning
    return minimums


EARLIER_METRICS = ".metrics.before-resume.csv"  # the rows logged before a resume, until the resumed fit ends


def _read_metrics(run_dir: Path, name: str = "metrics.csv") -> pd.DataFrame | None:
    path = run_dir / name
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def _joined(earlier: pd.DataFrame | None, new: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of `earlier` before the first step of `new`, then `new`'s."""
    if earlier is None or new is None or not len(new):
        return new if earlier is None else earlier
    return pd.concat([earlier[earlier["step"] < new["step"].min()], new], ignore_index=True)


def _metrics_before_resume(run_dir: Path) -> pd.DataFrame | None:
    """The rows logged before this resume (the logger starts a new `metrics.csv`): those an earlier,
    unfinished resume kept aside, then `metrics.csv`'s; kept aside in their turn until the fit ends,
    so a fit interrupted twice loses none."""
    earlier = _joined(_read_metrics(run_dir, EARLIER_METRICS), _read_metrics(run_dir))
    if earlier is not None:
        write_atomically(run_dir / EARLIER_METRICS, lambda handle: earlier.to_csv(handle, index=False))
    return earlier


def _keep_earlier_metrics(run_dir: Path, earlier: pd.DataFrame | None) -> None:
    """After a resumed fit: `metrics.csv` = the rows logged before the resumed step + the new ones."""
    if earlier is None:
        return
    joined = _joined(earlier, _read_metrics(run_dir))
    write_atomically(run_dir / "metrics.csv", lambda handle: joined.to_csv(handle, index=False))
    (run_dir / EARLIER_METRICS).unlink()


def _fit(module: ClapModule, datamodule: PairDataModule, config, run_dir: Path, ckpt_path: str | None,
         callbacks: Sequence[Callback]) -> Path:
    """Train `module` with the settings of a `placed` config."""
    earlier = _metrics_before_resume(run_dir) if ckpt_path and first_process() else None
    if config.trainer.channels_last:
        module.to(memory_format=torch.channels_last)  # the CNNs' 4-D weights; other tensors stay as they are
    with quiet_lightning():
        trainer = _build_trainer(config.trainer, run_dir, datamodule.val_pairs is not None, callbacks)
        with naming_failed_writes(run_dir):  # the logs' files and anything else written in the run folder
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        _keep_earlier_metrics(run_dir, earlier)
        summary = json.loads((run_dir / "summary.json").read_text())
        write_atomically(run_dir / "summary.json",
                         lambda handle: handle.write(json.dumps({**summary, "processes": trainer.world_size},
                                                                indent=2) + "\n"))
    for kept in ("last", "best") if config.trainer.keep_best else ("last",):
        if not (run_dir / kept).is_dir():  # the next stage reads it: never report a run without it
            raise ClapcurateError(f"{run_dir}: the fit ended without writing {kept}/")
    return run_dir


def fit_teacher(config: TeacherConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Train a new CLAP model on `config.data.train_manifest` with the contrastive loss (Eq. 1).

    Returns the run folder (see the module docstring). `callbacks`: extra Lightning callbacks.
    """
    config = placed(config)
    check_data(config.data.train_manifest, "data.train_manifest")
    if config.init_audio_encoder:
        _require_file(config.init_audio_encoder, "init_audio_encoder")
    with _alone_in_run_folder(config):
        run_dir, ckpt_path = _start_run(config)
        seed_everything(config.seed, verbose=False)
        model = CLAP(config.model)
        if config.init_audio_encoder:
            # PANNs' CNN weights; the front-end stays the one `config.model.audio` describes
            load_panns_checkpoint(model.audio_encoder, config.init_audio_encoder, keep_frontend=True)
            model.weight_sources["audio_encoder"] = WeightsSource.of(
                model.audio_encoder, "panns", os.path.abspath(config.init_audio_encoder))
        inputs = _Inputs.of(model, config)
        manifest = take_subset(read_data(config.data.train_manifest), config.data.subset, config.seed)
        train_rows, val_rows = split_by_clip(manifest, config.data.val_fraction, config.data.split_seed)
        train_pairs, train_kept, train_skipped = inputs.prepare(train_rows, config.data.train_manifest, config.data)
        val_pairs, val_kept, val_skipped = (
            inputs.prepare(val_rows, config.data.train_manifest, config.data) if len(val_rows)
            else (None, val_rows, val_rows[[]])
        )
        if first_process():
            write_manifest(train_kept, run_dir / "train_pairs.csv")
            write_manifest(val_kept, run_dir / "val_pairs.csv")
        _write_summary(run_dir, {"train_pairs": len(train_kept), "val_pairs": len(val_kept)},
                       [train_skipped, val_skipped.reindex(columns=["audio_path", "reason"])],
                       _minimums(config.data, ["train_pairs"], config.data.val_fraction > 0))
        module = ClapModule(model, config.optim, freeze_text_encoder=config.text.freeze_text_encoder,
                            freeze_audio_encoder=config.freeze_audio_encoder, local_loss=config.trainer.local_loss)
        schedule = PairSchedule(train_pairs, config.data.batch_size, config.seed)
        datamodule = PairDataModule(schedule, inputs.train_batches, val_pairs, inputs.val_batches, config.data,
                                    config.seed)
        return _fit(module, datamodule, config, run_dir, ckpt_path, callbacks)


def _attach_cached_targets(pairs: PairSet, kept: pd.DataFrame, loss: LossConfig) -> None:
    """Look up the teacher's embeddings of each pair: audio by `clip_id`, text by `text_key(caption)`."""
    from ..embed import embedding_rows, load_embeddings, text_key

    def load_all(folders: list[str]) -> tuple[list[str], np.ndarray]:
        loaded = [load_embeddings(folder) for folder in folders]
        return [key for ids, _ in loaded for key in ids], np.concatenate([emb for _, emb in loaded])

    audio_ids, audio = load_all(loss.teacher_audio_embeddings)
    text_ids, text = load_all(loss.teacher_text_embeddings)
    hint = "embed every Improvement-Set and replay {} with the teacher"
    pairs.teacher_audio = embedding_rows(kept["clip_id"].tolist(), audio_ids, audio, loss.teacher_audio_embeddings,
                                         hint.format("audio")).astype(np.float32)
    pairs.teacher_text = embedding_rows([text_key(c) for c in kept["caption"]], text_ids, text,
                                        loss.teacher_text_embeddings, hint.format("text")).astype(np.float32)


def fit_student(config: StudentConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Fine-tune the teacher `config.teacher` (a checkpoint folder or a published weights file,
    `load_model`) on the Improvement-Set with replay.

    Returns the run folder (see the module docstring). `callbacks`: extra Lightning callbacks.
    """
    config = placed(config)
    checked = check_student_inputs(config)
    with _alone_in_run_folder(config):
        module, datamodule, run_dir, ckpt_path = build_student(config, *checked)
        return _fit(module, datamodule, config, run_dir, ckpt_path, callbacks)


def check_student_inputs(config: StudentConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """A `placed` student config's inputs, checked before its run folder is written: the teacher,
    every manifest, the curated set, the run folder writable, and its validation
    (`student_validation`). Returns the replay pairs outside the validation, the validation
    pairs and where they come from, as `build_student` takes them."""
    checkpoints.require_model_path(config.teacher, "teacher")
    for key in ("improvement_set", "replay_manifest", *(("val_manifest",) if config.val_manifest is not None else ()),
                *(("teacher_val_manifest",) if config.teacher_val_manifest else ())):
        check_data(getattr(config, key), key)
    from ..curate.stage import check_curated_file

    check_curated_file(config.improvement_set)  # a curated set's manifest, as curation wrote it
    check_output_folder(config.out_dir, "run folder")
    replay = read_data(config.replay_manifest)
    val_rows, validation = student_validation(config, replay)  # before the run starts: never a run without it
    replay = replay[~replay["clip_id"].isin(set(val_rows["clip_id"]))].reset_index(drop=True)
    return replay, val_rows, validation


def build_student(config: StudentConfig, replay: pd.DataFrame, val_rows: pd.DataFrame,
                  validation: str) -> tuple[ClapModule, PairDataModule, Path, str | None]:
    """The student's LightningModule and DataModule for a `placed` config and its checked inputs
    (`check_student_inputs`), its run folder (with config.json and summary.json written) and the
    checkpoint to resume from (or None)."""
    run_dir, ckpt_path = _start_run(config)
    seed_everything(config.seed, verbose=False)
    model = checkpoints.load_model(config.teacher, config.text_encoder)
    uses_teacher_online = config.loss.kind == "soft_label" and config.loss.teacher_targets == "online"
    # the teacher shares the student's frozen text encoder instead of holding a copy of it
    shared = {id(model.text_encoder): model.text_encoder} if config.text.freeze_text_encoder else {}
    teacher = copy.deepcopy(model, shared).eval() if uses_teacher_online else None
    inputs = _Inputs.of(model, config)
    curated = read_data(config.improvement_set)
    if len(curated) == 0:
        raise ManifestError(f"improvement_set: {config.improvement_set} holds 0 pairs: curate it again with a lower "
                            f"sigma or keep_fraction (its stats.json names the sigma that keeps some)")
    outside = curated[~curated["clip_id"].isin(set(val_rows["clip_id"]))].reset_index(drop=True)
    if len(outside) == 0:
        raise ManifestError(f"improvement_set: all {len(curated)} pairs of {config.improvement_set} are on the "
                            f"validation clips (data.val_fraction, data.split_seed): no pair is left to train on")
    curated = outside
    prepared = {}
    for name, rows, origin in (("curated", curated, config.improvement_set), ("replay", replay, config.replay_manifest)):
        prepared[name] = inputs.prepare(rows, origin, config.data)
        if config.loss.kind == "soft_label" and config.loss.teacher_targets == "cached":
            _attach_cached_targets(prepared[name][0], prepared[name][1], config.loss)
    val_pairs, val_kept, val_skipped = (
        inputs.prepare(val_rows, validation, config.data) if len(val_rows) else (None, val_rows, val_rows[[]])
    )
    _write_summary(
        run_dir,
        {"curated_pairs": len(prepared["curated"][1]), "replay_pairs": len(prepared["replay"][1]),
         "val_pairs": len(val_kept), "validation": validation},
        [prepared["curated"][2], prepared["replay"][2], val_skipped.reindex(columns=["audio_path", "reason"])],
        _minimums(config.data, ["curated_pairs"] + (["replay_pairs"] if config.replay.replay_prob > 0 else []),
                  config.val_manifest is not None or config.data.val_fraction > 0),
    )
    module = ClapModule(model, config.optim, config.loss, teacher, config.freeze_batchnorm,
                        config.text.freeze_text_encoder, local_loss=config.trainer.local_loss)
    schedule = ReplaySchedule(prepared["curated"][0], prepared["replay"][0], config.data.batch_size,
                              config.replay.replay_prob, config.seed)
    datamodule = PairDataModule(schedule, inputs.train_batches, val_pairs, inputs.val_batches, config.data, config.seed)
    return module, datamodule, run_dir, ckpt_path


TEACHER_VAL_PAIRS = "val_pairs.csv"  # the held-out pairs a teacher's fit writes into its run folder


def teacher_held_out_pairs(config: StudentConfig) -> str:
    """The held-out pairs of the teacher's clean training data: `teacher_val_manifest`, else the
    `val_pairs.csv` of the run folder the teacher's checkpoint folder lies in; '' when neither."""
    if config.teacher_val_manifest:
        return config.teacher_val_manifest
    beside = Path(config.teacher).parent / TEACHER_VAL_PAIRS
    return str(beside) if Path(config.teacher).is_dir() and beside.is_file() else ""


def student_validation(config: StudentConfig, replay: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """A student's validation pairs and where they come from: `val_manifest` when given; else the
    replay pairs held out by `data.val_fraction`; when those are fewer than
    `data.min_val_pairs_warning`, the held-out pairs of the teacher's clean training data
    (`teacher_held_out_pairs`). A student that picks `best/` (`trainer.keep_best`) or stops early
    with too few of those as well stops here, before training: best/ is never picked without
    validation. `data.val_fraction: 0` asks for no validation (best/ is then the last step)."""
    if config.val_manifest is not None:
        return read_data(config.val_manifest), config.val_manifest
    _, held_out = split_by_clip(replay, config.data.val_fraction, config.data.split_seed)
    least = config.data.min_val_pairs_warning
    own = f"{config.replay_manifest} (data.val_fraction {config.data.val_fraction:g} held out)"
    if config.data.val_fraction == 0 or len(held_out) >= least:
        return held_out, own
    teacher_pairs = teacher_held_out_pairs(config)
    teacher_rows = read_data(teacher_pairs) if teacher_pairs else held_out.iloc[:0]
    if len(teacher_rows) >= least:
        log.info("%d replay pairs held out (fewer than data.min_val_pairs_warning = %d): the student validates "
                 "on the teacher's %d held-out pairs, %s", len(held_out), least, len(teacher_rows), teacher_pairs)
        return teacher_rows, f"{teacher_pairs} (the teacher's held-out pairs)"
    if not (config.trainer.keep_best or config.trainer.early_stopping_patience):
        return held_out, own  # validation only informs: the count's warning says how little it means
    teacher_note = (f"the teacher's held-out pairs ({teacher_pairs}) are {len(teacher_rows)}" if teacher_pairs else
                    f"the teacher has no held-out pairs (no {TEACHER_VAL_PAIRS} beside {config.teacher})")
    raise ConfigError(
        f"too few validation pairs to pick best/: data.val_fraction {config.data.val_fraction:g} holds out "
        f"{len(held_out)} of the {len(replay)} replay pairs and {teacher_note}, fewer than "
        f"data.min_val_pairs_warning = {least}; set val_manifest (or teacher_val_manifest) to held-out "
        f"captioned pairs, raise data.val_fraction, lower data.min_val_pairs_warning, or set "
        f"trainer.keep_best: false")


def _require_file(path: str, key: str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"{key}: {path} {'is not a file' if Path(path).exists() else 'does not exist'}")


def tagger_classes(manifest: pd.DataFrame, labels_csv: str | None) -> list[str]:
    """The classes in order: the `mid` column of `labels_csv`, else every label present, sorted."""
    if labels_csv:
        table = pd.read_csv(labels_csv, dtype=str)
        if "mid" not in table.columns:
            raise ManifestError(f"{labels_csv}: expected a `mid` column (AudioSet's class_labels_indices.csv)")
        return table["mid"].str.strip().tolist()
    return sorted({name for text in manifest["label"] for name in label_names(text)})


def build_tagger(audio: AudioConfig, n_classes: int) -> AudioTagger:
    return AudioTagger(audio.build_encoder(), n_classes)


def fit_tagger(config: TaggerConfig, callbacks: Sequence[Callback] = ()) -> Path:
    """Pretrain an audio encoder as a tagger on the labelled clips of `config.data.train`.

    Returns the run folder; `best/audio_encoder.pth` (lowest validation loss) and
    `last/audio_encoder.pth` are PANNs-style checkpoints (`{"model": ..., "labels": ...}`) that
    a teacher's `init_audio_encoder` accepts.
    """
    config = placed(config)
    check_data(config.data.train, "data.train")
    if config.data.labels_csv:
        _require_file(config.data.labels_csv, "data.labels_csv")
    with _alone_in_run_folder(config):
        run_dir, ckpt_path = _start_run(config)
        seed_everything(config.seed, verbose=False)
        manifest = take_subset(read_data(config.data.train), config.data.subset, config.seed)
        if "label" not in manifest.columns or not manifest["label"].astype(str).str.strip().any():
            raise ManifestError(f"{config.data.train}: no labels (expected a `label` column of comma-separated labels)")
        classes = tagger_classes(manifest, config.data.labels_csv)
        model = build_tagger(config.audio, len(classes))
        inputs = _Inputs.for_audio(config.audio, config)
        train_rows, val_rows = split_by_clip(manifest, config.data.val_fraction, config.data.split_seed)
        prepared = {}
        for name, rows in (("train", train_rows), ("val", val_rows)):
            if len(rows) == 0:
                prepared[name] = (None, rows, rows.reindex(columns=["audio_path", "reason"]).iloc[:0])
                continue
            pairs, kept, skipped = inputs.prepare(rows, config.data.train, config.data)
            pairs.labels = label_matrix(kept["label"].tolist(), classes, config.data.train)
            prepared[name] = (pairs, kept, skipped)
        _write_summary(run_dir, {"train_clips": len(prepared["train"][1]), "val_clips": len(prepared["val"][1]),
                                 "classes": len(classes)}, [prepared["train"][2], prepared["val"][2]],
                       {"train_clips": config.data.min_pairs_warning,
                        **({"val_clips": config.data.min_val_pairs_warning} if config.data.val_fraction > 0 else {})})
        module = TaggerModule(model, config.optim, classes)
        schedule = PairSchedule(prepared["train"][0], config.data.batch_size, config.seed)
        datamodule = PairDataModule(schedule, inputs.train_batches, prepared["val"][0], inputs.val_batches, config.data,
                                    config.seed)
        return _fit(module, datamodule, config, run_dir, ckpt_path, callbacks)
