import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from clapcurate import features
from clapcurate.config import from_dict
from clapcurate.errors import ClapcurateError, ConfigError, ManifestError
from clapcurate.model import checkpoints
from clapcurate.train import (
    AugmentConfig, DataConfig, LossConfig, OptimConfig, StudentConfig, TeacherConfig, TeacherDataConfig,
    TextTrainConfig, TrainerConfig, TrainingDivergedError, fit_student, fit_teacher, load_student_config,
)
from clapcurate.data.manifest import take_subset
from clapcurate.data.manifest import split_by_clip
from clapcurate.train.data import CuratedDraws, EpochOrder, crop_frames
from clapcurate.train.module import FROZEN_WEIGHTS_KEY
from clapcurate.metrics import retrieval_metrics

SAMPLE_RATE = 16000
NO_AUGMENT = AugmentConfig(random_crop=False, gain_db=0.0, time_masks=0, freq_masks=0)
QUIET = dict(progress_bar=False, log_every_n_steps=1)
WORDS = ("dog bird rain wind car siren bell engine water fire door clock train horn cat cow baby "
         "crowd drum piano guitar voice thunder sea frog insect hammer saw glass knock laugh cough snore").split()


def write_clips(folder, n_clips, seed=0):
    """`n_clips` WAV files of 1 s: a harmonic tone (8 pitches) with amplitude modulation and noise
    (4 rates and levels), distinct for 32 clips; returns their manifest."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    time = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    rows = []
    for k in range(n_clips):
        f0 = 110.0 * 1.25 ** (k % 8)
        harmonics = np.sin(2 * np.pi * f0 * np.arange(1, 7)[:, None] * time).sum(0) / 6
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * 2.2 ** (k // 8 % 4) * time)
        wave = 0.5 * harmonics * envelope + 0.02 * (k // 8 % 4 + 1) * rng.standard_normal(SAMPLE_RATE)
        path = folder / f"clip{k:03d}.wav"
        soundfile.write(path, wave.astype(np.float32), SAMPLE_RATE)
        rows.append({"id": f"pair{k}", "clip_id": f"clip{k}", "audio_path": str(path), "caption": " ".join(WORDS[(k * 5 + j * 11) % len(WORDS)] for j in range(3))})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def fresh_feature_memory():
    features.clear_memory()
    yield
    features.clear_memory()


@pytest.fixture
def pairs_csv(tmp_path):
    manifest = write_clips(tmp_path / "audio", 32)
    path = tmp_path / "pairs.csv"
    manifest.to_csv(path, index=False)
    return path


def teacher_config(tiny_clap_config, manifest, out_dir, **changes):
    trainer = dict(QUIET, max_steps=changes.pop("max_steps", 4), max_epochs=None)
    trainer.update(changes.pop("trainer", {}))
    return TeacherConfig(
        model=tiny_clap_config,
        data=TeacherDataConfig(train_manifest=str(manifest), **changes.pop("data", {"val_fraction": 0.0, "batch_size": 8})),
        optim=changes.pop("optim", OptimConfig(lr=1e-3)),
        augment=changes.pop("augment", NO_AUGMENT),
        trainer=TrainerConfig(**trainer),
        text=TextTrainConfig(freeze_text_encoder=True, cache_text_features=True),
        out_dir=str(out_dir),
        **changes,
    )


def weights(folder):
    return load_file(str(folder / checkpoints.WEIGHTS_FILE))


# ---------------------------------------------------------------- features
def test_logmel_cache_matches_the_model_front_end_and_reuses_disk_entries(tiny_clap, tmp_path, monkeypatch):
    manifest = write_clips(tmp_path / "audio", 2)
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    cache = features.LogMelCache(settings, tmp_path / "cache")
    path = manifest.audio_path[0]
    logmel = cache.get(path)
    wave = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None]
    expected = tiny_clap.audio_encoder.logmel(wave)[0, 0].detach().numpy()
    assert logmel.dtype == np.float16 and logmel.shape == expected.shape == (settings.frames(SAMPLE_RATE), 32)
    assert np.allclose(logmel, expected, atol=0.05)
    assert len(list((tmp_path / "cache" / settings.digest()).glob("shard-*.bin"))) == 1
    features.clear_memory()
    monkeypatch.setattr(features, "compute_logmel", lambda *a, **k: pytest.fail("a stored clip was computed again"))
    assert np.array_equal(features.LogMelCache(settings, tmp_path / "cache").get(path), logmel)


def test_logmel_cache_reports_unreadable_files(tiny_clap, tmp_path):
    manifest = write_clips(tmp_path / "audio", 3)
    broken = tmp_path / "audio" / "broken.wav"
    broken.write_bytes(b"not audio at all")
    cache = features.LogMelCache(features.FrontendSettings.of(tiny_clap.config.audio))
    found, failures = cache.get_many([*manifest.audio_path, str(broken), str(tmp_path / "gone.wav")])
    assert found.present.tolist() == [True, True, True, False, False]
    assert set(failures) == {str(broken), str(tmp_path / "gone.wav")}
    with pytest.raises(KeyError):
        found[3]


def test_logmel_of_a_clip_shorter_than_half_a_window(tiny_clap):
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    for n_samples in (1, settings.window_size // 2):
        logmel = features.compute_logmel(np.full(n_samples, 0.1, dtype=np.float32), settings)
        assert logmel.shape[1] == settings.mel_bins and logmel.shape[0] >= 1 and np.isfinite(logmel).all()
    silence = features.silence_level(settings)
    assert features.compute_logmel(np.zeros(5 * settings.hop_size, dtype=np.float32), settings).max() == silence


def test_text_feature_cache_encodes_each_caption_once(tiny_clap, monkeypatch):
    cache = features.TextFeatureCache(tiny_clap.text_encoder)
    calls = []
    original = tiny_clap.text_encoder.encode
    monkeypatch.setattr(tiny_clap.text_encoder, "encode", lambda captions: calls.append(list(captions)) or original(captions))
    first = cache.features(["a dog", "rain", "a dog"])
    again = features.TextFeatureCache(tiny_clap.text_encoder).features(["rain", "a dog"])
    assert calls == [["a dog", "rain"]]
    assert np.array_equal(first[0], first[2]) and np.array_equal(again, first[[1, 0]])
    with torch.no_grad():
        assert np.allclose(first, tiny_clap.text_encoder.eval().encode(["a dog", "rain", "a dog"]).numpy(), atol=1e-5)


def test_crop_frames_random_and_deterministic():
    clip = np.arange(12, dtype=np.float16).reshape(6, 2)
    assert np.array_equal(crop_frames(clip, 4, None, -100.0), clip[:4])
    assert np.array_equal(crop_frames(clip[:2], 5, None, -100.0), np.resize(clip[:2], (5, 2)))
    padded = crop_frames(clip[:2], 5, np.random.default_rng(0), -100.0)
    assert (padded == -100.0).all(axis=1).sum() == 3
    starts = {int(crop_frames(clip, 4, np.random.default_rng(s), 0.0)[0, 0]) for s in range(40)}
    assert starts == {0, 2, 4}


# ---------------------------------------------------------------- selection and schedules
def test_split_by_clip_keeps_captions_of_a_clip_together_and_is_stable():
    manifest = pd.DataFrame({"id": [f"p{i}" for i in range(400)], "clip_id": [f"c{i // 2}" for i in range(400)]})
    train, val = split_by_clip(manifest, 0.25, split_seed=3)
    assert not set(train.clip_id) & set(val.clip_id)
    assert 0.15 < len(val) / len(manifest) < 0.35
    _, val_of_half = split_by_clip(manifest.iloc[::3], 0.25, split_seed=3)
    assert set(val_of_half.clip_id) <= set(val.clip_id)
    assert set(split_by_clip(manifest, 0.25, split_seed=4)[1].clip_id) != set(val.clip_id)


def test_take_subset_is_reproducible():
    manifest = pd.DataFrame({"id": [f"p{i}" for i in range(100)]})
    first = take_subset(manifest, 0.1, seed=5)
    assert len(first) == 10 and first.equals(take_subset(manifest, 0.1, seed=5))
    assert not first.equals(take_subset(manifest, 0.1, seed=6))


def test_epoch_order_visits_every_item_once_per_epoch():
    order = EpochOrder(10, 3, seed=0)
    assert order.steps_per_epoch == 3
    epoch = np.concatenate([order.rows(p) for p in range(3)])
    assert len(set(epoch)) == 9
    assert not np.array_equal(order.rows(0), order.rows(3))


@pytest.mark.parametrize("replay_prob", [0.8, 0.5, 0.1])
def test_replay_draws_curated_batches_at_the_configured_rate(replay_prob):
    curated_prob = 1.0 - replay_prob
    draws = CuratedDraws(replay_prob, seed=1)
    steps = 3 * CuratedDraws.BLOCK + 123
    flags = np.array([draws.is_curated(s) for s in range(steps)])
    sigma = math.sqrt(steps * curated_prob * (1 - curated_prob))
    assert abs(flags.sum() - steps * curated_prob) < 4.5 * sigma
    after_curated = flags[1:][flags[:-1]]  # independent draws: the previous step changes nothing
    sigma_after = math.sqrt(len(after_curated) * curated_prob * (1 - curated_prob))
    assert abs(after_curated.sum() - len(after_curated) * curated_prob) < 4.5 * sigma_after
    for step in (0, 17, CuratedDraws.BLOCK + 5, steps - 1):
        assert draws.curated_before(step) == flags[:step].sum()


# ---------------------------------------------------------------- configs
def test_student_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text("teacher: t\nloss:\n  kind: soft_label\n  beta: 0.2\n")
    config = load_student_config(path, ["replay.replay_prob=0.7", "trainer.precision=bf16-mixed"])
    assert config.loss.beta == 0.2 and config.replay.replay_prob == 0.7 and config.trainer.precision == "bf16-mixed"
    with pytest.raises(ConfigError, match="loss.betta"):
        load_student_config(path, ["loss.betta=0.1"])
    with pytest.raises(ConfigError, match="target_norm"):
        load_student_config(path, ["loss.target_norm=rows"])
    with pytest.raises(ConfigError, match="cached"):
        from_dict(StudentConfig, {"loss": {"teacher_targets": "cached"}})


# ---------------------------------------------------------------- training
def test_tiny_teacher_overfits_32_pairs(tiny_clap_config, pairs_csv, tmp_path):
    # PANNs' dropout (0.2 per block, 0.5 at the head) drowns a 4-channel CNN's signal: off here.
    audio = dataclasses.replace(tiny_clap_config.audio, block_dropout=0.0, head_dropout=0.0)
    model_config = dataclasses.replace(tiny_clap_config, audio=audio, projection_dropout=0.0)
    config = teacher_config(model_config, pairs_csv, tmp_path / "run", max_steps=100,
                            data={"val_fraction": 0.0, "batch_size": 32}, optim=OptimConfig(lr=3e-3))
    run_dir = fit_teacher(config)
    assert {"best", "last", "metrics.csv", "resume.ckpt", "summary.json"} <= {p.name for p in run_dir.iterdir()}
    model = checkpoints.load(run_dir / "last")
    manifest = pd.read_csv(pairs_csv)
    waves = torch.stack([torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in manifest.audio_path])
    with torch.no_grad():
        audio, text = model.encode_audio(waves).numpy(), model.encode_text(manifest.caption.tolist()).numpy()
    metrics = retrieval_metrics(audio, text, np.arange(32))
    assert metrics["text_to_audio/R@1"] == 1.0 and metrics["audio_to_text/R@1"] == 1.0


def test_a_frozen_audio_encoder_keeps_its_weights_and_statistics(tiny_clap_config, pairs_csv, tmp_path):
    from lightning.pytorch import seed_everything

    from clapcurate.model.clap import CLAP

    config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=3, freeze_audio_encoder=True)
    seed_everything(config.seed, verbose=False)
    first = CLAP(tiny_clap_config).state_dict()  # the weights fit_teacher starts from (same seed)
    trained = weights(fit_teacher(config) / "last")
    audio = [key for key in trained if key.startswith("audio_encoder.")]
    assert any("running_mean" in key for key in audio)
    for key in audio:
        torch.testing.assert_close(trained[key], first[key], msg=key)
    assert not torch.equal(trained["audio_projection.linear1.weight"], first["audio_projection.linear1.weight"])


def test_validation_metrics_and_best_checkpoint(tiny_clap_config, pairs_csv, tmp_path):
    config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=6,
                            data={"val_fraction": 0.3, "batch_size": 8}, trainer={"val_check_interval": 3})
    run_dir = fit_teacher(config)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    val = metrics.dropna(subset=["val_loss"])
    assert list(val.step) == [2, 5]
    assert {"val_t2a_R@1", "val_a2t_R@10", "train_loss"} <= set(metrics.columns)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["train_pairs"] + summary["val_pairs"] == 32 and summary["val_pairs"] > 0
    train_clips = set(pd.read_csv(run_dir / "train_pairs.csv").clip_id)
    assert not train_clips & set(pd.read_csv(run_dir / "val_pairs.csv").clip_id)
    best_step = int(val.step.iloc[val.val_loss.argmin()])
    assert (run_dir / "best").is_dir()
    best_is_last = all(torch.equal(v, weights(run_dir / "last")[k]) for k, v in weights(run_dir / "best").items())
    assert best_is_last == (best_step == 5)


class StopAt(Callback):
    """Raises at the start of a given step (an interrupted run)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_resume_after_interruption_reaches_the_same_weights(tiny_clap_config, pairs_csv, tmp_path):
    augment = AugmentConfig()  # random crops, gain, masks and projection dropout: RNG matters
    common = dict(max_steps=9, data={"val_fraction": 0.2, "batch_size": 8}, augment=augment,
                  trainer={"val_check_interval": 4})
    straight = fit_teacher(teacher_config(tiny_clap_config, pairs_csv, tmp_path / "straight", **common))
    interrupted_config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "resumed", **common)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        fit_teacher(interrupted_config, callbacks=[StopAt(6)])
    state = torch.load(tmp_path / "resumed" / "resume.ckpt", weights_only=False)
    assert list(state[FROZEN_WEIGHTS_KEY]) == ["model.text_encoder"]  # its hash, not its weights
    assert not [key for key in state["state_dict"] if key.startswith("model.text_encoder.")]
    assert "model.audio_projection.linear1.weight" in state["state_dict"]
    resumed = fit_teacher(dataclasses.replace(interrupted_config, resume=True))
    expected, got = weights(straight / "last"), weights(resumed / "last")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_resume_refuses_a_frozen_part_other_than_the_one_saved(tiny_clap_config, pairs_csv, tmp_path):
    config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=6,
                            data={"val_fraction": 0.2, "batch_size": 8}, trainer={"val_check_interval": 2})
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        fit_teacher(config, callbacks=[StopAt(3)])  # after the validation (and resume state) of step 2
    path = tmp_path / "run" / "resume.ckpt"
    state = torch.load(path, weights_only=False)
    state[FROZEN_WEIGHTS_KEY]["model.text_encoder"] = "0" * 64
    torch.save(state, path)
    with pytest.raises(ClapcurateError, match="cannot resume: the frozen text encoder differs from the one the run "
                                              f"was saved with \\(sha256 {'0' * 64}\\)"):
        fit_teacher(dataclasses.replace(config, resume=True))


