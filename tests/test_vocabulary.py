"""One vocabulary in every command: data is a manifest file or a `kind:path` dataset spec
(`read_data`), a model a checkpoint folder or a published weights file (`load_model`), and a
path that does not exist fails with one line naming its key before any work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from clapcurate.cli import main
from clapcurate.data import manifest_hash, read_data
from clapcurate.model import checkpoints
from clapcurate.model.clap import CLAP, AudioConfig, CLAPConfig, TextConfig
from test_checkpoints import msclap_state_dict
from test_train import write_clips
from test_user_errors import assert_one_line_exit_2


def run(argv) -> int:
    return main([str(a) for a in argv])


def printed(capsys) -> str:
    """What the command printed, its line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


@pytest.fixture
def inputs(tmp_path, tiny_clap):
    """Four captioned clips as a plain CSV (`audio_path,caption`, relative paths), three pool clips
    in a folder, a labelled CSV and a checkpoint folder."""
    write_clips(tmp_path / "audio", 4)
    write_clips(tmp_path / "pool", 3, seed=1)
    (tmp_path / "pairs.csv").write_text(
        "audio_path,caption\n" + "".join(f"audio/clip{k:03d}.wav,caption number {k}\n" for k in range(4)))
    (tmp_path / "tags.csv").write_text(
        "audio_path,label\n" + "".join(f"audio/clip{k:03d}.wav,{'dog' if k % 2 else 'rain'}\n" for k in range(4)))
    return dict(tmp=tmp_path, model=checkpoints.save(tiny_clap, tmp_path / "model"), pairs=tmp_path / "pairs.csv",
                tags=tmp_path / "tags.csv", pool=tmp_path / "pool")


@pytest.fixture
def msclap_file(tmp_path, tiny_text_encoder_dir):
    """A tiny random model saved as MS CLAP 2022 saves `CLAP_weights_2022.pth`, at MS CLAP's audio
    settings (44.1 kHz, 5 s) so that it loads with no settings given."""
    torch.manual_seed(0)
    config = CLAPConfig(audio=AudioConfig(base_channels=4, mel_bins=32, window_size=512),
                        text=TextConfig(name_or_path=str(tiny_text_encoder_dir), pooling="cls", max_length=100),
                        d_proj=32)
    path = tmp_path / "CLAP_weights_2022.pth"
    torch.save({"model": msclap_state_dict(CLAP(config).eval())}, path)
    return path


def test_manifest_writes_a_spec_that_then_goes_anywhere_the_spec_goes(inputs, capsys):
    tmp, spec = inputs["tmp"], f"folder:{inputs['pool']}"
    assert run(["manifest", spec, tmp / "pool.csv"]) == 0
    assert "3 rows, 3 clips, 0 captions, 0 labels" in printed(capsys)
    pd.testing.assert_frame_equal(read_data(tmp / "pool.csv"), read_data(spec))
    assert manifest_hash(read_data(tmp / "pool.csv")) == manifest_hash(read_data(spec))
    assert run(["manifest", f"csv:{inputs['pairs']}", tmp / "pairs_manifest.csv"]) == 0
    assert "4 rows, 4 clips, 4 captions, 0 labels" in printed(capsys)

    # embedded from the spec, the folder is finished by the manifest written from it (same hash)
    assert run(["embed", "--model", inputs["model"], "--manifest", spec, "--out", tmp / "emb", "--shard-size", "2"]) == 0
    first = {path.name: path.read_bytes() for path in (tmp / "emb").iterdir()}
    (tmp / "emb" / "part-00001.done").unlink()
    assert run(["embed", "--model", inputs["model"], "--manifest", tmp / "pool.csv", "--out", tmp / "emb",
                "--shard-size", "2"]) == 0
    assert {path.name: path.read_bytes() for path in (tmp / "emb").iterdir()} == first


def test_a_csv_without_ids_reads_the_same_as_its_csv_spec(inputs):
    as_manifest, as_spec = read_data(inputs["pairs"]), read_data(f"csv:{inputs['pairs']}")
    assert as_manifest["id"].tolist() == as_spec["id"].tolist() == [f"audio/clip{k:03d}.wav" for k in range(4)]
    assert as_manifest["audio_path"].tolist() == as_spec["audio_path"].tolist()


