"""SIGTERM and SIGINT end a long command with 143 / 130 and one line saying how to resume, and the
resume then finishes: a fit (resumed with --resume) and a curation (run again). Each command is a
separate process, as a user's or a scheduler's would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile

from clapcurate.model import checkpoints

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}


@pytest.fixture
def inputs(tmp_path, tiny_clap):
    """A tiny checkpoint, a manifest of 96 half-second clips, and a long fit's and a curation's configs."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(96):
        path = audio / f"{i}.wav"
        soundfile.write(path, 0.1 * rng.standard_normal(8000), 16000)
        rows.append({"id": str(i), "audio_path": str(path), "caption": f"sound number {i % 7}", "label": "x"})
    manifest, pool = tmp_path / "pairs.csv", tmp_path / "pool.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    pd.DataFrame(rows[48:]).to_csv(pool, index=False)
    pd.DataFrame(rows[:48]).to_csv(tmp_path / "train.csv", index=False)
    model = checkpoints.save(tiny_clap, tmp_path / "model")
    fit = tmp_path / "fit.yaml"
    fit.write_text(f"teacher: {model}\nimprovement_set: {manifest}\nreplay_manifest: {manifest}\n"
                   "data: {batch_size: 8, val_fraction: 0.2}\n"
                   "trainer: {max_steps: 100000, max_epochs: null, val_check_interval: 2, progress_bar: false}\n"
                   f"out_dir: {tmp_path / 'fit'}\n")
    curate = tmp_path / "curate.yaml"
    curate.write_text(f"teacher: {model}\ntrain_manifest: {tmp_path / 'train.csv'}\npool_manifest: {pool}\n"
                      f"keep_fraction: 0.1\nshard_size: 4\nbatch_size: 4\nprogress: false\n"
                      f"out_dir: {tmp_path / 'curated'}\n")
    return tmp_path, fit, curate


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clapcurate.cli", *map(str, argv)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_when(process: subprocess.Popen, ready, signum: int) -> tuple[int, str]:
    """Send `signum` once `ready()` holds; the exit status and stderr."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the command never reached the point to signal"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and "Traceback" not in stderr, stderr
    return lines[-1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_fit_exits_non_zero_and_resumes(inputs, signum):
    tmp, fit, _ = inputs
    status, stderr = signal_when(start("fit-student", "--config", fit), (tmp / "fit" / "resume.ckpt").is_file, signum)
    assert status == STATUS[signum], stderr
    line = last_line(stderr)
    assert f"stopped by {signum.name}" in line and "--resume" in line, line
    assert not (tmp / "fit" / "summary.json").read_text().count('"processes"')  # the fit did not end as finished
    resumed = start("fit-student", "--config", fit, "--resume", "--set", "trainer.max_steps=4")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert (tmp / "fit" / "last" / "model.safetensors").is_file()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_curation_exits_non_zero_and_a_rerun_finishes(inputs, signum):
    tmp, _, curate = inputs
    first_shard = lambda: any((tmp / "curated").rglob("part-*.done"))
    status, stderr = signal_when(start("curate", "du", "--config", curate), first_shard, signum)
    assert status == STATUS[signum], stderr
    line = last_line(stderr)
    assert f"stopped by {signum.name}" in line and "same command again" in line, line
    assert not (tmp / "curated" / "stats.json").exists()
    rerun = start("curate", "du", "--config", curate)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert (tmp / "curated" / "stats.json").is_file()