def test_corrupted_files_are_skipped_and_counted(tiny_clap_config, tmp_path):
    manifest = write_clips(tmp_path / "audio", 12)
    for k in (3, 7):
        open(manifest.audio_path[k], "wb").write(b"RIFF garbage")
    path = tmp_path / "pairs.csv"
    manifest.to_csv(path, index=False)
    run_dir = fit_teacher(teacher_config(tiny_clap_config, path, tmp_path / "run", max_steps=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["skipped_clips"] == 2 and summary["train_pairs"] == 10
    assert set(pd.read_csv(run_dir / "skipped.csv").audio_path) == {manifest.audio_path[3], manifest.audio_path[7]}


def test_mostly_missing_files_stop_with_a_clear_error(tiny_clap_config, tmp_path):
    manifest = write_clips(tmp_path / "audio", 10)
    manifest.loc[2:, "audio_path"] = [str(tmp_path / f"missing{k}.wav") for k in range(8)]
    path = tmp_path / "pairs.csv"
    manifest.to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"pairs.csv: 8 of 10 audio files are missing"):
        fit_teacher(teacher_config(tiny_clap_config, path, tmp_path / "run"))


class PoisonAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.audio_projection.linear1.weight.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_clap_config, pairs_csv, tmp_path):
    config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=8,
                            data={"val_fraction": 0.2, "batch_size": 8}, trainer={"val_check_interval": 2})
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 3"):
        fit_teacher(config, callbacks=[PoisonAt(3)])
    last = weights(tmp_path / "run" / "last")
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())


