"""Interrupted is identical: each long command is killed with SIGKILL at seeded random points,
rerun the way its user would (`--resume` for fits, the same command otherwise), and its outputs
compared with an uninterrupted run: identical bytes for worlds, embeddings and curated sets,
identical tensors for checkpoints, an identical results.csv for the study.

Every run is a separate process started from the command line, as a user's would be."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

KILLS = random.Random(20261130)  # the kill points: random, but the same in every test run

STUDY = """
name: {name}
out_root: {out}
world: {{dir: {world}, seed: 3, scale: 0.01}}
seeds: [0]
variants: false
eval_batch_size: 128
model:
  audio: {{encoder: cnn6, sample_rate: 16000, window_size: 512, hop_size: 160, mel_bins: 32,
          fmin: 50, fmax: 8000, base_channels: 4, clip_seconds: 1.5, block_dropout: 0.0, head_dropout: 0.0}}
  text: {{name_or_path: {text_encoder}, pooling: cls, max_length: 24}}
  d_proj: 16
pretrain_audio:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 6, max_epochs: null, val_check_interval: 3, progress_bar: false}}
teacher:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 8, max_epochs: null, val_check_interval: 4, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
student:
  data: {{batch_size: 16}}
  trainer: {{max_steps: 4, max_epochs: null, val_check_interval: 2, progress_bar: false}}
  text: {{freeze_text_encoder: true, cache_text_features: true}}
curation: {{du_sigma: null, du_keep_fraction: 0.05, ds_sigma: 0.2, ads_sigma: null, ads_keep_fraction: 0.1}}
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def clapcurate(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clapcurate.cli", *map(str, argv)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run(*argv: str) -> float:
    """Run a command to its end; its wall time."""
    start = time.perf_counter()
    process = clapcurate(*argv)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return time.perf_counter() - start


def run_with_kills(argv: list, resume_argv: list, duration: float, kills: int, done=lambda: False,
                   progress=None) -> list[float]:
    """Start `argv`, SIGKILL it at a random point of its expected `duration`, rerun with
    `resume_argv`, `kills` times; then let it finish. Returns the kill times.

    With `progress` (a function returning the fraction of the work done, from the outputs on
    disk), each kill comes when that fraction passes a random point instead, so kills land in
    the work rather than in the interpreter's start-up."""
    times = []
    targets = sorted(KILLS.uniform(0.15, 0.9) for _ in range(kills))
    for target in targets:
        process = clapcurate(*argv)
        start = time.perf_counter()
        while process.poll() is None:
            elapsed = time.perf_counter() - start
            if (progress() >= target) if progress else elapsed >= target * duration:
                process.send_signal(signal.SIGKILL)
                times.append(round(elapsed, 1))
                break
            time.sleep(0.05)
        process.communicate()
        argv = resume_argv
        if done():  # finished before the kill: nothing left to resume
            return times
    run(*argv)
    return times


def files(folder: Path, pattern: str = "**/*") -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.glob(pattern))
            if path.is_file() and not path.name.startswith(".")}


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_tensors(a: Path, b: Path) -> None:
    first, second = tensors(a), tensors(b)
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[0]}"


def assert_same_metrics(reference: Path, killed: Path) -> None:
    """The resumed run's metrics.csv holds every row of the uninterrupted one (none lost at a resume)."""
    import pandas as pd

    first, second = (pd.read_csv(folder / "metrics.csv") for folder in (reference, killed))
    pd.testing.assert_frame_equal(first.sort_index(axis=1), second.sort_index(axis=1))


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_text_encoder_dir, tiny_world):
    """An uninterrupted study on the tiny world (its outputs are the other commands' inputs) and the
    same study killed twice and resumed."""
    root = tmp_path_factory.mktemp("interrupt")
    world = tiny_world
    configs = {}
    for name in ("whole", "killed"):
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(STUDY.format(name=name, out=root / "runs", world=world,
                                              text_encoder=tiny_text_encoder_dir))
    duration = run("study", configs["whole"])
    stages = len(list((root / "runs" / "whole" / "stages").glob("*.json")))
    kill_times = run_with_kills(["study", configs["killed"]], ["study", configs["killed"]], duration, kills=2,
                                progress=lambda: len(list((root / "runs" / "killed" / "stages").glob("*.json"))) / stages)
    return root, root / "runs" / "whole", root / "runs" / "killed", kill_times


def test_killed_world_generation_restarts_and_ends_byte_identical(study, tiny_world, tmp_path):
    duration = run("synth", tmp_path / "timing", "--seed", 3, "--scale", 0.01)
    argv = ["synth", tmp_path / "world", "--seed", 3, "--scale", 0.01]
    kill_times = run_with_kills(argv, argv, duration, kills=2, done=lambda: (tmp_path / "world" / "world.json").is_file())
    assert kill_times
    assert files(tmp_path / "world") == files(tiny_world)


