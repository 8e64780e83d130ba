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
                    f"replay_manifest: {inputs['train']}\n"
                    f"data: {{batch_size: 4, val_fraction: 0.3, min_val_pairs_warning: 2}}\n"  # its 2 held-out pairs
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
    assert not out.exists()  # nothing written, not even the curated folder


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
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".lock")) == ["resume.ckpt"]


def flip_last_byte(path) -> None:
    """Change the file's last byte (inside the stored numbers, past any header), keeping its size."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_file(inputs, capsys):
    flip_last_byte(inputs["model"] / "model.safetensors")
    out = inputs["tmp"] / "embedded"
    err = one_line(["embed", "--model", inputs["model"], "--manifest", inputs["pool"], "--out", out], capsys)
    assert f"{inputs['model'] / 'model.safetensors'}: corrupt" in err and "weights.json" in err, err
    assert not list(out.glob("part-*"))


@pytest.fixture
def pool_embeddings(inputs):
    """The pool embedded by the teacher, and a curation config that reads that folder."""
    from clapcurate.embed import embed_manifest

    folder = embed_manifest(inputs["model"], inputs["pool"], inputs["tmp"] / "pool_audio", shard_size=4,
                            progress=False)
    config = curate_config(inputs, inputs["tmp"] / "curated")
    with open(config, "a") as handle:
        handle.write(f"pool_embeddings: {folder}\n")
    return folder, config


def test_an_embedding_shard_with_flipped_bytes_is_refused_at_curation(inputs, pool_embeddings, capsys):
    folder, config = pool_embeddings
    flip_last_byte(folder / "part-00001.npy")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    err = one_line(["curate", "du", "--config", config], capsys)
    assert f"{folder / 'part-00001.npy'}: corrupt" in err, err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert not (inputs["tmp"] / "curated" / "stats.json").exists()


@pytest.mark.parametrize("fault, expected", [("nan", "is not finite"), ("inf", "is not finite"),
                                             ("scaled", "is of norm 2.0")])
def test_non_finite_or_non_unit_rows_are_refused_at_curation(inputs, pool_embeddings, capsys, fault, expected):
    from clapcurate.embed import _write_shard, load_embeddings

    folder, config = pool_embeddings
    ids, embeddings = load_embeddings(folder)
    shard = embeddings[:4].copy()
    shard[2] = {"nan": np.nan, "inf": np.inf}.get(fault, 2 * shard[2])
    _write_shard(folder, 0, ids[:4], shard, pd.DataFrame(columns=["id", "audio_path", "reason"]))  # checksums fit
    err = one_line(["curate", "du", "--config", config], capsys)
    assert f"{folder / 'part-00000.npy'}: row 2 (id {ids[2]!r}) {expected}" in err, err


def test_a_feature_store_shard_with_flipped_bytes_is_refused(tmp_path):
    from clapcurate.errors import ClapcurateError
    from clapcurate.feature_store import FeatureStore

    store = FeatureStore(tmp_path / "store", width=8, dtype=np.float32)
    arrays = {bytes([i]): np.random.default_rng(i).standard_normal((3, 8)).astype(np.float32) for i in range(4)}
    with store.writer() as writer:
        for key, array in arrays.items():
            writer.add(key, array)
    found = store.locate(list(arrays))
    np.testing.assert_array_equal(found[3], arrays[bytes([3])])
    (shard,) = (tmp_path / "store").glob("shard-*.bin")
    flip_last_byte(shard)  # the last array's bytes, the file's size unchanged
    np.testing.assert_array_equal(found[0], arrays[bytes([0])])  # the others still read
    with pytest.raises(ClapcurateError, match=f"{shard}: corrupt"):
        found[3]


HOLD = """
import sys, time
from clapcurate.locks import one_writer
with one_writer(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(folder, seconds: float) -> subprocess.Popen:
    """Another process holding `folder`'s lock for `seconds` (started once it holds it)."""
    import sys

    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "holding\n"
    return process


@pytest.mark.parametrize("command", ["embed", "curate", "fit-student", "study"])
def test_a_second_writer_of_an_output_is_refused_naming_the_holder(inputs, capsys, command):
    out = inputs["tmp"] / "out"
    study = inputs["tmp"] / "study.yaml"
    study.write_text(f"name: s\nout_root: {out}\nworld: {{dir: {inputs['tmp'] / 'world'}}}\n")
    argv = {"fit-student": ["fit-student", "--config", fit_config(inputs, out)],
            "embed": ["embed", "--model", inputs["model"], "--manifest", inputs["pool"], "--out", out],
            "curate": ["curate", "du", "--config", curate_config(inputs, out)],
            "study": ["study", study]}[command]
    holder = hold(out, 60)
    try:
        err = one_line(argv, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert f"{out}: the " in err and f"being written by another run (pid {holder.pid} on " in err and "--wait" in err
    assert sorted(path.name for path in out.iterdir()) == [".lock", ".lock.holder.json"]  # nothing else written


def test_a_second_writer_waits_when_asked(inputs, capsys):
    out = inputs["tmp"] / "curated"
    holder = hold(out, 3)
    assert main(["curate", "du", "--config", curate_config(inputs, out), "--wait"]) == 0
    assert holder.poll() is not None  # it finished only once the holder had gone
    assert f"waiting for pid {holder.pid}" in capsys.readouterr().err
    assert (out / "stats.json").is_file() and not (out / ".lock.holder.json").exists()


def test_two_fits_on_one_run_folder(inputs, capsys):
    """A real fit holds its run folder: a second one is refused while it runs, naming its command."""
    import sys

    out = inputs["tmp"] / "fit"
    config = fit_config(inputs, out)
    with open(config, "a") as handle:
        handle.write("trainer: {max_steps: 100000, max_epochs: null, val_check_interval: 50, progress_bar: false}\n")
    first = subprocess.Popen([sys.executable, "-m", "clapcurate.cli", "fit-student", "--config", config],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        while not (out / "summary.json").is_file():  # the fit has started its work
            assert first.poll() is None
            time.sleep(0.1)
        err = one_line(["fit-student", "--config", config, "--overwrite"], capsys)
        assert f"pid {first.pid} on " in err and "fit-student --config" in err, err
    finally:
        first.kill()
        first.wait()


def test_an_edited_or_corrupt_curated_set_is_refused_by_the_student_fit(inputs, capsys):
    out = inputs["tmp"] / "curated"
    assert main(["curate", "du", "--config", curate_config(inputs, out), "--set", "keep_fraction=1"]) == 0
    manifest = out / "improvement_set.csv"
    manifest.write_bytes(manifest.read_bytes().replace(b"sound 1", b"sound 7"))
    config = fit_config(inputs, inputs["tmp"] / "student")
    err = one_line(["fit-student", "--config", config, "--set", f"improvement_set={manifest}"], capsys)
    assert f"{manifest}: corrupt" in err, err
    assert not (inputs["tmp"] / "student" / "config.json").exists()


def test_a_fit_resumed_twice_keeps_every_metrics_row(tmp_path):
    """Each resume starts a new metrics.csv: the rows before it are kept aside until the fit ends,
    so a resumed fit interrupted again loses none."""
    from clapcurate.train.fit import EARLIER_METRICS, _keep_earlier_metrics, _metrics_before_resume

    def log(first: int, last: int) -> None:  # the logger's file: the steps first..last
        pd.DataFrame({"step": range(first, last + 1), "loss": [float(s) for s in range(first, last + 1)]}).to_csv(
            tmp_path / "metrics.csv", index=False)

    log(0, 3)  # killed after step 3, resumed from step 2
    _metrics_before_resume(tmp_path)
    log(2, 5)  # killed again, resumed from step 4
    earlier = _metrics_before_resume(tmp_path)
    log(4, 7)  # the fit ends
    _keep_earlier_metrics(tmp_path, earlier)
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == list(range(8))
    assert not (tmp_path / EARLIER_METRICS).exists()