# ---------------------------------------------------------------- students
@pytest.fixture
def teacher_dir(tiny_clap, tmp_path):
    return checkpoints.save(tiny_clap, tmp_path / "teacher")


def student_config(teacher_dir, pairs_csv, out_dir, **changes):
    manifest = pd.read_csv(pairs_csv)
    curated_path, replay_path = out_dir.parent / f"{out_dir.name}_curated.csv", out_dir.parent / f"{out_dir.name}_replay.csv"
    manifest.iloc[:16].to_csv(curated_path, index=False)
    manifest.iloc[16:].to_csv(replay_path, index=False)
    trainer = dict(QUIET, max_steps=changes.pop("max_steps", 6), max_epochs=None)
    return StudentConfig(
        teacher=str(teacher_dir), improvement_set=str(curated_path), replay_manifest=str(replay_path),
        loss=changes.pop("loss", LossConfig()), data=DataConfig(val_fraction=0.0, batch_size=8),
        optim=OptimConfig(lr=1e-3), augment=changes.pop("augment", NO_AUGMENT), trainer=TrainerConfig(**trainer),
        text=TextTrainConfig(freeze_text_encoder=True, cache_text_features=True), out_dir=str(out_dir), **changes,
    )


def test_soft_labels_with_beta_zero_follow_the_contrastive_trajectory(teacher_dir, pairs_csv, tmp_path):
    runs = {}
    for name, loss in {
        "contrastive": LossConfig(kind="contrastive"),
        "soft": LossConfig(kind="soft_label", beta=0.0),
        "soft_beta": LossConfig(kind="soft_label", beta=0.5, target_norm="none"),
    }.items():
        run_dir = fit_student(student_config(teacher_dir, pairs_csv, tmp_path / name, loss=loss, augment=AugmentConfig()))
        runs[name] = (pd.read_csv(run_dir / "metrics.csv").train_loss.dropna().to_numpy(), weights(run_dir / "last"))
    assert len(runs["contrastive"][0]) == 6
    assert np.array_equal(runs["contrastive"][0], runs["soft"][0])
    assert all(torch.equal(v, runs["soft"][1][k]) for k, v in runs["contrastive"][1].items())
    assert not np.array_equal(runs["contrastive"][0], runs["soft_beta"][0])