def test_killed_study_resumes_to_the_same_results(study):
    _, whole, killed, kill_times = study
    assert kill_times, "the study finished before any kill"
    assert (killed / "results.csv").read_bytes() == (whole / "results.csv").read_bytes()
    checkpoints = sorted(str(path.parent.relative_to(whole)) for path in whole.rglob("model.safetensors"))
    assert len(checkpoints) == 2 * 2 + (3 + 4 * 3) + (1 + 2 * 3)  # teachers' best and last, each student's last
    for name in checkpoints:
        assert_same_tensors(whole / name, killed / name)
    assert files(whole / "curated", "**/*.csv") == files(killed / "curated", "**/*.csv")


def test_killed_embedding_resumes_to_identical_bytes(study, tmp_path):
    _, whole, *_ = study
    argv = ["embed", "--model", whole / "teachers/full_s0/best", "--manifest", whole / "manifests/pool.csv",
            "--shard-size", 16, "--batch-size", 8]
    duration = run(*argv, "--out", tmp_path / "reference")
    run_with_kills([*argv, "--out", tmp_path / "killed"], [*argv, "--out", tmp_path / "killed"], duration, kills=2)
    assert files(tmp_path / "killed") == files(tmp_path / "reference")


def test_killed_curation_reruns_to_identical_bytes(study, tmp_path):
    _, whole, *_ = study
    for name in ("reference", "killed"):
        (tmp_path / f"{name}.yaml").write_text(
            f"teacher: {whole / 'teachers/full_s0/best'}\ntrain_manifest: {whole / 'manifests/train.csv'}\n"
            f"pool_manifest: {whole / 'manifests/pool.csv'}\nkeep_fraction: 0.05\nmax_captions_per_clip: 1\n"
            f"shard_size: 16\nbatch_size: 8\nprogress: false\nout_dir: {tmp_path / name}\n")
    duration = run("curate", "du", "--config", tmp_path / "reference.yaml")
    argv = ["curate", "du", "--config", tmp_path / "killed.yaml"]
    run_with_kills(argv, argv, duration, kills=2, done=lambda: (tmp_path / "killed" / "stats.json").is_file())
    for pattern in ("*.csv", "*.json", "*.npz", "embeddings/**/*"):
        assert files(tmp_path / "killed", pattern) == files(tmp_path / "reference", pattern), pattern


FIT = """
seed: 1
out_dir: {out}
data: {{batch_size: 16, val_fraction: 0.2{data}}}
optim: {{lr: 0.001}}
trainer: {{max_steps: 24, max_epochs: null, val_check_interval: 4, progress_bar: false}}
text: {{freeze_text_encoder: true, cache_text_features: true}}
"""


def test_killed_teacher_fit_resumes_to_identical_tensors(study, tmp_path):
    _, whole, *_ = study
    model = yaml.safe_dump({"model": yaml.safe_load((whole / "config.yaml").read_text())["model"]})
    for name in ("reference", "killed"):
        (tmp_path / f"{name}.yaml").write_text(
            FIT.format(out=tmp_path / name, data=f", train_manifest: {whole / 'manifests/train.csv'}") + model)
    duration = run("fit-teacher", "--config", tmp_path / "reference.yaml")
    run_with_kills(["fit-teacher", "--config", tmp_path / "killed.yaml"],
                   ["fit-teacher", "--config", tmp_path / "killed.yaml", "--resume"], duration, kills=2)
    for kept in ("best", "last"):
        assert_same_tensors(tmp_path / "reference" / kept, tmp_path / "killed" / kept)
    assert_same_metrics(tmp_path / "reference", tmp_path / "killed")


def test_killed_student_fit_resumes_to_identical_tensors(study, tmp_path):
    _, whole, *_ = study
    for name in ("reference", "killed"):
        (tmp_path / f"{name}.yaml").write_text(
            FIT.format(out=tmp_path / name, data=", min_val_pairs_warning: 7")  # validates on its 7 held-out pairs
            + f"teacher: {whole / 'teachers/full_s0/best'}\n"
              f"improvement_set: {whole / 'curated/full_s0/du/improvement_set.csv'}\n"
              f"replay_manifest: {whole / 'manifests/train.csv'}\n")
    duration = run("fit-student", "--config", tmp_path / "reference.yaml")
    run_with_kills(["fit-student", "--config", tmp_path / "killed.yaml"],
                   ["fit-student", "--config", tmp_path / "killed.yaml", "--resume"], duration, kills=2)
    for kept in ("best", "last"):
        assert_same_tensors(tmp_path / "reference" / kept, tmp_path / "killed" / kept)
    assert_same_metrics(tmp_path / "reference", tmp_path / "killed")
