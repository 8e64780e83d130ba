"""Conformance of the transformers `ClapModel` import with transformers' own code.

A `ClapModel` with random weights at the published widths (HTS-AT tiny and base, RoBERTa's 768)
is saved as transformers 5 writes it and as the hub's folders are laid out (a flat
`preprocessor_config.json`, `pytorch_model.bin`, `vocab.json` + `merges.txt`); clapcurate's
embeddings of the same waveforms and captions match `get_audio_features` / `get_text_features`
after `ClapProcessor` within 1e-5 (transformers computes its spectrogram in float64).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from clapcurate.audio import inference_windows
from clapcurate.errors import ClapcurateError
from clapcurate.model.checkpoints import load, load_model, model_hash, save

from test_teachers import CAPTIONS, _byte_level_bpe

TOLERANCE = 1e-5
SAMPLE_RATE = 48000
# the processor settings of laion/clap-htsat-unfused
FEATURES = dict(feature_size=64, sampling_rate=SAMPLE_RATE, hop_length=480, max_length_s=10, fft_window_size=1024,
                frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad")
WIDTHS = {"tiny": dict(patch_embeds_hidden_size=96, hidden_size=768),
          "base": dict(patch_embeds_hidden_size=128, hidden_size=1024)}


def roberta_tokenizer():
    """RoBERTa's tokenizer class over a byte-level BPE trained on a few sentences."""
    bpe = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return bpe, transformers.RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def _randomize(model: transformers.ClapModel, seed: int) -> None:
    """Variance-keeping weights (transformers' initialisation is so small that every input gives
    nearly the same embedding), non-trivial norms and biases, a batch norm at log-mel scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif parameter.ndim >= 2 and "embeddings" not in name:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
        batch_norm = model.audio_model.audio_encoder.batch_norm
        batch_norm.running_mean.copy_(-40 + 5 * torch.randn(batch_norm.running_mean.shape, generator=generator))
        batch_norm.running_var.copy_(400 * (torch.rand(batch_norm.running_var.shape, generator=generator) + 0.5))
        model.logit_scale_a.fill_(3.2)
        model.logit_scale_t.fill_(2.1)


def hf_clap(width: str, depths: list[int], text_layers: int, seed: int = 0, **audio) -> transformers.ClapModel:
    """A random `ClapModel` at a published width (HTS-AT `width`, RoBERTa's hidden 768)."""
    _, tokenizer = roberta_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=text_layers, num_attention_heads=12,
                intermediate_size=256)
    audio = dict(depths=depths, num_attention_heads=[4, 8, 16, 32], enable_fusion=False, **WIDTHS[width], **audio)
    torch.manual_seed(seed)
    model = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=512))
    _randomize(model.eval(), seed)
    return model


def save_hf_folder(model: transformers.ClapModel, out, layout: str = "transformers5", **features):
    """`model` and its processor as transformers 5 saves them, or in the hub's older layout."""
    bpe, tokenizer = roberta_tokenizer()
    extractor = transformers.ClapFeatureExtractor(**{**FEATURES, **features})
    if layout == "transformers5":
        model.save_pretrained(out)
        transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    (out / "preprocessor_config.json").write_text(json.dumps(
        {**extractor.to_dict(), "processor_class": "ClapProcessor"}, indent=2))
    bpe.save_model(str(out))  # vocab.json, merges.txt
    specials = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                    pad_token="<pad>", mask_token="<mask>")
    (out / "special_tokens_map.json").write_text(json.dumps(specials))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {**specials, "tokenizer_class": "RobertaTokenizer", "model_max_length": 512, "processor_class": "ClapProcessor"}))
    return out


def waveforms(seconds=(10.0, 3.3, 0.7), seed: int = 0) -> list[np.ndarray]:
    """A full 10 s clip, a shorter and a far shorter one (the padding rules), with a noise floor."""
    rng = np.random.default_rng(seed)
    waves = []
    for index, length in enumerate(seconds):
        time = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        tone = 0.5 * np.sin(2 * np.pi * (300 + 700 * index) * time)
        waves.append((tone + 0.05 * rng.standard_normal(time.shape)).astype(np.float32))
    return waves


def hf_embeddings(model: transformers.ClapModel, folder, waves, captions):
    """transformers' own embeddings: `ClapProcessor` from the folder, then `get_*_features`."""
    processor = transformers.ClapProcessor.from_pretrained(folder)
    with torch.no_grad():
        audio = model.get_audio_features(**processor(audio=waves, sampling_rate=SAMPLE_RATE, return_tensors="pt"))
        text = model.get_text_features(**processor(text=captions, padding=True, return_tensors="pt"))
    return audio.pooler_output, text.pooler_output


