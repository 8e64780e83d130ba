"""One `device` setting honoured by every stage, and the GPU path that follows it (bf16 autocast,
channels_last, pinned memory, DataLoader workers), checked on the CPU: a sentinel device stands
in for a GPU where a stage receives its device, and a faked CUDA resolution shows which settings
a GPU run would get."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clapcurate import device as devices
from clapcurate.device import HardwareSettings, auto_workers, hardware_settings, resolve_device
from clapcurate.errors import ConfigError
from clapcurate.study import load_study_config, run_study
from clapcurate.study.pipeline import Study
from clapcurate.train.config import DataConfig, TeacherConfig, TrainerConfig, placed, result_settings
from clapcurate.train import fit_teacher
from clapcurate.train.fit import PairDataModule

from lightning.pytorch import Callback
from test_train import pairs_csv, teacher_config, weights, write_clips  # noqa: F401 (fixture)
from test_user_errors import assert_one_line_exit_2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stage_devices import StageDevices, tiny_study  # noqa: E402

SENTINEL = torch.device("cpu", 7)  # a CPU device every model and tensor accepts, unequal to plain "cpu"


def fake_gpus(monkeypatch, resolved: dict[str, torch.device]) -> None:
    """Resolve the device settings in `resolved` as given there; any other as on this machine."""
    real = devices.resolve_device

    def resolve(setting=devices.AUTO):
        return resolved[setting] if isinstance(setting, str) and setting in resolved else real(setting)

    monkeypatch.setattr(devices, "resolve_device", resolve)


# ------------------------------------------------------------------ resolving a setting

def test_auto_is_this_process_gpu_or_the_cpu_and_explicit_gpus_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device cuda:1: no CUDA GPU is visible"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_gpu_path_settings_are_on_for_cuda_off_on_the_cpu_and_explicit_values_win():
    assert hardware_settings(torch.device("cpu")) == HardwareSettings("32", False, False, 0)
    assert hardware_settings(torch.device("cuda", 0)) == HardwareSettings("bf16-mixed", True, True, auto_workers())
    assert hardware_settings(torch.device("cuda"), "32", False, False, 3) == HardwareSettings("32", False, False, 3)
    assert hardware_settings(torch.device("cpu"), "bf16-mixed", num_workers=2) == HardwareSettings("bf16-mixed", False,
                                                                                                    False, 2)
    assert not hardware_settings(torch.device("cpu"), pin_memory=True).pin_memory  # page-locking serves a GPU only
    assert 1 <= auto_workers(processes=64) <= auto_workers() <= devices.MAX_AUTO_WORKERS


# ------------------------------------------------------------------ training

def test_a_fit_on_a_gpu_gets_lightning_placement_bf16_channels_last_pinned_batches_and_workers(monkeypatch):
    fake_gpus(monkeypatch, {"cuda:1": torch.device("cuda", 1), "cuda": torch.device("cuda", 0)})
    config = placed(TeacherConfig(trainer=TrainerConfig(device="cuda:1")))
    trainer, data = config.trainer, config.data
    assert (trainer.accelerator, trainer.devices, trainer.precision, trainer.channels_last) == ("gpu", [1], "bf16-mixed", True)
    assert (data.pin_memory, data.num_workers) == (True, auto_workers(1))
    loader = PairDataModule(None, None, None, None, data, seed=0)._loader([])
    assert (loader.pin_memory, loader.num_workers) == (True, auto_workers(1))
    # eight GPUs share the cores; explicit settings are kept
    eight = placed(TeacherConfig(trainer=TrainerConfig(device="cuda", devices=8, precision="32"),
                                 data=dataclasses.replace(TeacherConfig().data, num_workers=3)))
    assert (eight.trainer.devices, eight.trainer.precision, eight.data.num_workers) == (8, "32", 3)
    assert placed(TeacherConfig(trainer=TrainerConfig(device="cuda", devices=8))).data.num_workers == auto_workers(8)
    with pytest.raises(ConfigError, match="names one GPU but trainer.devices is 8"):
        placed(TeacherConfig(trainer=TrainerConfig(device="cuda:1", devices=8)))
    with pytest.raises(ConfigError, match="trainer.device cuda:1 and trainer.accelerator cpu disagree"):
        placed(TeacherConfig(trainer=TrainerConfig(device="cuda:1", accelerator="cpu")))


def test_cpu_defaults_are_the_plain_float32_fit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = placed(TeacherConfig())
    trainer, data = config.trainer, config.data
    assert (trainer.accelerator, trainer.devices, trainer.precision, trainer.channels_last) == ("cpu", 1, "32", False)
    assert (data.pin_memory, data.num_workers) == (False, 0)
    loader = PairDataModule(None, None, None, None, data, seed=0)._loader([])
    assert (loader.pin_memory, loader.num_workers) == (False, 0)
    # an explicit accelerator decides what auto means: a GPU fit in bf16
    assert placed(TeacherConfig(trainer=TrainerConfig(accelerator="gpu"))).trainer.precision == "bf16-mixed"


def test_channels_last_puts_the_cnn_in_channels_last_format_and_trains_alike(tiny_clap_config, pairs_csv, tmp_path):
    formats = []

    class Format(Callback):
        def on_train_start(self, trainer, pl_module):
            conv = pl_module.model.audio_encoder.conv_blocks()[1].conv1.weight  # [out, in > 1, 3, 3]
            formats.append(conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous())

    # dropout draws its mask in memory order: without it the two layouts compute the same
    model = dataclasses.replace(tiny_clap_config, audio=dataclasses.replace(tiny_clap_config.audio, block_dropout=0.0))
    runs = {setting: fit_teacher(teacher_config(model, pairs_csv, tmp_path / str(setting), max_steps=2,
                                                trainer={"channels_last": setting}), callbacks=[Format()])
            for setting in ("auto", True)}
    assert formats == [False, True]  # auto on the CPU: off
    plain, channels_last = (pd.read_csv(runs[setting] / "metrics.csv").train_loss.dropna().to_numpy()
                            for setting in ("auto", True))
    np.testing.assert_allclose(channels_last, plain, rtol=1e-4)  # the same training within float error
    assert weights(runs[True] / "last").keys() == weights(runs["auto"] / "last").keys()


def test_gpu_path_keys_are_validated():
    for bad in (dict(device="gpu0"), dict(precision="16"), dict(channels_last="yes")):
        with pytest.raises(ValueError):
            TrainerConfig(**bad)
    for bad in (dict(num_workers=-1), dict(num_workers="many"), dict(pin_memory=1)):
        with pytest.raises(ValueError):
            DataConfig(**bad)


# ------------------------------------------------------------------ embedding

def test_embedding_defaults_on_the_cpu_are_float32_without_workers(tiny_clap, tmp_path):
    from clapcurate.embed import embed_audio

    manifest = write_clips(tmp_path, 5)
    default = embed_audio(tiny_clap, manifest, batch_size=2)
    plain = embed_audio(tiny_clap, manifest, batch_size=2, num_workers=0, pin_memory=False, precision="32")
    np.testing.assert_array_equal(default.embeddings, plain.embeddings)
    bf16 = embed_audio(tiny_clap, manifest, batch_size=2, precision="bf16-mixed")  # autocast is wired in
    assert not np.array_equal(bf16.embeddings, plain.embeddings)
    np.testing.assert_allclose(bf16.embeddings, plain.embeddings, atol=0.05)


def test_embedding_on_a_gpu_decodes_in_workers_pins_batches_and_autocasts(tiny_clap, monkeypatch, tmp_path):
    from clapcurate import embed

    manifest = write_clips(tmp_path, 5)
    plain = embed.embed_audio(tiny_clap, manifest, batch_size=2, num_workers=0)
    monkeypatch.setattr(devices, "resolve_device", lambda setting=None: torch.device("cuda"))  # the model "is" on a GPU
    loaders, pinned = [], []

    def loader(*args, **kwargs):
        loaders.append(kwargs["num_workers"])
        return torch.utils.data.DataLoader(*args, **{**kwargs, "num_workers": 0})

    monkeypatch.setattr(embed, "DataLoader", loader)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor: pinned.append(tensor.shape) or tensor)
    result = embed.embed_audio(tiny_clap, manifest, batch_size=2)
    assert loaders == [auto_workers()] and len(pinned) == 3  # 5 one-window clips in batches of 2
    assert not np.array_equal(result.embeddings, plain.embeddings)  # bf16 autocast
    np.testing.assert_allclose(result.embeddings, plain.embeddings, atol=0.05)


# ------------------------------------------------------------------ the study: every stage on the device

@pytest.fixture(scope="module")
def device_study(tmp_path_factory, tiny_text_encoder_dir, tiny_world):
    """The tiny study with `device: cuda:7`, resolved to the sentinel; what each stage received."""
    config = tiny_study(tmp_path_factory.mktemp("device_study"), "cuda:7", tiny_text_encoder_dir, pooling="cls",
                        world=tiny_world)
    with pytest.MonkeyPatch.context() as monkeypatch, StageDevices() as log:
        fake_gpus(monkeypatch, {"cuda:7": SENTINEL})
        run_study(config)
    return config, log


def test_every_stage_of_a_study_runs_on_the_configured_device(device_study):
    _, log = device_study
    by_stage = log.devices_by_stage()
    kinds = {stage.split("/")[0] for stage in by_stage}
    assert kinds == {"pretrain_audio", "teacher", "embed", "curate", "student", "eval"}
    assert len([stage for stage in by_stage if stage.startswith("curate/")]) == 7  # DU, DS and ADS x 3
    wrong = {stage: used for stage, used in by_stage.items() if used != {str(SENTINEL)}}
    assert not wrong, f"stages that did not run (only) on the configured device: {wrong}"


def test_a_device_change_keeps_finished_stages(device_study, monkeypatch):
    config, _ = device_study
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = Study(dataclasses.replace(config, device="cpu"))
    study.run()
    assert study.stages.computed == []
    # on a GPU, `precision: auto` would train the remaining stages in bf16: refused, naming the keys
    fake_gpus(monkeypatch, {"cuda": torch.device("cuda", 0)})
    with pytest.raises(ConfigError, match=r"teacher\.trainer\.precision"):
        Study(dataclasses.replace(config, device="cuda"))


def test_settings_recorded_before_the_gpu_path_resume_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = {"teacher": {"trainer": {"precision": "32", "max_steps": 4}, "data": {"num_workers": 0, "batch_size": 16}}}
    now = {"teacher": {"trainer": {"precision": "auto", "device": "auto", "channels_last": "auto", "max_steps": 4},
                       "data": {"num_workers": "auto", "pin_memory": "auto", "batch_size": 16}}}
    assert result_settings(before, "auto") == result_settings(now, "cpu") == {
        "teacher": {"trainer": {"precision": "32", "max_steps": 4}, "data": {"batch_size": 16}}}
    fake_gpus(monkeypatch, {"cuda": torch.device("cuda", 0)})
    assert result_settings(now, "cuda")["teacher"]["trainer"]["precision"] == "bf16-mixed"


# ------------------------------------------------------------------ the command line

def test_commands_take_device_and_refuse_a_missing_gpu_in_one_line(tmp_path, monkeypatch, capsys):
    from clapcurate.cli import _overrides, build_parser

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = build_parser()
    assert _overrides(parser.parse_args(["fit-teacher", "--config", "t.yaml", "--device", "cuda:1"])) == [
        "trainer.device=cuda:1"]
    assert _overrides(parser.parse_args(["curate", "du", "--config", "c.yaml", "--device", "cpu"]), "device") == [
        "device=cpu"]
    assert parser.parse_args(["study", "s.yaml"]).device is None  # the config's own device
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    for argv in (["evaluate", "--model", tmp_path, "--dataset", "esc50:x"],
                 ["classify", "--model", tmp_path, "--labels", "dog", audio],
                 ["embed", "--model", tmp_path, "--manifest", "folder:x", "--out", tmp_path / "e"]):
        assert_one_line_exit_2([*argv, "--device", "cuda:0"], capsys, "device cuda:0: no CUDA GPU is visible")
    with pytest.raises(SystemExit):
        parser.parse_args(["classify", "--model", "m", "--labels", "a", "x.wav", "--device", "gpu"])
