"""Every user-caused failure ends in one line and exit status 2, before any work, and leaves no
output that a later run would take as finished."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile

from clapcurate.cli import main
from clapcurate.model import checkpoints

UNWRITABLE = "/proc/clapcurate-test/out"


@pytest.fixture
def inputs(tmp_path, tiny_clap):
    """A checkpoint, a manifest of two readable clips and stage configs pointing at them."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a", "b"):
        soundfile.write(audio / f"{name}.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    manifest = tmp_path / "pairs.csv"
    pd.DataFrame({"id": ["a", "b"], "audio_path": [str(audio / "a.wav"), str(audio / "b.wav")],
                  "caption": ["a dog barks", "rain falls"], "label": ["dog", "rain"]}).to_csv(manifest, index=False)
    model = checkpoints.save(tiny_clap, tmp_path / "model")
    student = tmp_path / "student.yaml"
    student.write_text(f"teacher: {model}\nimprovement_set: {manifest}\nreplay_manifest: {manifest}\n"
                       f"trainer: {{max_steps: 2, max_epochs: null}}\nout_dir: {tmp_path / 'student'}\n")
    curate = tmp_path / "curate.yaml"
    curate.write_text(f"teacher: {model}\ntrain_manifest: {manifest}\npool_manifest: {manifest}\n"
                      f"out_dir: {tmp_path / 'curated'}\n")
    study = tmp_path / "study.yaml"
    study.write_text(f"name: s\nout_root: {tmp_path / 'runs'}\nworld: {{dir: {tmp_path / 'world'}}}\n")
    return dict(model=model, manifest=manifest, student=student, curate=curate, study=study, tmp=tmp_path)


def assert_one_line_exit_2(argv, capsys, expected: str) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


@pytest.fixture
def immutable_dir(tmp_path):
    """A folder nobody may write into, root included (`chattr +i`)."""
    folder = tmp_path / "immutable"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("command", ["embed", "curate", "fit-student", "study", "synth", "evaluate"])
@pytest.mark.parametrize("where", ["proc", "immutable", "existing_file"])
def test_an_unwritable_output_is_refused_before_any_work(command, where, inputs, capsys, request):
    target = {"proc": UNWRITABLE, "existing_file": inputs["manifest"]}.get(where) or (
        request.getfixturevalue("immutable_dir") / "out")
    argv = {
        "embed": ["embed", "--model", inputs["model"], "--manifest", inputs["manifest"], "--out", target],
        "curate": ["curate", "du", "--config", inputs["curate"], "--set", f"out_dir={target}"],
        "fit-student": ["fit-student", "--config", inputs["student"], "--set", f"out_dir={target}"],
        "study": ["study", inputs["study"], "--set", f"out_root={target}"],
        "synth": ["synth", target, "--scale", "0.01"],
        "evaluate": ["evaluate", "--model", inputs["model"], "--dataset", f"csv:{inputs['manifest']}",
                     "--out", inputs["tmp"] if where == "existing_file" else target],
    }[command]
    expected = "folder" if where == "existing_file" else "cannot write"
    assert_one_line_exit_2(argv, capsys, expected)
    assert not (inputs["tmp"] / "runs").exists() and not (inputs["tmp"] / "world").exists()


@pytest.mark.parametrize("override, key", [
    ("loss.beta=5", "loss"),
    ("optim.lr=-1", "optim"),
    ("data.batch_size=0", "data"),
    ("trainer.val_check_interval=0", "trainer"),
])
def test_bad_values_are_refused_when_the_config_loads(override, key, inputs, capsys):
    assert_one_line_exit_2(["fit-student", "--config", inputs["student"], "--set", override], capsys, key)
    assert not (inputs["tmp"] / "student").exists()  # no run folder left behind


@pytest.mark.parametrize("override, expected", [
    ("sigma=1.5", "[-1, 1]"),
    ("sigma=-1.5", "[-1, 1]"),
    ("keep_fraction=0", "keep_fraction"),
    ("keep_fraction=0.1", "either sigma or keep_fraction"),
])
def test_bad_curation_values_are_refused_when_the_config_loads(override, expected, inputs, capsys):
    argv = ["curate", "du", "--config", inputs["curate"], "--set", override]
    if override.startswith("keep_fraction=0.1"):
        argv += ["--set", "sigma=0.5"]
    assert_one_line_exit_2(argv, capsys, expected)
    assert not (inputs["tmp"] / "curated").exists()


def test_study_values_are_refused_before_any_stage(inputs, capsys):
    assert_one_line_exit_2(["study", inputs["study"], "--set", "eval_batch_size=-5"], capsys, "eval_batch_size")
    assert_one_line_exit_2(["study", inputs["study"], "--set", "curation.ds_sigma=2"], capsys, "ds_sigma")
    assert not (inputs["tmp"] / "runs").exists() and not (inputs["tmp"] / "world").exists()


def test_empty_and_unreadable_inputs_are_errors_that_say_where_the_list_is(inputs, capsys):
    tmp = inputs["tmp"]
    empty = tmp / "empty.csv"
    pd.DataFrame(columns=["id", "audio_path"]).to_csv(empty, index=False)
    assert_one_line_exit_2(["embed", "--model", inputs["model"], "--manifest", empty, "--out", tmp / "e1"],
                           capsys, "nothing to embed")
    no_audio = tmp / "no_audio.csv"
    pd.DataFrame({"id": ["a"], "caption": ["x"]}).to_csv(no_audio, index=False)
    assert_one_line_exit_2(["embed", "--model", inputs["model"], "--manifest", no_audio, "--out", tmp / "e2"],
                           capsys, "no audio_path")
    assert not (tmp / "e1").exists() and not (tmp / "e2").exists()  # refused before the folder is made
    missing = tmp / "missing.csv"
    pd.DataFrame({"id": ["a", "b"], "audio_path": ["/nope/a.wav", "/nope/b.wav"]}).to_csv(missing, index=False)
    err = assert_one_line_exit_2(["embed", "--model", inputs["model"], "--manifest", missing, "--out", tmp / "e3"],
                                 capsys, "none of the 2 clips")
    assert str(tmp / "e3" / "skipped.csv") in err
    assert_one_line_exit_2(["curate", "du", "--config", inputs["curate"], "--set", f"pool_manifest={empty}"],
                           capsys, "the pool has no clips")


def test_a_finished_output_is_not_replaced_without_overwrite(inputs, capsys):
    argv = ["curate", "du", "--config", inputs["curate"], "--set", "sigma=-1", "--set", "shard_size=1"]
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    first = (inputs["tmp"] / "curated" / "improvement_set.csv").read_bytes()
    assert_one_line_exit_2(argv, capsys, "--overwrite")
    assert main([str(a) for a in argv] + ["--overwrite"]) == 0
    assert (inputs["tmp"] / "curated" / "improvement_set.csv").read_bytes() == first


def test_unlabelled_data_and_misspelt_study_keys_are_refused_up_front(inputs, capsys):
    audio = inputs["manifest"].parent / "audio"
    assert_one_line_exit_2(["evaluate", "--model", inputs["model"], "--dataset", f"folder:{audio}"], capsys,
                           "no class labels")
    for key in ("teacher.optim.lrr=0.1", "student.loss.betta=0.3"):
        assert_one_line_exit_2(["study", inputs["study"], "--set", key], capsys, key.split("=")[0])
    assert not (inputs["tmp"] / "runs").exists()


def test_misspelt_renamed_and_misplaced_keys_are_answered_before_torch_is_imported(inputs, tmp_path):
    """Each command in a fresh interpreter: a misspelt key gets "did you mean", a renamed one its
    new name and how its meaning changed, a wrong dataset path the option and the layout it
    expects, each as one line with exit status 2, and torch is never imported on the way."""
    import sys

    cases = [
        ("curate", "sigmaa: 0.6\n", "unknown config key sigmaa: did you mean sigma?"),
        ("curate", "benchmark_manifest: esc50:/no/ESC-50\n",
         "benchmark_manifest: /no/ESC-50 does not exist (from the dataset spec esc50:/no/ESC-50; "
         "esc50: expects a folder holding meta/esc50.csv and audio/"),
        ("student", "replay: {curated_prob: 0.9}\n", "config key replay.curated_prob was renamed replay.replay_prob"),
        ("study", "seedz: [1]\n", "unknown config key seedz: did you mean seeds?"),
    ]
    commands = {"curate": ["curate", "ds", "--config"], "student": ["fit-student", "--config"], "study": ["study"]}
    probe = ("import sys; from clapcurate.cli import main; code = main(sys.argv[1:]); "
             "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(code)")
    for kind, extra, message in cases:
        config = tmp_path / "bad.yaml"
        config.write_text(inputs[kind].read_text() + extra)
        done = subprocess.run([sys.executable, "-c", probe, *commands[kind], str(config)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stdout.strip() == "torch not imported", done
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_renamed_key_says_what_it_became_and_that_its_meaning_is_inverted(inputs, capsys):
    assert_one_line_exit_2(["fit-student", "--config", inputs["student"], "--set", "replay.curated_prob=0.5"], capsys,
                           "config key replay.curated_prob was renamed replay.replay_prob; its meaning is inverted")
    assert_one_line_exit_2(["study", inputs["study"], "--set", "student.replay.curated_prob=0.5"], capsys,
                           "config key student.replay.curated_prob was renamed student.replay.replay_prob")
    assert_one_line_exit_2(["study", inputs["study"], "--set", "lengths={benchmark: esc50, steps: [4], methods: [SL]}"],
                           capsys, "config key lengths.methods was renamed lengths.models; its meaning is the same")
    assert_one_line_exit_2(["fit-student", "--config", inputs["student"], "--set", "optim.lrr=0.1"], capsys,
                           "unknown config key optim.lrr: did you mean optim.lr?")