@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_statistics_follow_freeze_batchnorm(teacher_dir, pairs_csv, tmp_path, freeze):
    run_dir = fit_student(student_config(teacher_dir, pairs_csv, tmp_path / "student", freeze_batchnorm=freeze,
                                         max_steps=3))
    teacher, student = weights(teacher_dir), weights(run_dir / "last")
    stats = [k for k in teacher if k.endswith(("running_mean", "running_var"))]
    assert stats
    unchanged = all(torch.equal(teacher[k], student[k]) for k in stats)
    assert unchanged == freeze
    assert not torch.equal(teacher["audio_projection.linear1.weight"], student["audio_projection.linear1.weight"])


def folder_bytes(folder) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_a_student_checkpoint_holds_no_copy_of_its_frozen_text_encoder(teacher_dir, pairs_csv, tmp_path):
    run_dir = fit_student(student_config(teacher_dir, pairs_csv, tmp_path / "student", max_steps=2))
    teacher = checkpoints.load(teacher_dir)
    encoder_bytes = sum(t.numel() * t.element_size() for t in teacher.text_encoder.state_dict().values())
    last = run_dir / "last"
    assert not [key for key in weights(last) if key.startswith("text_encoder.")]
    student = checkpoints.load(last)
    full = checkpoints.save(student, tmp_path / "self_contained", self_contained=True)
    assert folder_bytes(full) - folder_bytes(last) >= encoder_bytes
    assert folder_bytes(last) < encoder_bytes
    # the resume state holds neither the frozen text encoder nor the online teacher
    state = torch.load(run_dir / "resume.ckpt", weights_only=False)
    assert sorted(state[FROZEN_WEIGHTS_KEY]) == ["model.text_encoder", "teacher"]
    assert not [key for key in state["state_dict"] if key.startswith(("model.text_encoder.", "teacher."))]
    assert all(torch.equal(tensor, teacher.text_encoder.state_dict()[key])
               for key, tensor in student.text_encoder.state_dict().items())


