"""Faults planted in inputs and outputs end in one line naming the file, and leave nothing else
changed: a full disk, a crafted or corrupt resume state, flipped bytes in stored data."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile

from clapcurate.cli import main
from clapcurate.model import checkpoints


@pytest.fixture
def inputs(tmp_path, tiny_clap):
    """A checkpoint, a training manifest and a pool of readable clips, and a fit's and a curation's configs."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        soundfile.write(audio / f"{i}.wav", 0.1 * rng.standard_normal(8000), 16000)
        rows.append({"id": str(i), "audio_path": str(audio / f"{i}.wav"), "caption": f"sound {i % 5}", "label": "x"})
    train, pool = tmp_path / "train.csv", tmp_path / "pool.csv"
    pd.DataFrame(rows[:6]).to_csv(train, index=False)
    pd.DataFrame(rows[6:]).to_csv(pool, index=False)
    model = checkpoints.save(tiny_clap, tmp_path / "model")
    return dict(tmp=tmp_path, model=model, train=train, pool=pool)


def fit_config(inputs, out) -> str:
    path = inputs["tmp"] / "fit.yaml"
    path.write_text(f"teacher: {inputs['model']}\nimprovement_set: {inputs['train']}\n"
                    f"replay_manifest: {inputs['train']}\ndata: {{batch_size: 4, val_fraction: 0.3}}\n"
                    f"trainer: {{max_steps: 2, max_epochs: null, val_check_interval: 1, progress_bar: false}}\n"
                    f"out_dir: {out}\n")
    return str(path)


def curate_config(inputs, out) -> str:
    path = inputs["tmp"] / "curate.yaml"
    path.write_text(f"teacher: {inputs['model']}\ntrain_manifest: {inputs['train']}\npool_manifest: {inputs['pool']}\n"
                    f"keep_fraction: 0.2\nprogress: false\nout_dir: {out}\n")
    return str(path)


def one_line(argv, capsys, status: int = 2) -> str:
    assert main([str(a) for a in argv]) == status
    err = capsys.readouterr().err  # Lightning's INFO lines may come first
    assert "Traceback" not in err and err.count("error:") == 1, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB file system, filled up to `leave` bytes by `fill(leave)`; skipped where tmpfs cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def fill(leave: int):
        import shutil

        free = shutil.disk_usage(mount).free
        with open(mount / "filler", "ab") as handle:
            handle.write(b"\0" * max(free - leave, 0))
        return mount

    yield fill
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("command", ["fit-student", "embed", "curate"])
def test_a_full_disk_names_the_path_in_one_line(inputs, small_disk, capsys, command):
    disk = small_disk(64 * 1024)  # room for configs and manifests, not for a checkpoint
    out = disk / "out"
    argv = {"fit-student": ["fit-student", "--config", fit_config(inputs, out)],
            "embed": ["embed", "--model", inputs["model"], "--manifest", inputs["pool"], "--out", out],
            "curate": ["curate", "du", "--config", curate_config(inputs, out)]}[command]
    if command == "embed":
        small_disk(0)
    err = one_line(argv, capsys)
    assert f"{out}" in err and "No space left on device" in err, err


def test_an_empty_captions_manifest_fails_before_the_pool_is_embedded(inputs, capsys):
    pd.read_csv(inputs["train"]).assign(caption="").to_csv(inputs["train"], index=False)
    out = inputs["tmp"] / "curated"
    err = one_line(["curate", "du", "--config", curate_config(inputs, out)], capsys)
    assert "train_manifest" in err and "no captions" in err, err
    assert not (out / "embeddings").exists()


class _RunsCode:
    """Unpickled, it creates the file `marker`: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("fault", ["crafted", "corrupt"])
def test_a_refused_or_corrupt_resume_state_names_itself(inputs, capsys, monkeypatch, fault):
    import torch

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's override: explicit weights_only wins
    out, marker = inputs["tmp"] / "fit", inputs["tmp"] / "code-ran"
    out.mkdir()
    if fault == "crafted":
        torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, out / "resume.ckpt")
    else:
        (out / "resume.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    err = one_line(["fit-student", "--config", fit_config(inputs, out), "--resume"], capsys)
    expected = "refused" if fault == "crafted" else "cannot resume"
    assert f"{out / 'resume.ckpt'}: {expected}" in err, err
    assert not marker.exists()
    assert sorted(path.name for path in out.iterdir()) == ["resume.ckpt"]  # nothing written
