"""PANNs encoders: structure, PANNs key layout, checkpoint loading and its errors."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from clapcurate.errors import ClapcurateError
from clapcurate.model.audio_encoders import (
    Cnn6,
    Cnn10,
    Cnn14,
    build_audio_encoder,
    load_panns_checkpoint,
)

PANNS_KEYS_FILE = Path(__file__).resolve().parents[2] / "shared/real-metadata/panns/cnn14_keys.txt"
TINY = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)


def tiny(name: str, base_channels: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return build_audio_encoder(name, base_channels=base_channels, **TINY)


def randomized_state_dict(encoder, seed: int) -> dict[str, torch.Tensor]:
    """The encoder's state dict with every trainable weight and BN statistic random (the frozen
    front-end keeps its values: loading refuses a front-end of another configuration)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in encoder.state_dict().items():
        if key.startswith(("spectrogram_extractor.", "logmel_extractor.")):
            state[key] = value.clone()
        elif value.is_floating_point():
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randint(0, 100, value.shape, generator=generator)
    return state


@pytest.mark.parametrize(
    "name, encoder_class, n_blocks, out_dim",
    [("cnn14", Cnn14, 6, 128), ("cnn10", Cnn10, 4, 32), ("CNN6", Cnn6, 4, 32)],
)
def test_encoders_embed_waveforms_and_logmels(name, encoder_class, n_blocks, out_dim):
    encoder = tiny(name).eval()
    waveform = torch.randn(3, 16000)

    with torch.no_grad():
        logmel = encoder.logmel(waveform)
        embedding = encoder(waveform)
        from_logmel = encoder.forward_logmel(logmel)

    assert isinstance(encoder, encoder_class)
    assert encoder.out_dim == out_dim
    assert logmel.shape == (3, 1, 101, 32)
    assert embedding.shape == (3, out_dim)
    torch.testing.assert_close(embedding, from_logmel)
    assert (embedding >= 0).all()  # PANNs' embedding is relu(fc1(...))
    blocks = {key.split(".")[0] for key in encoder.state_dict() if key.startswith("conv_block")}
    assert blocks == {f"conv_block{i}" for i in range(1, n_blocks + 1)}


def test_cnn6_blocks_hold_one_5x5_convolution():
    keys = tiny("cnn6").state_dict()

    assert keys["conv_block1.conv1.weight"].shape == (4, 1, 5, 5)
    assert not any(".conv2." in key or ".bn2." in key for key in keys)


def test_dropout_acts_in_training_only():
    encoder = tiny("cnn10")
    logmel = torch.randn(2, 1, 64, 32)

    encoder.train()
    with torch.no_grad():
        first, second = (encoder.forward_logmel(logmel) for _ in range(2))
    encoder.eval()
    with torch.no_grad():
        repeated = [encoder.forward_logmel(logmel) for _ in range(2)]

    assert not torch.equal(first, second)
    torch.testing.assert_close(repeated[0], repeated[1], atol=0, rtol=0)


def test_bn0_normalises_each_mel_bin():
    """Shifting each mel bin by bn0's running mean of that bin leaves the embedding unchanged."""
    encoder = tiny("cnn14").eval()
    logmel = torch.randn(2, 1, 64, 32)
    per_bin_offset = torch.linspace(-20, 20, 32)
    encoder.bn0.running_mean.copy_(per_bin_offset)

    with torch.no_grad():
        shifted = encoder.forward_logmel(logmel + per_bin_offset)
        encoder.bn0.running_mean.zero_()
        plain = encoder.forward_logmel(logmel)

    torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=1e-5)


def test_training_updates_the_network_but_not_the_frontend():
    encoder = tiny("cnn14").train()

    encoder(torch.randn(2, 16000)).sum().backward()

    assert encoder.conv_block1.conv1.weight.grad is not None
    assert encoder.fc1.weight.grad is not None
    assert not encoder.logmel_extractor.melW.requires_grad
    assert not encoder.spectrogram_extractor.stft.conv_real.weight.requires_grad


def test_encoder_runs_under_bf16_autocast():
    encoder = tiny("cnn6").eval()

    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        embedding = encoder(torch.randn(2, 16000))

    assert embedding.shape == (2, 32) and torch.isfinite(embedding.float()).all()


def test_unknown_encoder_name_is_a_user_error():
    with pytest.raises(ClapcurateError, match="'cnn99'.*cnn14, cnn10, cnn6"):
        build_audio_encoder("cnn99")


