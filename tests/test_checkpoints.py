import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

import clapcurate
from clapcurate.errors import ClapcurateError, ConfigError
from clapcurate.model.checkpoints import checkpoint_hash, import_msclap, load, save
from clapcurate.model.clap import CLAP, TextConfig
from clapcurate.model.text_encoders import default_text_encoder_path

CAPTIONS = ["a dog barks", "rain on a tin roof", " ".join(["a long caption"] * 60)]


def randomize_affine_normalization(model: torch.nn.Module) -> None:
    """Give every BatchNorm and LayerNorm non-trivial affine weights (scale and shift)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


# --- our format -----------------------------------------------------------------------------


def test_round_trip_without_the_original_text_encoder_folder(tiny_clap_config, build_tiny_clap, tiny_text_encoder_dir,
                                                            tmp_path, tiny_waveforms):
    text_dir = shutil.copytree(tiny_text_encoder_dir, tmp_path / "text_encoder_copy")
    config = dataclasses.replace(
        tiny_clap_config, text=TextConfig(name_or_path=str(text_dir), pooling="mean", max_length=40)
    )
    model = build_tiny_clap(config)
    randomize_affine_normalization(model)
    save(model, tmp_path / "ckpt")
    shutil.rmtree(text_dir)

    loaded = clapcurate.load(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config.audio == config.audio and loaded.config.d_proj == config.d_proj
    assert (loaded.config.text.pooling, loaded.config.text.max_length) == ("mean", 40)
    with torch.no_grad():
        assert torch.equal(loaded.encode_audio(tiny_waveforms), model.encode_audio(tiny_waveforms))
        assert torch.equal(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS))
    assert loaded.logit_scale.item() == model.logit_scale.item()


def test_checkpoint_hash_is_stable_and_tracks_weights(tiny_clap, tmp_path):
    save(tiny_clap, tmp_path / "a")
    first = checkpoint_hash(tmp_path / "a")
    assert len(first) == 64
    assert checkpoint_hash(tmp_path / "a") == first
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    assert checkpoint_hash(tmp_path / "copy") == first
    save(tiny_clap, tmp_path / "again")
    assert checkpoint_hash(tmp_path / "again") == first
    with torch.no_grad():
        tiny_clap.logit_scale.add_(0.5)
    save(tiny_clap, tmp_path / "changed")
    assert checkpoint_hash(tmp_path / "changed") != first


def test_load_reports_broken_folders(tiny_clap, tmp_path):
    with pytest.raises(ClapcurateError, match="missing model.safetensors"):
        load(tmp_path)
    save(tiny_clap, tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({**config, "d_proj": 16}))
    with pytest.raises(ClapcurateError, match=r"shape mismatches \(checkpoint vs model\): audio_projection.layer_norm.bias"):
        load(tmp_path / "ckpt")

    config_path.write_text(json.dumps({**config, "width": 3}))
    with pytest.raises(ConfigError, match="config.json: unknown config key width"):
        load(tmp_path / "ckpt")

    config_path.write_text("{not json")
    with pytest.raises(ClapcurateError, match="config.json: not valid JSON"):
        load(tmp_path / "ckpt")


# --- MS CLAP 2022 import ------------------------------------------------------------------------


def msclap_state_dict(model: CLAP) -> dict[str, torch.Tensor]:
    """`model`'s weights in MS CLAP 2022's key layout, with the keys MS CLAP has and we do not use."""
    prefixes = {
        "audio_encoder.": "audio_encoder.base.",
        "audio_projection.": "audio_encoder.projection.",
        "text_encoder.model.": "caption_encoder.base.",
        "text_projection.": "caption_encoder.projection.",
        "logit_scale": "logit_scale",
    }
    state = {}
    for key, tensor in model.state_dict().items():
        ours = next(p for p in prefixes if key.startswith(p))
        state[prefixes[ours] + key[len(ours):]] = tensor.clone()
    generator = torch.Generator().manual_seed(11)
    fc_width = state["audio_encoder.base.fc1.weight"].shape[0]
    hidden = model.text_encoder.out_dim
    state["audio_encoder.base.fc_audioset.weight"] = torch.randn(527, fc_width, generator=generator)
    state["audio_encoder.base.fc_audioset.bias"] = torch.randn(527, generator=generator)
    state["caption_encoder.base.pooler.dense.weight"] = torch.randn(hidden, hidden, generator=generator)
    state["caption_encoder.base.pooler.dense.bias"] = torch.randn(hidden, generator=generator)
    state["caption_encoder.base.embeddings.position_ids"] = torch.arange(128)[None]
    return state


# The keys of MS CLAP 2022's `CLAP_weights_2022.pth` outside the BERT, written out from msclap's
# model code (CLAP = audio_encoder(base = PANNs Cnn14, projection) + caption_encoder(base = BERT,
# projection) + logit_scale; Projection = linear1, linear2 (no biases), layer_norm) and PANNs'
# Cnn14 (`pytorch/models.py`): the fixture below must produce exactly these names.
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
PANNS_CNN14_KEYS = [
    "spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW", *(f"bn0.{p}" for p in _BN),
    *(f"conv_block{i}.{part}" for i in range(1, 7)
      for part in ("conv1.weight", "conv2.weight", *(f"bn1.{p}" for p in _BN), *(f"bn2.{p}" for p in _BN))),
    "fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias",
]
_PROJECTION = ("linear1.weight", "linear2.weight", "layer_norm.weight", "layer_norm.bias")
MSCLAP_2022_NON_TEXT_KEYS = {
    "logit_scale",
    *(f"audio_encoder.base.{key}" for key in PANNS_CNN14_KEYS),
    *(f"audio_encoder.projection.{key}" for key in _PROJECTION),
    *(f"caption_encoder.projection.{key}" for key in _PROJECTION),
}


def test_msclap_fixture_has_the_published_key_names(tiny_clap, tiny_text_encoder_dir):
    state = msclap_state_dict(tiny_clap)
    text_keys = {key for key in state if key.startswith("caption_encoder.base.")}
    assert set(state) - text_keys == MSCLAP_2022_NON_TEXT_KEYS
    bert = transformers.BertModel(transformers.BertConfig.from_pretrained(tiny_text_encoder_dir))
    assert text_keys == {f"caption_encoder.base.{key}" for key in bert.state_dict()} | {
        "caption_encoder.base.embeddings.position_ids"}


def test_panns_key_names_match_the_real_cnn14_listing():
    listing = Path(__file__).resolve().parents[2] / "shared" / "real-metadata" / "panns" / "cnn14_keys.txt"
    if not listing.is_file():
        pytest.skip("real PANNs metadata not available")
    keys = [line.split("\t")[0] for line in listing.read_text().splitlines() if line and not line.startswith("#")]
    assert keys == PANNS_CNN14_KEYS


def reference_projection(x, state, prefix):
    """MS CLAP's Projection in eval mode: LayerNorm(h + linear2(gelu(h))), h = linear1(x)."""
    hidden = x @ state[prefix + "linear1.weight"].T
    summed = hidden + F.gelu(hidden) @ state[prefix + "linear2.weight"].T
    return F.layer_norm(summed, summed.shape[-1:], state[prefix + "layer_norm.weight"], state[prefix + "layer_norm.bias"])