def test_a_fine_tuned_text_encoder_is_stored_in_full(tiny_clap_config, pairs_csv, tmp_path):
    config = dataclasses.replace(teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=2),
                                 text=TextTrainConfig(freeze_text_encoder=False))
    run_dir = fit_teacher(config)
    model = checkpoints.load(run_dir / "last")
    text_keys = {f"text_encoder.{key}" for key in model.text_encoder.state_dict()}
    assert text_keys <= set(weights(run_dir / "last"))
    assert "source" not in json.loads((run_dir / "last" / checkpoints.PARTS_FILE).read_text())["parts"]["text_encoder"]
    state = torch.load(run_dir / "resume.ckpt", weights_only=False)
    assert not state[FROZEN_WEIGHTS_KEY] and {f"model.{key}" for key in text_keys} <= set(state["state_dict"])


def test_student_with_cached_teacher_targets(teacher_dir, pairs_csv, tmp_path):
    from clapcurate.embed import embed_manifest

    audio_dir = embed_manifest(teacher_dir, pairs_csv, tmp_path / "emb_audio", modality="audio", progress=False)
    text_dir = embed_manifest(teacher_dir, pairs_csv, tmp_path / "emb_text", modality="text", progress=False)
    loss = LossConfig(teacher_targets="cached", teacher_audio_embeddings=[str(audio_dir)],
                      teacher_text_embeddings=[str(text_dir)])
    run_dir = fit_student(student_config(teacher_dir, pairs_csv, tmp_path / "student", loss=loss, max_steps=3))
    assert len(pd.read_csv(run_dir / "metrics.csv").train_loss.dropna()) == 3
    wrong = dataclasses.replace(loss, teacher_audio_embeddings=[str(text_dir)])
    with pytest.raises(ManifestError, match="no embedding for .* replay audio with the teacher"):
        fit_student(student_config(teacher_dir, pairs_csv, tmp_path / "student2", loss=wrong))