def read_panns_keys(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{key: (shape, dtype)} from the tab-separated key listing (comment lines start with #)."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype, _kind = line.split("\t")
        keys[key] = (tuple(int(n) for n in shape.strip("()").split(",") if n.strip()), dtype)
    return keys


@pytest.mark.skipif(not PANNS_KEYS_FILE.is_file(), reason="PANNs key listing not available")
def test_full_width_cnn14_has_panns_keys_and_loads_a_panns_state_dict():
    panns = read_panns_keys(PANNS_KEYS_FILE)
    encoder = Cnn14(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64,
                    fmin=50, fmax=14000)
    ours = {
        key: (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in encoder.state_dict().items()
    }
    without_head = {key: spec for key, spec in panns.items() if not key.startswith("fc_audioset.")}
    assert ours == without_head
    head_elements = sum(int(np.prod(shape)) for key, (shape, _) in panns.items() if key not in ours)
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    assert trainable == 80_753_615 - head_elements  # the listing's trainable total

    checkpoint = randomized_state_dict(encoder, seed=3)
    checkpoint["fc_audioset.weight"] = torch.zeros(panns["fc_audioset.weight"][0])
    checkpoint["fc_audioset.bias"] = torch.zeros(panns["fc_audioset.bias"][0])
    assert checkpoint.keys() == panns.keys()
    load_panns_checkpoint(encoder, checkpoint)

    loaded = encoder.state_dict()
    for key in ("bn0.running_var", "conv_block6.conv2.weight", "fc1.bias",
                "conv_block3.bn1.num_batches_tracked"):
        assert torch.equal(loaded[key], checkpoint[key]), key


def panns_training_checkpoint(state_dict: dict) -> dict:
    """The layout of PANNs' main.py: weights under 'model' next to the sampler's numpy state."""
    return {
        "iteration": 660000,
        "model": collections.OrderedDict(state_dict),
        "sampler": {
            "indexes": np.arange(20),
            "random_state": np.random.RandomState(0).get_state(),
        },
    }


@pytest.mark.parametrize("layout", ["training checkpoint", "bare state dict"])
def test_checkpoint_file_loads_and_ignores_the_audioset_head(tmp_path, layout):
    source = tiny("cnn10", seed=1)
    weights = randomized_state_dict(source, seed=5)
    weights["fc_audioset.weight"] = torch.zeros(527, 32)
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    torch.save(panns_training_checkpoint(weights) if layout == "training checkpoint" else weights,
               path)

    encoder = load_panns_checkpoint(tiny("cnn10", seed=2), path)

    assert not hasattr(encoder, "fc_audioset")
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_mismatched_state_dicts_list_every_kind_of_problem():
    encoder = tiny("cnn14")
    weights = randomized_state_dict(encoder, seed=0)
    del weights["conv_block2.bn1.running_mean"]
    weights["conv_block7.conv1.weight"] = torch.zeros(1)
    weights["fc1.weight"] = torch.zeros(3, 3)

    with pytest.raises(ClapcurateError) as raised:
        load_panns_checkpoint(encoder, weights)

    message = str(raised.value)
    assert "missing keys: conv_block2.bn1.running_mean" in message
    assert "unexpected keys: conv_block7.conv1.weight" in message
    assert "fc1.weight (3, 3) vs (128, 128)" in message


def test_a_wider_checkpoint_is_refused_with_a_bounded_list():
    with pytest.raises(ClapcurateError, match=r"shape mismatches.*\.\.\. \(\d+ more\)"):
        load_panns_checkpoint(tiny("cnn14"), tiny("cnn14", base_channels=8).state_dict())


def test_a_checkpoint_of_another_sample_rate_is_refused():
    weights = build_audio_encoder("cnn6", base_channels=4, **dict(TINY, sample_rate=22050))

    with pytest.raises(ClapcurateError, match="logmel_extractor.melW.*sample_rate=16000"):
        load_panns_checkpoint(tiny("cnn6"), weights.state_dict())


class ArbitraryObject:
    pass


@pytest.mark.parametrize(
    "write, reason",
    [
        (lambda path: None, "no such checkpoint file"),
        (lambda path: path.write_text("not a checkpoint"), "not a readable PyTorch checkpoint"),
        (lambda path: torch.save({"model": ArbitraryObject()}, path), "not a readable"),
        (lambda path: torch.save([1, 2, 3], path), "expected a state dict"),
    ],
    ids=["missing", "text", "pickled-object", "list"],
)
def test_unusable_checkpoint_files_are_user_errors_naming_the_file(tmp_path, write, reason):
    path = tmp_path / "Cnn6.pth"
    write(path)

    with pytest.raises(ClapcurateError, match=reason) as raised:
        load_panns_checkpoint(tiny("cnn6"), path)

    assert str(path) in str(raised.value)
