import math

import pytest
import torch
import torch.nn.functional as F

from clapcurate.config import from_dict
from clapcurate.errors import ConfigError
from clapcurate.model.clap import CLAPConfig, Projection

CAPTIONS = ["a dog barks", "rain on a tin roof", "a siren passes by"]


def test_projection_keys_and_formula():
    torch.manual_seed(0)
    projection = Projection(6, 4, dropout=0.5).eval()
    with torch.no_grad():
        projection.layer_norm.weight.uniform_(0.5, 1.5)
        projection.layer_norm.bias.uniform_(-0.5, 0.5)
    assert sorted(projection.state_dict()) == [
        "layer_norm.bias", "layer_norm.weight", "linear1.weight", "linear2.weight"
    ]
    x = torch.randn(5, 6)
    hidden = x @ projection.linear1.weight.T
    expected = F.layer_norm(
        hidden + F.gelu(hidden) @ projection.linear2.weight.T,
        (4,), projection.layer_norm.weight, projection.layer_norm.bias,
    )
    torch.testing.assert_close(projection(x), expected)


def test_projection_dropout_acts_only_in_training():
    projection = Projection(8, 8, dropout=0.5)
    x = torch.randn(64, 8)
    assert torch.equal(projection.eval()(x), projection(x))
    assert not torch.equal(projection.train()(x), projection(x))


def test_submodules_and_logit_scale(tiny_clap):
    top_level = {name.split(".")[0] for name in tiny_clap.state_dict()}
    assert top_level == {"audio_encoder", "text_encoder", "audio_projection", "text_projection", "logit_scale"}
    assert tiny_clap.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert tiny_clap.logit_scale_exp().item() == pytest.approx(1 / 0.07)
    assert tiny_clap.clip_samples == 16000
    assert tiny_clap.sample_rate == 16000
    assert tiny_clap.device == torch.device("cpu")


def test_logit_scale_is_clamped_at_max(tiny_clap):
    with torch.no_grad():
        tiny_clap.logit_scale.fill_(math.log(1000.0))
    assert tiny_clap.logit_scale_exp().item() == pytest.approx(100.0)


def test_audio_embeddings_are_normalised_projections_of_the_encoder(tiny_clap, tiny_waveforms):
    with torch.no_grad():
        embeddings = tiny_clap.encode_audio(tiny_waveforms)
        raw = tiny_clap.encode_audio(tiny_waveforms, normalize=False)
        via_logmel = tiny_clap.encode_logmel(tiny_clap.audio_encoder.logmel(tiny_waveforms))
        expected = tiny_clap.audio_projection(tiny_clap.audio_encoder(tiny_waveforms))
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(raw, expected)
    torch.testing.assert_close(embeddings, F.normalize(expected, dim=-1))
    torch.testing.assert_close(via_logmel, embeddings)


def test_text_embeddings_are_normalised_projections_of_the_encoder(tiny_clap):
    with torch.no_grad():
        embeddings = tiny_clap.encode_text(CAPTIONS)
        hidden = tiny_clap.text_encoder.encode(CAPTIONS)  # [B, 32]
        from_cached = tiny_clap.encode_text_features(hidden)
        raw = tiny_clap.encode_text_features(hidden, normalize=False)
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings, from_cached)
    torch.testing.assert_close(raw, tiny_clap.text_projection(hidden))
    torch.testing.assert_close(embeddings, F.normalize(raw, dim=-1))


def test_forward_trains_both_towers_and_the_temperature(tiny_clap, tiny_waveforms):
    tiny_clap.train()
    audio_emb, text_emb, logit_scale = tiny_clap(tiny_waveforms, CAPTIONS)
    logits = logit_scale * audio_emb @ text_emb.T  # [B, B]
    F.cross_entropy(logits, torch.arange(3)).backward()
    assert tiny_clap.logit_scale.grad is not None and tiny_clap.logit_scale.grad != 0
    for tower in ("audio_encoder", "text_encoder", "audio_projection", "text_projection"):
        grads = [p.grad for p in getattr(tiny_clap, tower).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), tower


def test_bf16_autocast_stays_close_to_float32(tiny_clap, tiny_waveforms):
    with torch.no_grad():
        audio32, text32 = tiny_clap.encode_audio(tiny_waveforms), tiny_clap.encode_text(CAPTIONS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            audio16, text16 = tiny_clap.encode_audio(tiny_waveforms), tiny_clap.encode_text(CAPTIONS)
    for low, full in ((audio16, audio32), (text16, text32)):
        assert torch.isfinite(low).all()
        assert F.cosine_similarity(low.float(), full, dim=-1).min() > 0.98


def test_config_from_dict_checks_encoder_name():
    config = from_dict(CLAPConfig, {"audio": {"encoder": "cnn10"}, "d_proj": 512})
    assert config.audio.encoder == "cnn10" and config.audio.sample_rate == 44100 and config.text.max_length == 100
    with pytest.raises(ConfigError, match="audio.encoder"):
        from_dict(CLAPConfig, {"audio": {"encoder": "resnet"}})