def test_bf16_mixed_precision_trains_on_cpu(tiny_clap_config, pairs_csv, tmp_path):
    run_dir = fit_teacher(teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=3,
                                         trainer={"precision": "bf16-mixed"}))
    losses = pd.read_csv(run_dir / "metrics.csv").train_loss.dropna()
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert all(v.dtype == torch.float32 for v in weights(run_dir / "last").values() if v.is_floating_point())


def test_teacher_starts_from_a_panns_checkpoint_of_another_sample_rate(tiny_clap_config, pairs_csv, tmp_path):
    from clapcurate.model.audio_encoders import build_audio_encoder

    audio = tiny_clap_config.audio
    panns = build_audio_encoder(audio.encoder, sample_rate=32000, window_size=audio.window_size,
                                hop_size=audio.hop_size, mel_bins=audio.mel_bins, fmin=audio.fmin,
                                fmax=audio.fmax, base_channels=audio.base_channels)
    torch.nn.init.normal_(panns.conv_block1.conv1.weight, std=3.0)
    state = {**panns.state_dict(), "fc_audioset.weight": torch.zeros(527, panns.out_dim)}
    torch.save({"model": state, "iteration": 0}, tmp_path / "panns.pth")
    config = teacher_config(tiny_clap_config, pairs_csv, tmp_path / "run", max_steps=1, optim=OptimConfig(lr=0.0),
                            init_audio_encoder=str(tmp_path / "panns.pth"))
    model = checkpoints.load(fit_teacher(config) / "last")
    torch.testing.assert_close(model.audio_encoder.conv_block1.conv1.weight, panns.conv_block1.conv1.weight)
    # the front-end keeps the model's own sample rate (its mel filters differ from the 32 kHz ones)
    assert not torch.allclose(model.audio_encoder.logmel_extractor.melW, panns.logmel_extractor.melW)

    # kept frozen, the audio encoder is referred to: the PANNs file, checked by hash on loading
    frozen = dataclasses.replace(config, freeze_audio_encoder=True, out_dir=str(tmp_path / "frozen"))
    last = fit_teacher(frozen) / "last"
    source = json.loads((last / checkpoints.PARTS_FILE).read_text())["parts"]["audio_encoder"]["source"]
    assert (source["kind"], source["path"]) == ("panns", str(tmp_path / "panns.pth"))
    assert not [key for key in weights(last) if key.startswith("audio_encoder.")]
    checkpoints.forget_loaded_sources()
    frozen_model = checkpoints.load(last)
    torch.testing.assert_close(frozen_model.audio_encoder.conv_block1.conv1.weight, panns.conv_block1.conv1.weight,
                               rtol=0, atol=0)
    state["conv_block1.conv1.weight"] = state["conv_block1.conv1.weight"] + 1.0
    torch.save({"model": state, "iteration": 0}, tmp_path / "panns.pth")
    checkpoints.forget_loaded_sources()
    with pytest.raises(ClapcurateError, match="last: the audio encoder it refers to has changed: .*panns.pth holds"):
        checkpoints.load(last)


