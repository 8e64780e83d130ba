"""The command line: zero-shot evaluation and classification on real-layout files, determinism,
and user errors as one message with exit status 2."""

import numpy as np
import pandas as pd
import pytest

from clapcurate.cli import main
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
    assert table["accuracy"].between(0, 1).all()
    assert "zero-shot accuracy" in capsys.readouterr().out


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


def test_example_stage_configs_are_valid():
    from pathlib import Path

    from clapcurate.curate import load_curation_config
    from clapcurate.study import load_study_config
    from clapcurate.train import load_student_config, load_tagger_config, load_teacher_config

    configs = Path(__file__).resolve().parent.parent / "configs"
    assert load_teacher_config(configs / "teacher.yaml").model.audio.encoder == "cnn14"
    assert load_student_config(configs / "student.yaml").loss.target_norm == "before_mix"
    assert load_curation_config(configs / "curate.yaml").sigma == 0.7
    for family in ("laion_clap", "msclap_2023"):
        curation = load_curation_config(configs / f"curate_{family}.yaml")
        assert curation.teacher == f"ckpt/{family}" and curation.keep_fraction == 0.001
    assert load_tagger_config(configs / "tagger.yaml").data.labels_csv.endswith("class_labels_indices.csv")
    for name in ("demo.yaml", "paper.yaml"):
        assert load_study_config(configs / name).model
    assert load_study_config(configs / "demo.yaml").pretrain_audio.trainer.max_steps > 0