def test_training_commands_take_specs_and_plain_csvs(inputs, tiny_clap_config, capsys):
    import yaml

    from clapcurate.config import to_dict

    tmp = inputs["tmp"]
    trainer = {"max_steps": 1, "max_epochs": None, "progress_bar": False}
    data = {"val_fraction": 0.0, "batch_size": 4}
    teacher = tmp / "teacher.yaml"
    teacher.write_text(yaml.safe_dump({
        "model": to_dict(tiny_clap_config), "data": {**data, "train_manifest": f"csv:{inputs['pairs']}"},
        "trainer": trainer, "text": {"freeze_text_encoder": True}, "out_dir": str(tmp / "teacher")}))
    assert run(["fit-teacher", "--config", teacher]) == 0
    assert run(["fit-teacher", "--config", teacher, "--set", f"data.train_manifest={inputs['pairs']}",
                "--set", f"out_dir={tmp / 'teacher2'}"]) == 0
    student = tmp / "student.yaml"
    student.write_text(yaml.safe_dump({
        "teacher": str(tmp / "teacher" / "best"), "improvement_set": f"csv:{inputs['pairs']}",
        "replay_manifest": str(inputs["pairs"]), "data": data, "trainer": trainer, "out_dir": str(tmp / "student")}))
    assert run(["fit-student", "--config", student]) == 0
    assert json.loads((tmp / "student" / "summary.json").read_text())["curated_pairs"] == 4
    tagger = tmp / "tagger.yaml"
    tagger.write_text(yaml.safe_dump({
        "audio": to_dict(tiny_clap_config.audio), "data": {**data, "train": f"csv:{inputs['tags']}"},
        "trainer": trainer, "out_dir": str(tmp / "tagger")}))
    assert run(["pretrain-audio", "--config", tagger]) == 0


def test_msclap_weights_are_a_model_for_embed_and_curate(inputs, msclap_file, tiny_text_encoder_dir, capsys):
    tmp, encoder = inputs["tmp"], str(tiny_text_encoder_dir)
    pool = f"folder:{inputs['pool']}"
    assert run(["embed", "--model", msclap_file, "--text-encoder", encoder, "--manifest", pool,
                "--out", tmp / "emb"]) == 0
    meta = json.loads((tmp / "emb" / "meta.json").read_text())
    assert meta["model_hash"] == checkpoints.model_hash(msclap_file, encoder) != checkpoints.model_hash(msclap_file)
    assert meta["manifest_hash"] == manifest_hash(read_data(pool))
    # another text encoder is another model: its embeddings do not go in this folder
    assert_one_line_exit_2(["embed", "--model", msclap_file, "--text-encoder", "bert-base-uncased",
                            "--manifest", pool, "--out", tmp / "emb"], capsys, "model_hash")

    config = tmp / "curate.yaml"
    config.write_text(f"teacher: {msclap_file}\ntext_encoder: {encoder}\ntrain_manifest: {inputs['pairs']}\n"
                      f"pool_manifest: {pool}\npool_embeddings: {tmp / 'emb'}\nsigma: -1\n"
                      f"out_dir: {tmp / 'curated'}\nprogress: false\n")
    assert run(["curate", "du", "--config", config]) == 0
    stats = json.loads((tmp / "curated" / "stats.json").read_text())
    assert (stats["pairs"], stats["pool_clips"]) == (12, 3)  # every pool clip with every caption at sigma -1


def test_evaluate_takes_a_manifest_written_from_a_world_benchmark(tmp_path, tiny_clap, capsys):
    from clapcurate.data.synth import generate_world

    world = generate_world(tmp_path / "world", seed=5, scale=0.01, progress=False)
    spec = f"esc50:{world.esc50}"
    assert run(["manifest", spec, tmp_path / "esc50.csv"]) == 0
    counts = printed(capsys)
    assert manifest_hash(read_data(tmp_path / "esc50.csv")) == manifest_hash(read_data(spec))
    model = checkpoints.save(tiny_clap, tmp_path / "model")
    assert run(["evaluate", "--model", model, "--dataset", tmp_path / "esc50.csv", "--out", tmp_path / "r.csv"]) == 0
    assert pd.read_csv(tmp_path / "r.csv")["clips"].tolist() == [len(read_data(spec))]
    assert f"{len(read_data(spec))} rows" in counts
    assert run(["manifest", f"clotho:{world.clotho}", tmp_path / "clotho.csv"]) == 0
    assert run(["embed", "--model", model, "--manifest", f"clotho:{world.clotho}", "--modality", "text",
                "--out", tmp_path / "captions"]) == 0
    assert run(["embed", "--model", model, "--manifest", tmp_path / "clotho.csv", "--modality", "text",
                "--out", tmp_path / "captions"]) == 0  # the same folder: same manifest hash


# --- errors before any work ---------------------------------------------------------------------