def test_batch_augmentation_masks_stripes_and_shifts_gain():
    from clapcurate.train.data import augment_batch

    rng = np.random.default_rng(0)
    excerpts = rng.normal(size=(64, 40, 16)).astype(np.float32) * 0.01 - 50.0  # [B, frames, mel]
    identity = AugmentConfig(gain_db=0.0, time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(augment_batch(excerpts, identity, rng), excerpts)

    gain_only = AugmentConfig(gain_db=6.0, time_masks=0, freq_masks=0)
    shifted = augment_batch(excerpts, gain_only, np.random.default_rng(1))
    offsets = (shifted - excerpts).mean(axis=(1, 2))
    assert np.abs(offsets).max() <= 6.0 + 1e-4 and offsets.std() > 1.0  # a different gain per example
    np.testing.assert_allclose(shifted - excerpts, np.broadcast_to(offsets[:, None, None], excerpts.shape), atol=1e-3)

    masks_only = AugmentConfig(gain_db=0.0, time_masks=2, time_mask_frames=5, freq_masks=1, freq_mask_bins=3)
    masked = augment_batch(excerpts, masks_only, np.random.default_rng(2))
    changed = masked != excerpts  # [B, frames, mel]
    fill = excerpts.mean(axis=(1, 2))
    for b in range(len(excerpts)):
        np.testing.assert_allclose(masked[b][changed[b]], fill[b], rtol=1e-6)
        whole_frames = changed[b].all(axis=1).sum()  # masked time stripes cover every bin
        whole_bins = changed[b].all(axis=0).sum()
        assert whole_frames <= 2 * 5 and whole_bins <= 3
    assert changed.any(axis=(1, 2)).mean() > 0.5  # most examples got some mask


def test_a_fit_is_free_of_lightnings_irrelevant_warnings_and_counts_steps(teacher_dir, pairs_csv, tmp_path, capfd):
    import warnings

    from clapcurate.train.console import IRRELEVANT_LIGHTNING_MESSAGES, StepProgressBar

    totals = []

    class RecordTotal(Callback):
        def on_train_start(self, trainer, pl_module):
            totals.append(StepProgressBar.total_steps(trainer))

    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "notes.txt").write_text("a file of the user's beside the run\n")
    config = student_config(teacher_dir, pairs_csv, tmp_path / "student", max_steps=3)
    config.trainer.progress_bar = True
    config.data.val_fraction, config.data.min_val_pairs_warning = 0.25, 4
    config.trainer.val_check_interval = 2
    config.trainer.log_every_n_steps = 10  # more than the steps of an epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_student(config, callbacks=[RecordTotal()])
        config.resume, config.trainer.max_steps = True, 5
        fit_student(config, callbacks=[RecordTotal()])
    out, err = capfd.readouterr()
    texts = [str(w.message) for w in caught] + (out + err).splitlines()
    for pattern in ("logs directory", "eval mode", "weights_only", "LeafSpec", "litlogger", "logging interval",
                    "GPU available", "TPU available", "Loading weights"):
        assert not [text for text in texts if pattern in text], pattern
    assert len(IRRELEVANT_LIGHTNING_MESSAGES) == 8
    assert totals == [3, 5]
    assert "Epoch" not in out and "training steps" in out and "5/5" in out


def test_a_fit_with_few_pairs_warns_naming_the_counts(teacher_dir, pairs_csv, tmp_path, caplog):
    config = student_config(teacher_dir, pairs_csv, tmp_path / "student", max_steps=1)
    config.data.val_fraction = 0.25
    config.trainer.keep_best = False  # validation only informs: the fit goes on with a warning
    with caplog.at_level("WARNING", logger="clapcurate.train"):
        fit_student(config)
    summary = json.loads((tmp_path / "student" / "summary.json").read_text())
    warning = " ".join(r.getMessage() for r in caplog.records if "few pairs" in r.getMessage())
    assert f"curated pairs: {summary['curated_pairs']} (fewer than 64)" in warning
    assert f"replay pairs: {summary['replay_pairs']} (fewer than 64)" in warning
    assert f"val pairs: {summary['val_pairs']} (fewer than 16)" in warning
    caplog.clear()
    config = student_config(teacher_dir, pairs_csv, tmp_path / "quiet", max_steps=1)
    config.data.min_pairs_warning = 8
    with caplog.at_level("WARNING", logger="clapcurate.train"):
        fit_student(config)  # no validation asked for, enough pairs for this threshold
    assert not [r for r in caplog.records if "few pairs" in r.getMessage()]


