"""The command line: zero-shot evaluation and classification on real-layout files, determinism,
and user errors as one message with exit status 2."""

import numpy as np
import pandas as pd
import pytest

from clapcurate.cli import main
from clapcurate import method
from clapcurate.data.readers import read_dataset
from clapcurate.data.synth import generate_world
from clapcurate.model import checkpoints
from clapcurate.zeroshot import evaluate


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_world(root, seed=5, scale=0.01, progress=False)
    return root


@pytest.fixture()
def model_dir(tiny_clap, tmp_path):
    return checkpoints.save(tiny_clap, tmp_path / "model")


def test_evaluate_prints_accuracy_and_writes_csv(world, model_dir, tmp_path, capsys):
    out = tmp_path / "acc.csv"
    assert main(["evaluate", "--model", str(model_dir), "--dataset", f"esc50:{world}/benchmarks/esc50",
                 "--dataset", f"us8k:{world}/benchmarks/urbansound8k", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["clips"].tolist() == [len(read_dataset(f"esc50:{world}/benchmarks/esc50")),
                                       len(read_dataset(f"urbansound8k:{world}/benchmarks/urbansound8k"))]
    assert table["task"].tolist() == ["esc50", "urbansound8k"]
    assert table["chance_percent"].tolist() == [100 / 50, 100 / 10]
    assert table["accuracy_percent"].between(0, 100).all() and (table["accuracy_percent"] > 1).any()
    out_text = capsys.readouterr().out
    assert "zero-shot accuracy on esc50: 50 classes, chance 2.0%, the paper's ESC-50" in out_text
    for accuracy in table["accuracy_percent"]:
        assert f"{accuracy:.1f}" in out_text  # the table and the CSV say the same, in percent
    skipped = pd.read_csv(tmp_path / "acc.skipped.csv")
    assert list(skipped.columns) == ["task", "model", "audio_path", "reason"]
    assert len(skipped) == table["skipped"].sum()


def test_evaluate_names_each_skipped_file_with_its_reason(world, model_dir, tmp_path, capsys):
    manifest = read_dataset(f"esc50:{world}/benchmarks/esc50").iloc[:6]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    manifest.loc[manifest.index[0], "audio_path"] = str(broken)
    manifest.to_csv(tmp_path / "bench.csv", index=False)
    listed = tmp_path / "skipped_list.csv"
    assert main(["evaluate", "--model", str(model_dir), "--dataset", f"csv:{tmp_path / 'bench.csv'}",
                 "--skipped", str(listed)]) == 0
    out = capsys.readouterr().out
    assert "1 file(s) skipped" in out and f"{broken}:" in out and str(listed) in out
    skipped = pd.read_csv(listed)
    assert skipped["audio_path"].tolist() == [str(broken)] and skipped["reason"].iloc[0]


def test_zero_shot_evaluation_is_deterministic(world, tiny_clap):
    manifest = read_dataset(f"esc50:{world}/benchmarks/esc50")
    first = evaluate(tiny_clap, manifest, batch_size=7)
    second = evaluate(tiny_clap, manifest, batch_size=7)
    assert first.accuracy == second.accuracy
    pd.testing.assert_frame_equal(first.predictions, second.predictions)
    other_batch = evaluate(tiny_clap, manifest, batch_size=32)
    np.testing.assert_allclose(other_batch.predictions["score"], first.predictions["score"], atol=1e-5)


def test_classify_lists_top_labels_and_skips_unreadable_files(world, model_dir, capsys):
    clips = sorted((world / "benchmarks" / "esc50" / "audio").glob("*.wav"))[:2]
    corrupted = pd.read_csv(world / "ground_truth" / "corrupted.csv")
    bad = world / corrupted[corrupted["loader_rejects"]]["path"].iloc[0]
    assert main(["classify", "--model", str(model_dir), "--labels", "dog, rain,siren", "--top", "2",
                 *map(str, clips), str(bad)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 1
    assert sum(label in out for label in ("dog", "rain", "siren")) >= 2


def test_classify_csv_and_json_parse_back_with_full_paths(world, model_dir, tmp_path, capsys):
    import io
    import json
    import shutil

    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "nested"
    deep.mkdir(parents=True)
    clips = [shutil.copy(p, deep / p.name) for p in sorted((world / "benchmarks" / "esc50" / "audio").glob("*.wav"))[:2]]
    broken = deep / "broken.wav"
    broken.write_bytes(b"not audio")
    files = [str(p) for p in (*clips, broken)]
    assert all(len(f) > 120 for f in files)
    base = ["classify", "--model", str(model_dir), "--labels", "dog,rain,siren", "--top", "2"]
    assert main([*base, "--format", "json", *files]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    assert [len(r["top"]) for r in results] == [2, 2, 0] and results[2]["skipped"]
    assert {t["label"] for r in results for t in r["top"]} <= {"dog", "rain", "siren"}
    assert main([*base, "--format", "csv", *files]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(table.columns) == ["file", "rank", "label", "score", "skipped"]
    assert table["file"].tolist() == [files[0], files[0], files[1], files[1], files[2]]
    assert table["skipped"].tolist()[:4] == [""] * 4 and table["skipped"].iloc[4]
    assert main([*base, *files]) == 0
    out = capsys.readouterr().out
    assert all(f in out for f in files)  # the table shows each path whole, on one line


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--model", "no/such/model", "--dataset", "esc50:x"], "model not found"),
    (["classify", "--model", "no/such/model", "--labels", "a", "no_file.wav"], "audio file not found"),
    (["fit-teacher", "--config", "missing.yaml"], "config file not found"),
    (["curate", "du", "--config", "missing.yaml"], "config file not found"),
    (["import-msclap", "no/such/CLAP_weights_2022.pth", "out"], "no such checkpoint file"),
    (["import-laion-clap", "no/such/630k-audioset-best.pt", "out"], "no such checkpoint file"),
])
def test_user_errors_exit_2_with_one_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_override_names_the_key(tmp_path, capsys):
    config = tmp_path / "teacher.yaml"
    config.write_text("data: {train_manifest: pairs.csv}\n")
    assert main(["fit-teacher", "--config", str(config), "--set", "optim.lrr=0.1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_example_configs_are_valid():
    """Every YAML file in configs/ loads as its kind, named by the file's prefix (teacher, student,
    curate, tagger); any other file must be a study config. A new example cannot rot."""
    from pathlib import Path

    from clapcurate.curate import load_curation_config
    from clapcurate.study import load_study_config
    from clapcurate.train import load_student_config, load_tagger_config, load_teacher_config

    loaders = {"teacher": load_teacher_config, "student": load_student_config, "curate": load_curation_config,
               "tagger": load_tagger_config}
    configs = Path(__file__).resolve().parent.parent / "configs"
    loaded = {}
    for path in sorted(configs.glob("*.y*ml")):
        kind = next((prefix for prefix in loaders if path.stem.startswith(prefix)), "study")
        loaded[path.name] = loaders.get(kind, load_study_config)(path)
    assert {"teacher.yaml", "student.yaml", "curate.yaml", "tagger.yaml", "demo.yaml", "paper.yaml"} <= set(loaded)
    assert loaded["teacher.yaml"].model.audio.encoder == "cnn14"
    assert loaded["student.yaml"].loss.target_norm == method.TARGET_NORM  # the example follows the default
    assert loaded["student.yaml"].text.freeze_text_encoder and loaded["student.yaml"].text.cache_text_features
    assert loaded["curate.yaml"].sigma == 0.7
    assert loaded["curate.yaml"].pool_embeddings and loaded["curate.yaml"].caption_embeddings
    for family in ("laion_clap", "msclap_2023"):
        curation = loaded[f"curate_{family}.yaml"]
        assert curation.teacher == f"ckpt/{family}" and curation.keep_fraction == 0.001
    assert loaded["tagger.yaml"].data.labels_csv.endswith("class_labels_indices.csv")
    assert loaded["demo.yaml"].pretrain_audio.trainer.max_steps > 0
    for name in ("teacher.yaml", "student.yaml"):
        text = (configs / name).read_text()
        assert "freeze_text_encoder" in text and "cache_text_features" in text and "min_pairs_warning" in text