@pytest.fixture
def configs(inputs):
    tmp = inputs["tmp"]
    paths = {}
    for name, text in {
        "teacher": f"data: {{train_manifest: {inputs['pairs']}}}\nout_dir: {tmp / 'out'}\n",
        "student": f"teacher: {inputs['model']}\nimprovement_set: {inputs['pairs']}\n"
                   f"replay_manifest: {inputs['pairs']}\nout_dir: {tmp / 'out'}\n",
        "tagger": f"data: {{train: {inputs['tags']}}}\nout_dir: {tmp / 'out'}\n",
        "curate": f"teacher: {inputs['model']}\ntrain_manifest: {inputs['pairs']}\n"
                  f"pool_manifest: folder:{inputs['pool']}\nout_dir: {tmp / 'out'}\n",
    }.items():
        paths[name] = tmp / f"{name}.yaml"
        paths[name].write_text(text)
    return paths


MISSING = "/no/such/place"


@pytest.mark.parametrize("command, expected", [
    (["embed", "--model", MISSING, "--manifest", f"csv:{MISSING}.csv"], "--model: model not found"),
    (["embed", "--model", "{model}", "--manifest", f"csv:{MISSING}.csv"], "--manifest: /no/such/place.csv does not exist"),
    (["embed", "--model", "{model}", "--manifest", f"folder:{MISSING}"], "--manifest: /no/such/place does not exist"),
    (["embed", "--model", "{model}", "--manifest", "{tmp}/notes.txt"], "--manifest: "),
    (["embed", "--model", "{model}", "--manifest", "{pool}"], "is a folder; name a dataset in it as KIND:PATH"),
    (["fit-teacher", "--config", "{teacher}", "--set", f"data.train_manifest=csv:{MISSING}.csv"],
     "data.train_manifest: /no/such/place.csv does not exist"),
    (["fit-student", "--config", "{student}", "--set", f"teacher={MISSING}"], "teacher: model not found"),
    (["fit-student", "--config", "{student}", "--set", f"improvement_set={MISSING}.csv"], "improvement_set: "),
    (["fit-student", "--config", "{student}", "--set", f"val_manifest=folder:{MISSING}"], "val_manifest: "),
    (["pretrain-audio", "--config", "{tagger}", "--set", f"data.train=audioset:{MISSING}.csv"], "data.train: "),
    (["curate", "du", "--config", "{curate}", "--set", f"teacher={MISSING}.pth"], "teacher: model not found"),
    (["curate", "du", "--config", "{curate}", "--set", f"pool_manifest=folder:{MISSING}"], "pool_manifest: "),
    (["curate", "du", "--config", "{curate}", "--set", "train_manifest=nokind:x"], "train_manifest: nokind:x does not"),
    (["evaluate", "--model", "{model}", "--dataset", f"esc50:{MISSING}"], "--dataset: /no/such/place does not"),
    (["manifest", f"clotho:{MISSING}", "{tmp}/m.csv"], "DATA: /no/such/place does not exist"),
])
def test_missing_inputs_fail_with_one_line_naming_the_key_before_any_work(command, expected, inputs, configs, capsys):
    (inputs["tmp"] / "notes.txt").write_text("not a manifest")
    argv = [part.format(**{key: str(value) for key, value in {**inputs, **configs}.items()}) for part in command]
    assert_one_line_exit_2(argv + (["--out", str(inputs["tmp"] / "out")] if command[0] == "embed" else []),
                           capsys, expected)
    assert not (inputs["tmp"] / "out").exists() and not (inputs["tmp"] / "m.csv").exists()


def test_a_study_imports_a_given_weights_file_once(tmp_path, msclap_file, tiny_text_encoder_dir, tiny_waveforms, capsys):
    from clapcurate.study import load_study_config
    from clapcurate.study.pipeline import Study
    from clapcurate.study.training import given_teacher

    config = tmp_path / "study.yaml"
    config.write_text(f"name: s\nout_root: {tmp_path / 'runs'}\nworld: {{dir: {tmp_path / 'world'}}}\n"
                      f"low_resource_fraction: null\nteacher_checkpoint: {tmp_path / 'missing.pth'}\n")
    assert_one_line_exit_2(["study", config], capsys, "teacher_checkpoint: model not found")
    assert not (tmp_path / "runs").exists()
    study = Study(load_study_config(config, [f"teacher_checkpoint={msclap_file}",
                                             f"teacher_text_encoder={tiny_text_encoder_dir}"]))
    folder = given_teacher(study)
    assert folder == given_teacher(study) == str(study.out / "teachers" / "given")
    with torch.no_grad():
        assert torch.equal(checkpoints.load(folder).encode_audio(tiny_waveforms),
                           checkpoints.load_model(msclap_file, str(tiny_text_encoder_dir)).encode_audio(tiny_waveforms))