def test_a_student_stops_on_its_own_validation_loss_and_reads_no_other_data(teacher_dir, pairs_csv, tmp_path,
                                                                            monkeypatch):
    """Early stopping watches the validation split of the student's own replay pairs: the only
    manifests a fit reads are its Improvement-Set and replay manifest (never a benchmark)."""
    import clapcurate.train.fit as fit_module

    opened = []
    real_read = fit_module.read_data  # the one reader of data (manifest files and dataset specs)
    monkeypatch.setattr(fit_module, "read_data", lambda path: opened.append(str(path)) or real_read(path))
    config = student_config(teacher_dir, pairs_csv, tmp_path / "stopping", max_steps=40)
    config = dataclasses.replace(  # 7 held-out pairs: enough for this test's threshold
        config, data=dataclasses.replace(config.data, val_fraction=0.4, min_val_pairs_warning=4), optim=OptimConfig(lr=0.05),
        trainer=dataclasses.replace(config.trainer, val_check_interval=2, early_stopping_patience=1))
    run_dir = fit_student(config)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    val = metrics.dropna(subset=["val_loss"])
    assert len(val) >= 2 and metrics["step"].max() < 39  # stopped before the cap
    assert val["val_loss"].iloc[-1] >= val["val_loss"].min()  # on a loss that no longer improved
    assert (run_dir / "best").is_dir() and (run_dir / "last").is_dir()
    assert set(opened) == {config.improvement_set, config.replay_manifest}


def test_a_student_with_too_few_held_out_pairs_validates_on_the_teachers_or_stops_before_training(
        tiny_clap, pairs_csv, tmp_path):
    """Its own held-out share (25% of 16 replay pairs) is below data.min_val_pairs_warning (16):
    the student validates on the teacher's held-out pairs (the val_pairs.csv of the teacher's run
    folder), and without them the fit stops before its run folder exists, so no best/ is ever
    picked without validation."""
    run = tmp_path / "teacher_run"
    teacher = checkpoints.save(tiny_clap, run / "best")
    held_out = write_clips(tmp_path / "teacher_val", 16, seed=1)
    held_out = held_out.assign(clip_id=lambda t: "val:" + t["clip_id"].astype(str),
                               id=lambda t: "val:" + t["id"].astype(str))
    held_out.to_csv(run / "val_pairs.csv", index=False)
    config = student_config(teacher, pairs_csv, tmp_path / "student", max_steps=2)
    config.data.val_fraction = 0.25
    config.trainer.val_check_interval = 2
    assert config.trainer.keep_best and config.data.min_val_pairs_warning == 16
    run_dir = fit_student(config)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val_pairs"] == 16 and "the teacher's held-out pairs" in summary["validation"]
    assert summary["curated_pairs"] == 16  # the teacher's held-out clips are none of the student's
    assert pd.read_csv(run_dir / "metrics.csv")["val_loss"].notna().any() and (run_dir / "best").is_dir()

    bare = checkpoints.save(tiny_clap, tmp_path / "bare_teacher")  # no run folder around it
    config = student_config(bare, pairs_csv, tmp_path / "stopped", max_steps=2)
    config.data.val_fraction = 0.25
    with pytest.raises(ConfigError, match=r"too few validation pairs to pick best/: data.val_fraction 0.25 holds out "
                                          r"\d of the 16 replay pairs and the teacher has no held-out pairs.*"
                                          r"data.min_val_pairs_warning = 16; set val_manifest"):
        fit_student(config)
    assert not [*(tmp_path / "stopped").iterdir()]  # nothing written: no run, no best/
    config.val_manifest = str(run / "val_pairs.csv")  # the documented fix: a validation set of one's own
    assert (fit_student(config) / "best").is_dir()


def test_student_on_an_empty_improvement_set_names_the_set(teacher_dir, pairs_csv, tmp_path):
    config = student_config(teacher_dir, pairs_csv, tmp_path / "student")
    pd.read_csv(config.improvement_set).iloc[:0].to_csv(config.improvement_set, index=False)
    with pytest.raises(ManifestError, match=rf"improvement_set: {config.improvement_set} holds 0 pairs: curate it "
                                            r"again with a lower sigma or keep_fraction"):
        fit_student(config)
