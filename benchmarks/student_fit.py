"""Per-fit overhead and checkpoint size of demo-size student fits, several in one process as in
a study: where the set-up before the first training step goes, and what a student's `last/`
checkpoint holds.

A teacher of the config's model (the demo's: a narrow CNN, the offline MiniLM text encoder,
frozen) is saved, then `--fits` students of the config's `student` section are fitted from it for
`--steps` steps each on a generated WAV set. Prints each set-up phase for the first fit and the
least over the later ones (the later fits are what a study repeats), the set-up's share of a
fit, and the student checkpoint's size against the text encoder's. Usage:
    python benchmarks/student_fit.py [--config configs/demo.yaml] [--fits 5] [--steps 2] [--clips 256]
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

import clapcurate.features as features
import clapcurate.train.fit as fit_module
from clapcurate.model import checkpoints
from clapcurate.model.clap import CLAP
from clapcurate.study import load_study_config

from record import record
from train_step import write_wav_set

PHASES = {  # (owner, attribute): label
    (checkpoints, "load_model"): "load the teacher",
    (copy, "deepcopy"): "copy the online teacher",
    (features, "encoder_identity"): "text encoder identity (feature cache key)",
    (fit_module, "read_data"): "read manifests",
    (fit_module._Inputs, "prepare"): "log-mel and caption features",
    (fit_module, "_build_trainer"): "build the Lightning Trainer",
    (checkpoints, "save"): "save checkpoints",
}


class FirstStep(Callback):
    def __init__(self):
        self.at = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.at is None:
            self.at = time.perf_counter()


def time_phases(times: dict[str, float]) -> None:
    """Wrap each function of `PHASES` to add its wall time to `times[label]`."""
    for (owner, name), label in PHASES.items():
        function = getattr(owner, name)

        @functools.wraps(function)
        def timed(*args, _function=function, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                times[_label] += time.perf_counter() - start

        setattr(owner, name, timed)


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="study config: its model and student section")
    parser.add_argument("--fits", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--clips", type=int, default=256)
    args = parser.parse_args()
    study = load_study_config(args.config)
    times: dict[str, float] = collections.defaultdict(float)
    time_phases(times)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        manifest = write_wav_set(tmp / "audio", args.clips, study.model.audio.sample_rate)
        torch.manual_seed(0)
        teacher = CLAP(study.model)
        text_mb = sum(t.numel() * t.element_size() for t in teacher.text_encoder.state_dict().values()) / 1e6
        checkpoints.save(teacher, tmp / "teacher")
        base = study.student
        trainer = dataclasses.replace(base.trainer, max_steps=args.steps, val_check_interval=args.steps,
                                      progress_bar=False, keep_best=False, save_resume_state=False)
        for index in range(args.fits):
            times.clear()
            config = dataclasses.replace(base, teacher=str(tmp / "teacher"), improvement_set=str(manifest),
                                         replay_manifest=str(manifest), trainer=trainer, overwrite=True,
                                         out_dir=str(tmp / f"student{index}"))
            first_step = FirstStep()
            start = time.perf_counter()
            fit_module.fit_student(config, callbacks=[first_step])
            row = dict(times)
            row["set-up: call to first training step"] = first_step.at - start
            row[f"whole fit ({args.steps} steps, validation, save)"] = time.perf_counter() - start
            rows.append(row)
        student_mb = folder_mb(tmp / "student0" / "last")
        teacher_mb = folder_mb(tmp / "teacher")
    later = {key: min(row.get(key, 0.0) for row in rows[1:]) for key in rows[0]} if len(rows) > 1 else rows[0]
    print(f"torch threads: {torch.get_num_threads()}, {args.fits} student fits of {args.config} in one process")
    print(f"{'phase (s)':46s} {'fit 1':>7s} {'later fits (least)':>19s}")
    for key in rows[0]:
        print(f"{key:46s} {rows[0][key]:7.3f} {later[key]:19.3f}")
    setup, whole = later["set-up: call to first training step"], later[f"whole fit ({args.steps} steps, validation, save)"]
    print(f"set-up share of a later fit: {setup / whole:.2f}")
    print(f"student last/ checkpoint: {student_mb:.2f} MB; teacher: {teacher_mb:.2f} MB; "
          f"text encoder weights: {text_mb:.1f} MB (ratio student / text encoder {student_mb / text_mb:.3f})")
    record("student checkpoint (`last/`) of the demo config", student_mb, "MB", target="<= 5 MB",
           higher_is_better=False, threshold=5)
    record("set-up before the first training step, a later fit of a study", setup, "s",
           baseline=whole, baseline_what=f"the whole fit of {args.steps} steps")


if __name__ == "__main__":
    main()
