"""Audio-encoder pretraining: a PANNs-style tagger trained on labelled clips starts a teacher."""

import numpy as np
import pandas as pd
import pytest
import torch

from clapcurate import features
from clapcurate.audio import load_audio
from clapcurate.cli import main
from clapcurate.errors import ManifestError
from clapcurate.model import checkpoints
from clapcurate.model.audio_encoders import load_panns_checkpoint
from clapcurate.model.weights import read_torch_state_dict
from clapcurate.train import (
    OptimConfig, TaggerConfig, TaggerDataConfig, TrainerConfig, fit_tagger, fit_teacher,
)
from clapcurate.train.data import label_matrix
from clapcurate.train.fit import build_tagger
from clapcurate.metrics import average_precision
from clapcurate.train.module import TAGGER_CHECKPOINT

from test_train import NO_AUGMENT, QUIET, pairs_csv, teacher_config, write_clips  # noqa: F401 (fixture)


@pytest.fixture(autouse=True)
def fresh_feature_memory():
    features.clear_memory()
    yield
    features.clear_memory()


def labelled_clips(folder) -> pd.DataFrame:
    """32 clips (8 pitches x 4 modulation rates) labelled by pitch ("/m/low", "/m/high") and, for
    the two fastest modulations, "/m/fast" as well."""
    manifest = write_clips(folder, 32)
    k = np.arange(32)
    manifest["label"] = [("/m/low" if pitch < 4 else "/m/high") + (",/m/fast" if rate >= 2 else "")
                         for pitch, rate in zip(k % 8, k // 8 % 4)]
    manifest["caption"] = ""
    return manifest


def tagger_config(tiny_clap_config, train, out_dir, **changes) -> TaggerConfig:
    return TaggerConfig(
        audio=tiny_clap_config.audio,
        data=TaggerDataConfig(train=str(train), batch_size=16, **changes.pop("data", {"val_fraction": 0.0})),
        optim=OptimConfig(lr=3e-3),
        augment=NO_AUGMENT,
        trainer=TrainerConfig(**QUIET, max_steps=changes.pop("max_steps", 60), max_epochs=None),
        out_dir=str(out_dir),
        **changes,
    )


def test_label_matrix_is_multi_hot_and_names_an_unknown_label():
    matrix = label_matrix(["/m/a", "/m/b, /m/a", ""], ["/m/a", "/m/b"], "x.csv")
    np.testing.assert_array_equal(matrix, [[1, 0], [1, 1], [0, 0]])
    with pytest.raises(ManifestError, match=r"row 2: label '/m/c'"):
        label_matrix(["/m/a", "/m/c"], ["/m/a", "/m/b"], "x.csv")


def test_average_precision_matches_hand_computed_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    # class 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: its one positive ranked first -> 1
    assert average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2)
    assert average_precision(scores, np.zeros_like(targets)) != average_precision(scores, np.zeros_like(targets))


def test_tagger_learns_its_labels_and_starts_a_teacher(tiny_clap_config, tmp_path):
    manifest = labelled_clips(tmp_path / "audio")
    manifest.to_csv(tmp_path / "labelled.csv", index=False)
    run = fit_tagger(tagger_config(tiny_clap_config, tmp_path / "labelled.csv", tmp_path / "tagger"))
    checkpoint = run / "best" / TAGGER_CHECKPOINT
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["labels"] == ["/m/fast", "/m/high", "/m/low"]  # every label present, sorted
    assert "fc_audioset.weight" in saved["model"] and "conv_block1.conv1.weight" in saved["model"]

    tagger = build_tagger(tiny_clap_config.audio, 3).eval()
    load_panns_checkpoint(tagger.encoder, checkpoint)
    tagger.fc_audioset.load_state_dict({"weight": saved["model"]["fc_audioset.weight"],
                                        "bias": saved["model"]["fc_audioset.bias"]})
    settings = features.FrontendSettings.of(tiny_clap_config.audio)
    logmel = torch.stack([torch.from_numpy(features.compute_logmel(load_audio(path, 16000), settings).astype(np.float32))
                          for path in manifest["audio_path"]])
    with torch.no_grad():
        scores = tagger.forward_logmel(logmel.unsqueeze(1)).numpy()
    targets = label_matrix(manifest["label"].tolist(), saved["labels"], "test")
    assert average_precision(scores, targets) > 0.98  # untrained taggers score 0.5-0.8 here

    pairs = tmp_path / "pairs.csv"
    manifest.assign(caption=[f"clip {k}" for k in range(32)]).to_csv(pairs, index=False)
    config = teacher_config(tiny_clap_config, pairs, tmp_path / "teacher", max_steps=1, optim=OptimConfig(lr=0.0),
                            init_audio_encoder=str(checkpoint))
    teacher = checkpoints.load(fit_teacher(config) / "last")
    torch.testing.assert_close(teacher.audio_encoder.conv_block1.conv1.weight,
                               read_torch_state_dict(checkpoint)["conv_block1.conv1.weight"])


def test_tagger_keeps_the_class_order_of_a_labels_file_and_logs_validation(tiny_clap_config, tmp_path):
    manifest = labelled_clips(tmp_path / "audio")
    manifest.to_csv(tmp_path / "labelled.csv", index=False)
    pd.DataFrame({"index": [0, 1, 2, 3], "mid": ["/m/low", "/m/high", "/m/fast", "/m/unused"],
                  "display_name": ["low", "high", "fast", "unused"]}).to_csv(tmp_path / "labels.csv", index=False)
    config = tagger_config(tiny_clap_config, tmp_path / "labelled.csv", tmp_path / "tagger", max_steps=4,
                           data={"val_fraction": 0.3, "labels_csv": str(tmp_path / "labels.csv")})
    config.trainer.val_check_interval = 2
    run = fit_tagger(config)
    assert torch.load(run / "best" / TAGGER_CHECKPOINT, weights_only=True)["labels"] == \
        ["/m/low", "/m/high", "/m/fast", "/m/unused"]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val_mAP"].notna().sum() == 2 and metrics["val_loss"].notna().sum() == 2


def test_pretrain_audio_command_and_its_errors(tiny_clap_config, tmp_path, capsys):
    manifest = labelled_clips(tmp_path / "audio")
    manifest.to_csv(tmp_path / "labelled.csv", index=False)
    audio = tiny_clap_config.audio
    config = tmp_path / "tagger.yaml"
    config.write_text(
        f"audio: {{encoder: {audio.encoder}, sample_rate: 16000, window_size: 512, hop_size: 160, mel_bins: 32,"
        f" fmax: 8000, base_channels: 4, clip_seconds: 1.0}}\n"
        f"data: {{train: {tmp_path / 'labelled.csv'}, val_fraction: 0.0, batch_size: 16}}\n"
        f"trainer: {{max_steps: 2, max_epochs: null, progress_bar: false}}\n"
        f"out_dir: {tmp_path / 'run'}\n")
    assert main(["pretrain-audio", "--config", str(config)]) == 0
    assert (tmp_path / "run" / "best" / TAGGER_CHECKPOINT).is_file()
    assert "init_audio_encoder" in capsys.readouterr().out
    manifest.assign(label="").to_csv(tmp_path / "unlabelled.csv", index=False)
    assert main(["pretrain-audio", "--config", str(config), "--set", f"data.train={tmp_path / 'unlabelled.csv'}"]) == 2
    assert "holds a run already" in capsys.readouterr().err  # a finished run is never replaced silently
    assert main(["pretrain-audio", "--config", str(config), "--overwrite",
                 "--set", f"data.train={tmp_path / 'unlabelled.csv'}"]) == 2
    assert "no labels" in capsys.readouterr().err