def reference_batch_norm(x, state, prefix):
    return F.batch_norm(x, state[prefix + "running_mean"], state[prefix + "running_var"],
                        state[prefix + "weight"], state[prefix + "bias"], training=False, eps=1e-5)


def reference_cnn14_embedding(waveforms, state, hop_size):
    """PANNs Cnn14's `embedding` output in eval mode, computed from the MS CLAP weights alone."""
    base = "audio_encoder.base."
    conv_real = state[base + "spectrogram_extractor.stft.conv_real.weight"]  # [bins, 1, n_fft]
    conv_imag = state[base + "spectrogram_extractor.stft.conv_imag.weight"]
    n_fft = conv_real.shape[-1]
    padded = F.pad(waveforms[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")  # [B, 1, T + n_fft]
    power = F.conv1d(padded, conv_real, stride=hop_size) ** 2 + F.conv1d(padded, conv_imag, stride=hop_size) ** 2
    mel = power.transpose(1, 2)[:, None] @ state[base + "logmel_extractor.melW"]  # [B, 1, frames, mels]
    x = 10.0 * torch.log10(mel.clamp(min=1e-10))
    x = reference_batch_norm(x.transpose(1, 3), state, base + "bn0.").transpose(1, 3)
    for block in range(1, 7):
        prefix = f"{base}conv_block{block}."
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            x = F.conv2d(x, state[prefix + conv + ".weight"], padding=1)
            x = F.relu(reference_batch_norm(x, state, prefix + bn + "."))
        x = F.avg_pool2d(x, kernel_size=(2, 2) if block < 6 else (1, 1))
    x = x.mean(dim=3)  # [B, C, frames]
    x = x.max(dim=2).values + x.mean(dim=2)  # [B, C]
    return F.relu(x @ state[base + "fc1.weight"].T + state[base + "fc1.bias"])


def reference_text_cls(captions, state, text_encoder_dir):
    """BERT's CLS hidden state with MS CLAP's tokenization (padded to 100), via transformers directly."""
    bert = transformers.BertModel(transformers.BertConfig.from_pretrained(text_encoder_dir)).eval()
    bert_state = {key[len("caption_encoder.base."):]: value for key, value in state.items()
                  if key.startswith("caption_encoder.base.") and "position_ids" not in key}
    bert.load_state_dict(bert_state, strict=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(text_encoder_dir)
    tokens = tokenizer(captions, padding="max_length", max_length=100, truncation=True, return_tensors="pt")
    return bert(**tokens).last_hidden_state[:, 0]


@pytest.fixture
def msclap_checkpoint(tiny_clap, tmp_path):
    """A tiny random model written as MS CLAP 2022 writes its checkpoints: torch.save({"model": sd})."""
    randomize_affine_normalization(tiny_clap)
    state = msclap_state_dict(tiny_clap)
    path = tmp_path / "CLAP_weights_tiny.pth"
    torch.save({"model": state}, path)
    return path, state


TINY_MSCLAP_AUDIO = dict(sample_rate=16000, hop_size=160, fmin=50, fmax=8000, clip_seconds=1.0)


def test_import_msclap_matches_reference_forward(msclap_checkpoint, tiny_text_encoder_dir, tiny_waveforms):
    path, state = msclap_checkpoint
    model = import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    assert not model.training
    assert (model.config.d_proj, model.config.audio.base_channels) == (32, 4)
    assert (model.config.audio.mel_bins, model.config.audio.window_size) == (32, 512)
    assert (model.config.text.pooling, model.config.text.max_length) == ("cls", 100)
    with torch.no_grad():
        audio_expected = F.normalize(reference_projection(
            reference_cnn14_embedding(tiny_waveforms, state, hop_size=160), state, "audio_encoder.projection."), dim=-1)
        text_expected = F.normalize(reference_projection(
            reference_text_cls(CAPTIONS, state, tiny_text_encoder_dir), state, "caption_encoder.projection."), dim=-1)
        torch.testing.assert_close(model.encode_audio(tiny_waveforms), audio_expected, atol=5e-4, rtol=1e-3)
        torch.testing.assert_close(model.encode_text(CAPTIONS), text_expected, atol=1e-5, rtol=1e-5)
    # the tolerances are far below the differences between clips and between captions
    # (the audio tolerance allows for the front-end computing the DFT by FFT, the reference by convolution)
    assert (audio_expected[0] - audio_expected[1:]).abs().amax(dim=-1).min() > 0.05
    assert (text_expected[0] - text_expected[1:]).abs().amax(dim=-1).min() > 0.05
    assert model.logit_scale.item() == state["logit_scale"].item()


def test_import_msclap_accepts_bare_state_dict_and_saves_in_our_format(msclap_checkpoint, tiny_text_encoder_dir, tmp_path, tiny_waveforms):
    path, state = msclap_checkpoint
    bare_path = tmp_path / "bare.pth"
    torch.save(state, bare_path)
    model = import_msclap(bare_path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    save(model, tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "ours").encode_audio(tiny_waveforms), model.encode_audio(tiny_waveforms))


def test_import_msclap_rejects_foreign_keys(msclap_checkpoint, tiny_text_encoder_dir, tmp_path):
    _, state = msclap_checkpoint
    path = tmp_path / "foreign.pth"
    torch.save({"model": {**state, "audio_encoder.head.weight": torch.zeros(2)}}, path)
    with pytest.raises(ClapcurateError, match="unexpected key 'audio_encoder.head.weight'"):
        import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)
    incomplete = {k: v for k, v in state.items() if not k.startswith("caption_encoder.base.encoder.layer.1.")}
    torch.save({"model": incomplete}, path)
    with pytest.raises(ClapcurateError, match="missing keys: text_encoder.model.encoder.layer.1"):
        import_msclap(path, text_encoder=str(tiny_text_encoder_dir), **TINY_MSCLAP_AUDIO)


def test_import_msclap_reports_wrong_text_encoder_and_settings(msclap_checkpoint, tmp_path):
    path, _ = msclap_checkpoint
    wide_dir = tmp_path / "wide_bert"
    wide = transformers.BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64)
    wide.save_pretrained(wide_dir)
    transformers.AutoTokenizer.from_pretrained(default_text_encoder_path()).save_pretrained(wide_dir)
    with pytest.raises(ClapcurateError, match="hidden size 32"):
        import_msclap(path, text_encoder=str(wide_dir), **TINY_MSCLAP_AUDIO)
    with pytest.raises(ClapcurateError, match="mel_bins are read from the checkpoint"):
        import_msclap(path, text_encoder=str(wide_dir), mel_bins=64)
    with pytest.raises(ClapcurateError, match="nothing.pth: no such checkpoint file"):
        import_msclap(tmp_path / "nothing.pth")