def our_embeddings(model, waves, captions):
    windows = np.concatenate([inference_windows(wave, model.clip_samples, model.config.audio.short_clip_fill)
                              for wave in waves])
    with torch.no_grad():
        return model.encode_audio(torch.from_numpy(windows)), model.encode_text(captions)


def assert_close(ours: torch.Tensor, reference: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() < tolerance, (ours - reference).abs().amax(dim=-1)
    # the agreement is meaningful: different inputs give different embeddings
    assert (reference[0] - reference[1:]).abs().amax(dim=-1).min() > 100 * tolerance


def test_full_depth_htsat_tiny_and_roberta_match_transformers(tmp_path):
    reference = hf_clap("tiny", [2, 2, 6, 2], text_layers=12)
    folder = save_hf_folder(reference, tmp_path / "clap")
    model = load_model(folder)
    assert (model.config.audio.htsat.depths, model.config.audio.htsat.embed_dim) == ([2, 2, 6, 2], 96)
    waves = waveforms()
    audio, text = our_embeddings(model, waves, CAPTIONS)
    audio_reference, text_reference = hf_embeddings(reference, folder, waves, CAPTIONS)
    assert_close(audio, audio_reference)
    assert_close(text, text_reference)
    assert model.logit_scale.item() == pytest.approx(3.2) and model.text_logit_scale.item() == pytest.approx(2.1)


@pytest.mark.parametrize("width, layout", [("tiny", "hub"), ("base", "transformers5")])
def test_shallow_published_widths_match_transformers_in_either_layout(width, layout, tmp_path):
    reference = hf_clap(width, [1, 1, 1, 1], text_layers=1, seed=1)
    folder = save_hf_folder(reference, tmp_path / "clap", layout=layout, padding="repeat" if width == "base" else "repeatpad")
    model = load_model(folder)
    assert model.audio_encoder.out_dim == WIDTHS[width]["hidden_size"]
    waves = waveforms(seed=2)
    audio, text = our_embeddings(model, waves, CAPTIONS)
    audio_reference, text_reference = hf_embeddings(reference, folder, waves, CAPTIONS)
    assert_close(audio, audio_reference)
    assert_close(text, text_reference)


@pytest.fixture(scope="module")
def shallow_hub_folder(tmp_path_factory):
    """A shallow HTS-AT tiny ClapModel in the hub's layout (tests copy it before changing it)."""
    return save_hf_folder(hf_clap("tiny", [1, 1, 1, 1], text_layers=1, seed=3),
                          tmp_path_factory.mktemp("hub") / "clap", layout="hub")


def test_an_imported_transformers_clap_saves_as_a_checkpoint_and_is_identified_by_its_files(shallow_hub_folder,
                                                                                           tmp_path):
    folder = Path(shutil.copytree(shallow_hub_folder, tmp_path / "clap"))
    model = load_model(folder)
    first = model_hash(folder)
    save(model, tmp_path / "ours")
    loaded = load(tmp_path / "ours")
    waves = waveforms(seconds=(1.0,))
    assert all(torch.equal(a, b) for a, b in zip(our_embeddings(model, waves, CAPTIONS),
                                                   our_embeddings(loaded, waves, CAPTIONS)))
    config = json.loads((folder / "config.json").read_text())
    config["logit_scale_init_value"] = 20.0
    (folder / "config.json").write_text(json.dumps(config))
    assert model_hash(folder) != first


@pytest.mark.parametrize("change, message", [
    (lambda config, features: config["audio_config"].update(enable_fusion=True), "fused CLAP .*fusion is not supported"),
    (lambda config, features: features.update(truncation="fusion"), "truncation 'fusion' on an unfused model"),
    (lambda config, features: features.update(padding="pad"), "padding 'pad' is not supported"),
    (lambda config, features: config["audio_config"].update(qkv_bias=False), "qkv_bias"),
])
def test_what_has_no_counterpart_is_refused_in_one_line(change, message, shallow_hub_folder, tmp_path):
    folder = Path(shutil.copytree(shallow_hub_folder, tmp_path / "clap"))
    config = json.loads((folder / "config.json").read_text())
    features = json.loads((folder / "preprocessor_config.json").read_text())
    change(config, features)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").write_text(json.dumps(features))
    with pytest.raises(ClapcurateError, match=message) as error:
        load_model(folder)
    assert "\n" not in str(error.value)
