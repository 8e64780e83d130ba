"""CLAP models as Hugging Face transformers holds them: a `ClapModel` folder (`config.json` of
model_type "clap", `model.safetensors` or `pytorch_model.bin`, the `ClapProcessor` files), as
`laion/clap-htsat-unfused`, `laion/larger_clap_general` and their fine-tunes are published.

transformers' `ClapModel` is LAION-CLAP rewritten: the same HTS-AT (tiny or base) and RoBERTa
towers, MLP projections (linear, ReLU, linear) and two logit scales. `import_transformers_clap`
maps its weights onto our modules (`HTSAT`, the text encoder, `MLPProjection`) and reproduces
`ClapFeatureExtractor`'s preprocessing from the folder's processor settings: its sample rate,
hop, FFT window, mel bins and frequency range; padding "repeatpad" (short clips repeated a whole
number of times, then zeros) or "repeat" (looped and cut); no 16-bit round trip (unlike the
LAION-CLAP code); the slaney filterbank of truncation "rand_trunc". Clips longer than
`max_length_s` are embedded as the mean of deterministic windows (`inference_windows`) where
transformers crops one at random. Captions are padded and truncated to 77 tokens (LAION-CLAP's
context), the embedding is RoBERTa's pooler output projected.

Refused, each with one line saying why: fused models (`enable_fusion`: their long-clip fusion
branch has no counterpart here), truncation "fusion" on an unfused model (its 4-channel input
does not fit the model: transformers itself fails on it), padding "pad", a `top_db` clamp, and
architecture settings our HTS-AT does not have (no qkv bias, no patch LayerNorm, other
activations).

`export_transformers_clap` writes one of our models back as such a folder, when it is
representable (an HTS-AT audio tower, a RoBERTa text tower with pooler pooling, MLP
projections: `clapcurate.export.refusal`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from ..errors import ClapcurateError
from .clap import CLAP, AudioConfig, CLAPConfig, TextConfig
from .htsat import HTSATConfig
from .text_encoders import ROBERTA_KEYS, is_transformers_clap, saveable_tokenizer
from .weights import load_state_strict, read_torch_state_dict

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # flat (hub) or transformers 5's
TEXT_MAX_LENGTH = 77  # LAION-CLAP's caption context
PADDINGS = {"repeatpad": "repeat_then_silence", "repeat": "loop"}  # ClapFeatureExtractor's -> our short_clip_fill
# HF buffers that are recomputed, not weights: ignored on import, left at their defaults on export
_HF_BUFFERS = re.compile(r".*(relative_position_index|embeddings\.position_ids|embeddings\.token_type_ids)$")
# ours -> transformers', for the names inside an HTS-AT Swin block
_BLOCK_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}
_QKV = ("query", "key", "value")
# settings of a tokenizer call that transformers keeps among a tokenizer's saved settings
def hf_names(ours: str) -> list[str]:
    """The transformers `ClapModel` state-dict names holding our weight `ours` ([] for our
    front-end's fixed STFT and mel matrices, which transformers computes in its feature
    extractor; three names for a fused query-key-value weight, concatenated in that order)."""
    if ours == "logit_scale":
        return ["logit_scale_a"]
    if ours == "text_logit_scale":
        return ["logit_scale_t"]
    if ours.startswith("text_encoder.model."):
        return ["text_model." + ours.removeprefix("text_encoder.model.")]
    if match := re.fullmatch(r"(audio|text)_projection\.([02])\.(weight|bias)", ours):
        side, index, kind = match.groups()
        return [f"{side}_projection.linear{1 if index == '0' else 2}.{kind}"]
    name = ours.removeprefix("audio_encoder.")
    if name.startswith(("spectrogram_extractor.", "logmel_extractor.")):
        return []
    prefix = "audio_model.audio_encoder."
    if name.startswith("bn0."):
        return [prefix + "batch_norm." + name.removeprefix("bn0.")]
    if match := re.fullmatch(r"(layers\.\d+\.blocks\.\d+)\.(.+)\.(weight|bias|relative_position_bias_table)", name):
        block, inner, kind = match.groups()
        if inner == "attn.qkv":
            return [f"{prefix}{block}.attention.self.{part}.{kind}" for part in _QKV]
        if kind == "relative_position_bias_table":
            return [f"{prefix}{block}.{_BLOCK_NAMES['attn.' + kind]}"]
        return [f"{prefix}{block}.{_BLOCK_NAMES[inner]}.{kind}"]
    return [prefix + name]  # patch_embed, downsample, norm: the same names


def _refuse(path: Path, reason: str):
    raise ClapcurateError(f"{path}: {reason}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClapcurateError(f"{path}: cannot read it as JSON: {exc}") from exc


def processor_settings(directory: Path) -> dict:
    """The `ClapFeatureExtractor` settings of a transformers CLAP folder: a flat
    `preprocessor_config.json` (the hub's layout) or the `feature_extractor` entry of
    transformers 5's `processor_config.json`."""
    for name in PROCESSOR_FILES:
        path = directory / name
        if path.is_file():
            data = _read_json(path)
            return data.get("feature_extractor", data)
    raise ClapcurateError(f"{directory}: no {' or '.join(PROCESSOR_FILES)} (the ClapProcessor's settings): "
                          "save the processor beside the model (processor.save_pretrained)")


def _state(directory: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                try:
                    return load_file(str(path))
                except Exception as exc:  # safetensors raises its own error types for corrupt files
                    raise ClapcurateError(f"{path}: cannot read weights: {exc}") from exc
            return dict(read_torch_state_dict(path))
    raise ClapcurateError(f"{directory}: no {' or '.join(WEIGHT_FILES)} (sharded weights are not supported)")


def _audio_config(directory: Path, audio: dict, features: dict) -> AudioConfig:
    """Our `AudioConfig` for transformers' audio config and feature-extractor settings, or a
    one-line refusal of what has no counterpart."""
    if audio.get("enable_fusion"):
        _refuse(directory, "a fused CLAP (enable_fusion); fusion is not supported (its long-clip fusion branch has no "
                           "counterpart here): use an unfused model such as laion/clap-htsat-unfused")
    for key, wanted in (("qkv_bias", True), ("enable_patch_layer_norm", True), ("flatten_patch_embeds", True),
                        ("hidden_act", "gelu"), ("projection_hidden_act", "relu"), ("patch_embed_input_channels", 1)):
        if audio.get(key, wanted) != wanted:
            _refuse(directory, f"audio_config.{key} = {audio[key]!r}: our HTS-AT has only {key} = {wanted!r}")
    truncation = features.get("truncation", "fusion")
    if truncation != "rand_trunc":
        _refuse(directory, f"feature extractor truncation {truncation!r} on an unfused model (its 4-channel input does "
                           "not fit the model); set \"truncation\": \"rand_trunc\" in the processor settings")
    padding = features.get("padding", "repeatpad")
    if padding not in PADDINGS:
        _refuse(directory, f"feature extractor padding {padding!r} is not supported (choose {' or '.join(PADDINGS)})")
    if features.get("top_db") is not None:
        _refuse(directory, f"feature extractor top_db {features['top_db']}: a clamped dB range is not supported")
    mel_bins = int(features.get("feature_size", 64))
    if mel_bins != audio.get("num_mel_bins", 64):
        _refuse(directory, f"the feature extractor gives {mel_bins} mel bins, the model takes {audio['num_mel_bins']}")
    patch_stride = audio.get("patch_stride", 4)
    strides = set(patch_stride) if isinstance(patch_stride, (list, tuple)) else {patch_stride}
    patch_size = audio.get("patch_size", 4)
    if len(strides) != 1 or isinstance(patch_size, (list, tuple)):
        _refuse(directory, "non-square patches are not supported")
    htsat = HTSATConfig(embed_dim=int(audio.get("patch_embeds_hidden_size", 96)), depths=list(audio.get("depths")),
                        num_heads=list(audio.get("num_attention_heads")), window_size=int(audio.get("window_size", 8)),
                        spec_size=int(audio.get("spec_size", 256)), patch_size=int(patch_size),
                        patch_stride=int(strides.pop()), mlp_ratio=float(audio.get("mlp_ratio", 4.0)),
                        drop_path=float(audio.get("drop_path_rate", 0.0)))
    settings = dict(encoder="htsat", sample_rate=int(features.get("sampling_rate", 48000)),
                    window_size=int(features.get("fft_window_size", 1024)), hop_size=int(features.get("hop_length", 480)),
                    mel_bins=mel_bins, fmin=features.get("frequency_min", 0), fmax=features.get("frequency_max", 14000),
                    clip_seconds=float(features.get("max_length_s", 10)), htsat=htsat,
                    short_clip_fill=PADDINGS[padding])
    for key in ("fmin", "fmax"):
        value = float(settings[key])
        if not value.is_integer():
            _refuse(directory, f"feature extractor frequency {value} Hz: only whole-hertz ranges are supported")
        settings[key] = int(value)
    try:
        return AudioConfig(**settings)
    except ValueError as exc:
        raise ClapcurateError(f"{directory}: the processor settings do not describe a model here: {exc}") from exc


def import_transformers_clap(directory: str | Path) -> CLAP:
    """A `CLAP` (eval mode) from a transformers `ClapModel` folder (see the module docstring)."""
    directory = Path(directory)
    if not is_transformers_clap(directory):
        _refuse(directory, "not a transformers CLAP folder (config.json model_type is not \"clap\")")
    config = _read_json(directory / CONFIG_FILE)
    audio = _audio_config(directory, config.get("audio_config") or {}, processor_settings(directory))
    text = config.get("text_config") or {}
    if text.get("projection_hidden_act", "relu") != "relu":
        _refuse(directory, f"text_config.projection_hidden_act {text['projection_hidden_act']!r}: only relu is supported")
    projection_dim = int(config.get("projection_dim", 512))
    ours = CLAPConfig(audio=audio, text=TextConfig(name_or_path=str(directory), pooling="pooler",
                                                   max_length=TEXT_MAX_LENGTH),
                      d_proj=projection_dim, projection="mlp", text_logit_scale=True)
    model = CLAP(ours, pretrained_text=False)
    theirs = _state(directory)
    weights, used = {}, set()
    for name, tensor in model.state_dict().items():
        names = hf_names(name)
        if not names:  # our front-end's fixed matrices, computed from the settings
            weights[name] = tensor
            continue
        missing = [key for key in names if key not in theirs]
        if missing:
            _refuse(directory, f"weights do not fit the model: missing {missing[0]}")
        weights[name] = torch.cat([theirs[key] for key in names]) if len(names) > 1 else theirs[names[0]]
        if name.endswith("logit_scale"):
            weights[name] = weights[name].reshape(())
        used.update(names)
    unexpected = sorted(key for key in set(theirs) - used if not _HF_BUFFERS.fullmatch(key))
    if unexpected:
        _refuse(directory, f"weights do not fit the model: unexpected {', '.join(unexpected[:5])}")
    load_state_strict(model, weights, f"{directory}: weights do not fit the model")
    return model.eval()


def _hf_config(model: CLAP):
    import transformers

    audio, htsat = model.config.audio, model.config.audio.htsat
    text = model.text_encoder.model.config
    text_keys = {key: getattr(text, key) for key in ROBERTA_KEYS}
    audio_config = dict(window_size=htsat.window_size, num_mel_bins=audio.mel_bins, spec_size=htsat.spec_size,
                        patch_size=htsat.patch_size, patch_stride=[htsat.patch_stride] * 2,
                        hidden_size=model.audio_encoder.out_dim, depths=list(htsat.depths),
                        num_attention_heads=list(htsat.num_heads), patch_embeds_hidden_size=htsat.embed_dim,
                        mlp_ratio=htsat.mlp_ratio, drop_path_rate=htsat.drop_path, enable_fusion=False,
                        num_hidden_layers=len(htsat.depths))
    return transformers.ClapConfig(text_config=text_keys, audio_config=audio_config, projection_dim=model.config.d_proj,
                                   logit_scale_init_value=math.exp(model.logit_scale.item()))


def feature_extractor(model: CLAP):
    """The `ClapFeatureExtractor` reproducing `model`'s preprocessing (16-bit round trip aside)."""
    import transformers

    audio = model.config.audio
    padding = {fill: name for name, fill in PADDINGS.items()}[audio.short_clip_fill]
    return transformers.ClapFeatureExtractor(
        feature_size=audio.mel_bins, sampling_rate=audio.sample_rate, hop_length=audio.hop_size,
        max_length_s=int(audio.clip_seconds), fft_window_size=audio.window_size, frequency_min=audio.fmin,
        frequency_max=audio.fmax, truncation="rand_trunc", padding=padding)


def export_transformers_clap(model: CLAP, directory: str | Path) -> Path:
    """Write `model` to `directory` as a transformers `ClapModel` folder with its `ClapProcessor`
    (`model.safetensors`, config.json, the processor and tokenizer files). The model must be
    representable (`clapcurate.export.refusal` says why not)."""
    import transformers

    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):
        clap = transformers.ClapModel(_hf_config(model))
    state = clap.state_dict()
    written = set()
    for name, tensor in model.state_dict().items():
        names = hf_names(name)
        pieces = tensor.detach().cpu().chunk(len(names)) if len(names) > 1 else [tensor.detach().cpu()]
        for key, piece in zip(names, pieces):
            state[key] = piece.reshape(state[key].shape).clone()
            written.add(key)
    left = sorted(key for key in set(state) - written if not _HF_BUFFERS.fullmatch(key))
    if left:
        raise ClapcurateError(f"internal: the transformers model has weights no part of ours maps to: {left[:5]}")
    clap.load_state_dict(state, strict=True)
    clap.save_pretrained(directory)
    tokenizer = saveable_tokenizer(model.text_encoder.tokenizer)
    transformers.ClapProcessor(feature_extractor=feature_extractor(model), tokenizer=tokenizer).save_pretrained(directory)
    return directory
