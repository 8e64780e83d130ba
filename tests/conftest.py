"""Shared test fixtures: tiny random models that build in well under a second.

No pretrained weights are downloaded: the text encoder is a 2-layer random BERT
saved with the offline MiniLM tokenizer, the audio encoder a CNN at 4 base channels.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # the test machine's cores are shared


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The embedded world at seed 3 and scale 0.01, generated once per test run (the parallel
    workers of one run share it, the first to need it writes it under a lock): the tiny studies'
    data (read only: a study reads its world and writes below its own folder)."""
    from filelock import FileLock

    from clapcurate.data.synth import generate_world

    # under pytest-xdist the run's folder (the parent of each worker's) is shared by its workers
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    world = shared / "tiny_world" / "world"
    with FileLock(shared / "tiny_world.lock"):
        if not (world / "world.json").is_file():  # written last: the world is whole
            generate_world(world, seed=3, scale=0.01, progress=False)
    return world.resolve()


@pytest.fixture(scope="session")
def tiny_text_encoder_dir(tmp_path_factory):
    """A folder with a tiny random `BertModel` (hidden 32) and the MiniLM tokenizer."""
    from clapcurate.model.text_encoders import write_tiny_text_encoder

    return write_tiny_text_encoder(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def tiny_clap_config(tiny_text_encoder_dir):
    """A `CLAPConfig` small enough for CPU tests: CNN14 at 4 base channels, 16 kHz, 1 s clips."""
    from clapcurate.model.clap import AudioConfig, CLAPConfig, TextConfig

    return CLAPConfig(
        audio=AudioConfig(
            encoder="cnn14",
            sample_rate=16000,
            window_size=512,
            hop_size=160,
            mel_bins=32,
            fmin=50,
            fmax=8000,
            base_channels=4,
            clip_seconds=1.0,
        ),
        text=TextConfig(name_or_path=str(tiny_text_encoder_dir), pooling="cls", max_length=100),
        d_proj=32,
    )


@pytest.fixture
def build_tiny_clap(tiny_waveforms):
    """Build a seeded random `CLAP` in eval mode, its BatchNorm statistics measured on `tiny_waveforms`.

    With fresh statistics (mean 0, variance 1) log-mel values around -50 dB saturate the random
    CNN and every clip gets nearly the same embedding; measured statistics keep clips apart.
    """
    from clapcurate.model.clap import CLAP

    def build(config):
        torch.manual_seed(0)
        model = CLAP(config)
        for module in model.audio_encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration batch
        model.audio_encoder.train()
        with torch.no_grad():
            model.audio_encoder(tiny_waveforms)
        return model.eval()

    return build


@pytest.fixture
def tiny_clap(tiny_clap_config, build_tiny_clap):
    """A seeded random `CLAP` built from `tiny_clap_config`, in eval mode."""
    return build_tiny_clap(tiny_clap_config)


@pytest.fixture
def tiny_waveforms():
    """Three clearly different 1 s clips at 16 kHz, [3, 16000]: a low tone, a loud high tone, quiet noise."""
    time = torch.arange(16000) / 16000.0
    generator = torch.Generator().manual_seed(3)
    return torch.stack([
        0.5 * torch.sin(2 * torch.pi * 300.0 * time),
        0.9 * torch.sin(2 * torch.pi * 2500.0 * time),
        0.01 * torch.randn(16000, generator=generator),
    ])


@pytest.fixture(scope="session")
def user_tasks(tmp_path_factory):
    """Two small labelled tasks of the user's own, with their own class names: `csv:` (a label
    column, two clips per recording) and a folder per class (`classes:`). Each class is a tone
    band, so a model can tell them apart. Returns {"machines": spec, "birds": spec}."""
    import numpy as np
    import soundfile

    root = tmp_path_factory.mktemp("user_tasks")
    rng = np.random.default_rng(7)
    time = np.arange(16000) / 16000.0

    def tone(frequency):
        return (0.4 * np.sin(2 * np.pi * frequency * (1 + 0.02 * rng.standard_normal()) * time)
                + 0.01 * rng.standard_normal(len(time))).astype(np.float32)

    birds = root / "birds"
    for label, frequency in (("blackbird", 2200.0), ("crow", 450.0), ("wood_pigeon", 900.0)):
        (birds / label).mkdir(parents=True)
        for k in range(4):
            soundfile.write(birds / label / f"{label}_{k}.wav", tone(frequency), 16000)
    machines = root / "machines"
    machines.mkdir()
    rows = []
    for label, frequency in (("hair_dryer", 3000.0), ("drill", 1200.0)):
        for k in range(6):
            soundfile.write(machines / f"{label}{k}.wav", tone(frequency), 16000)
            rows.append(f"{label}{k}.wav,{label},rec{label}{k // 2}")
    (machines / "machines.csv").write_text("file,label,recording_id\n" + "\n".join(rows) + "\n")
    return {"machines": f"csv:{machines / 'machines.csv'}", "birds": f"classes:{birds}"}
