"""Import of published CLAP checkpoints: MS CLAP 2022 and 2023, LAION-CLAP.

Each importer reads the weights file, works out the architecture from the weights' names and
shapes, builds our `CLAP` with that family's preprocessing and loads every weight strictly
(unused keys are named and dropped; anything else unknown is an error).

- **MS CLAP 2023** (`CLAP_weights_2023.pth`: `torch.load(f)["model"]`): HTS-AT tiny under
  `audio_encoder.base.htsat.`, GPT-2 under `caption_encoder.base.`, MS CLAP projections, one
  `logit_scale`. Preprocessing as msclap: 44.1 kHz, 7 s clips, short clips looped and cut; the
  HTS-AT front-end's mel filterbank is designed for 32 kHz (50-14000 Hz), since msclap builds it
  from HTS-AT's own config rather than its 44.1 kHz settings; captions get " <|endoftext|>"
  appended, are padded with "!" to 77 tokens and pooled at their last real token.
- **LAION-CLAP** (`630k-audioset-best.pt`, `music_speech_audioset_epoch_15_esc_89.98.pt`, ...:
  `torch.load(f)["state_dict"]`, keys prefixed `module.`): HTS-AT (tiny or base) or a PANNs CNN
  under `audio_branch.`, RoBERTa under `text_branch.`, MLP projections (`audio_projection.{0,2}`,
  `text_projection.{0,2}`), `logit_scale_a` and `logit_scale_t`. Preprocessing as laion_clap:
  48 kHz, 10 s clips, the waveform quantised to 16 bits and back, short clips repeated a whole
  number of times and padded with zeros, RoBERTa's pooler output on captions padded (and
  truncated) to 77 tokens. The unused `audio_transform` / `text_transform` MLPs are dropped.
  Fusion checkpoints (`*-fusion-*.pt`) are refused with a clear error: their long-clip fusion
  branch has no counterpart here (long clips are embedded as the mean of 10 s windows).

Settings the weights do not reveal (sample rate, hop, frequency range, clip length) default to
the family's published ones and can be given as `AudioConfig` keywords; a mel filterbank or STFT
in the weights that disagrees with them is refused on load, naming the setting.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import torch

from ..config import from_dict
from ..errors import ClapcurateError, ConfigError
from .audio_encoders import IGNORED_CHECKPOINT_PREFIX
from .clap import CLAP
from .config import AudioConfig, CLAPConfig, HTSATConfig, TextConfig
from .weights import load_state_strict, read_torch_state_dict

MSCLAP_2023_AUDIO = dict(sample_rate=44100, mel_sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64,
                         fmin=50, fmax=14000, clip_seconds=7.0)
MSCLAP_2023_TEXT = dict(pooling="last", max_length=77, caption_suffix=" <|endoftext|>", pad_token="!")
LAION_CLAP_AUDIO = dict(sample_rate=48000, window_size=1024, hop_size=480, mel_bins=64, fmin=50, fmax=14000,
                        clip_seconds=10.0, int16_round_trip=True, short_clip_fill="repeat_then_silence")
LAION_CLAP_TEXT = dict(pooling="pooler", max_length=77)

# keys of the published checkpoints that our model does not use (matched after renaming)
_UNUSED_KEYS = [
    r"audio_encoder\.(tscam_conv|head|fc_audioset)\..*",  # AudioSet classifier heads
    r"audio_encoder\..*\.(attn_mask|relative_position_index)",  # constant buffers, recomputed
    r"text_encoder\.model\.embeddings\.position_ids",  # legacy transformers buffer
    r"text_encoder\.model\.h\.\d+\.attn\.(bias|masked_bias)",  # legacy GPT-2 causal-mask buffers
    r"(audio|text)_transform\..*",  # LAION-CLAP's MLP-loss heads, unused by its embeddings
]
_UNUSED = re.compile("|".join(f"(?:{pattern})" for pattern in _UNUSED_KEYS))
_FUSION_MARKERS = ("fusion_model.", "mel_conv2d.", "mel_conv1d.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict of a published checkpoint: under "model" (MS CLAP), "state_dict"
    (LAION-CLAP) or bare, without DDP's `module.` prefix; tensors only."""
    checkpoint = read_torch_state_dict(path)  # the dict under "model", or the whole dict
    if isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    state = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    if not state or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ClapcurateError(f"{path}: expected a state dict of tensors (or a dict with one under 'model' or "
                              "'state_dict')")
    return state


def checkpoint_family(state: Mapping[str, torch.Tensor]) -> str | None:
    """"msclap-2022", "msclap-2023", "laion-clap" or None, from the key names of `state`."""
    if any(key.startswith("audio_branch.") for key in state) and any(key.startswith("text_branch.") for key in state):
        return "laion-clap"
    if any(key.startswith("audio_encoder.base.htsat.") for key in state):
        return "msclap-2023"
    if any(key.startswith("audio_encoder.base.") for key in state):
        return "msclap-2022"
    return None


def _renamed(state: Mapping[str, torch.Tensor], prefixes: dict[str, str], path: Path) -> dict[str, torch.Tensor]:
    """Keys renamed by their prefix (`prefixes`: theirs -> ours), unused ones dropped."""
    renamed = {}
    for key, tensor in state.items():
        prefix = next((p for p in prefixes if key == p or key.startswith(p)), None)
        if prefix is None:
            raise ClapcurateError(f"{path}: unexpected key {key!r} for this checkpoint family")
        ours = prefixes[prefix] + key[len(prefix):]
        if not _UNUSED.fullmatch(ours):
            renamed[ours] = tensor.reshape(()) if tensor.numel() == 1 and "logit_scale" in ours else tensor
    return renamed


def _require(state: Mapping[str, torch.Tensor], key: str, path: Path, family: str) -> torch.Tensor:
    if key not in state:
        raise ClapcurateError(f"{path}: not a {family} checkpoint (no {key})")
    return state[key]


def _htsat_shape(state: Mapping[str, torch.Tensor], prefix: str, path: Path) -> HTSATConfig:
    """HTS-AT width, depths, heads, window and input size from the weights under `prefix`."""
    if any(marker in key for key in state for marker in _FUSION_MARKERS):
        raise ClapcurateError(
            f"{path}: a LAION-CLAP fusion checkpoint; fusion is not supported (its long-clip branch has no "
            "counterpart here): use a non-fusion checkpoint such as 630k-audioset-best.pt")
    patch = _require(state, prefix + "patch_embed.proj.weight", path, "HTS-AT")  # [C, 1, p, p]
    stages = sorted({int(m.group(1)) for key in state if (m := re.match(re.escape(prefix) + r"layers\.(\d+)\.", key))})
    depths, heads = [], []
    for stage in stages:
        blocks = {int(m.group(1)) for key in state
                  if (m := re.match(re.escape(prefix) + rf"layers\.{stage}\.blocks\.(\d+)\.", key))}
        depths.append(len(blocks))
        heads.append(int(state[f"{prefix}layers.{stage}.blocks.0.attn.relative_position_bias_table"].shape[1]))
    table_rows = state[prefix + "layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (math.isqrt(table_rows) + 1) // 2
    shape = HTSATConfig(embed_dim=int(patch.shape[0]), depths=depths, num_heads=heads, window_size=window,
                        patch_size=int(patch.shape[-1]), patch_stride=int(patch.shape[-1]))
    mask = state.get(prefix + "layers.0.blocks.1.attn_mask")  # [windows, w^2, w^2]: gives the token grid
    if mask is not None:
        shape.spec_size = math.isqrt(mask.shape[0]) * window * shape.patch_stride
    return shape


def _audio_config(family_defaults: dict, sizes: dict, audio_kw: dict, family: str) -> AudioConfig:
    given_sizes = sorted(set(audio_kw) & set(sizes))
    if given_sizes:
        raise ClapcurateError(f"{family} import: {', '.join(given_sizes)} are read from the checkpoint, not given")
    try:
        return from_dict(AudioConfig, {**family_defaults, **audio_kw, **sizes})
    except ConfigError as exc:
        raise ConfigError(f"{family} import audio settings: {exc}") from exc


def _frontend_sizes(state: Mapping[str, torch.Tensor], prefix: str, path: Path, family: str) -> dict:
    kernel = _require(state, prefix + "spectrogram_extractor.stft.conv_real.weight", path, family)
    filters = _require(state, prefix + "logmel_extractor.melW", path, family)
    return dict(window_size=int(kernel.shape[-1]), mel_bins=int(filters.shape[1]))


def _build_and_load(config: CLAPConfig, weights: dict[str, torch.Tensor], path: Path) -> CLAP:
    model = CLAP(config, pretrained_text=False)
    text_in = weights["text_projection.linear1.weight" if config.projection == "msclap" else "text_projection.0.weight"]
    if model.text_encoder.out_dim != text_in.shape[1]:
        raise ClapcurateError(
            f"{path}: the checkpoint's text encoder has hidden size {text_in.shape[1]}, but "
            f"{config.text.name_or_path!r} has {model.text_encoder.out_dim}: give the text encoder it was trained with")
    load_state_strict(model, weights, f"{path}: weights do not fit the model")
    return model.eval()


def import_msclap_2023(path: str | Path, text_encoder: str = "gpt2", **audio_kw) -> CLAP:
    """A `CLAP` (eval mode) from MS CLAP 2023 weights (`CLAP_weights_2023.pth`).

    `text_encoder` names GPT-2's architecture and tokenizer (a Hugging Face name or local folder);
    `audio_kw` overrides `MSCLAP_2023_AUDIO` (widths, depths, window and mel bins come from the weights).
    """
    path = Path(path)
    state = read_state_dict(path)
    family = "MS CLAP 2023"
    if checkpoint_family(state) != "msclap-2023":
        raise ClapcurateError(f"{path}: not an MS CLAP 2023 checkpoint (no audio_encoder.base.htsat.* weights)")
    prefix = "audio_encoder.base.htsat."
    sizes = {**_frontend_sizes(state, prefix, path, family), "encoder": "htsat", "htsat": _htsat_shape(state, prefix, path)}
    audio = _audio_config(MSCLAP_2023_AUDIO, sizes, audio_kw, family)
    weights = _renamed(state, {
        prefix: "audio_encoder.",
        "audio_encoder.projection.": "audio_projection.",
        "caption_encoder.base.": "text_encoder.model.",
        "caption_encoder.projection.": "text_projection.",
        "logit_scale": "logit_scale",
    }, path)
    d_proj = _require(weights, "text_projection.linear1.weight", path, family).shape[0]
    config = CLAPConfig(audio=audio, text=TextConfig(name_or_path=str(text_encoder), **MSCLAP_2023_TEXT),
                        d_proj=int(d_proj))
    return _build_and_load(config, weights, path)


def import_laion_clap(path: str | Path, text_encoder: str = "roberta-base", **audio_kw) -> CLAP:
    """A `CLAP` (eval mode) from a LAION-CLAP checkpoint (HTS-AT or PANNs audio tower, RoBERTa text).

    `text_encoder` names RoBERTa's architecture and tokenizer (a Hugging Face name or local
    folder); `audio_kw` overrides `LAION_CLAP_AUDIO` (e.g. `fmax=18000` for the fmax-18k models,
    `clip_seconds=20` for the 20 s ones).
    """
    path = Path(path)
    state = read_state_dict(path)
    family = "LAION-CLAP"
    if checkpoint_family(state) != "laion-clap":
        raise ClapcurateError(f"{path}: not a LAION-CLAP checkpoint (no audio_branch.* and text_branch.* weights)")
    prefix = "audio_branch."
    sizes = _frontend_sizes(state, prefix, path, family)
    if prefix + "patch_embed.proj.weight" in state or any(marker in key for key in state for marker in _FUSION_MARKERS):
        sizes.update(encoder="htsat", htsat=_htsat_shape(state, prefix, path))
    else:
        sizes.update(panns_encoder_sizes(state, prefix, path))
    audio = _audio_config(LAION_CLAP_AUDIO, sizes, audio_kw, family)
    _require(state, "text_branch.pooler.dense.weight", path, family)  # RoBERTa's pooler: the text embedding
    weights = _renamed(state, {
        prefix: "audio_encoder.",
        "audio_projection.": "audio_projection.",
        "text_branch.": "text_encoder.model.",
        "text_projection.": "text_projection.",
        "audio_transform.": "audio_transform.",
        "text_transform.": "text_transform.",
        "logit_scale_a": "logit_scale",
        "logit_scale_t": "text_logit_scale",
    }, path)
    d_proj = _require(weights, "text_projection.2.weight", path, family).shape[0]
    config = CLAPConfig(audio=audio, text=TextConfig(name_or_path=str(text_encoder), **LAION_CLAP_TEXT),
                        d_proj=int(d_proj), projection="mlp", text_logit_scale=True)
    return _build_and_load(config, weights, path)


# --- MS CLAP 2022 -----------------------------------------------------------------------------

# MS CLAP prefix -> our module prefix
_MSCLAP_PREFIXES = {
    "audio_encoder.base.": "audio_encoder.",
    "audio_encoder.projection.": "audio_projection.",
    "caption_encoder.base.": "text_encoder.model.",
    "caption_encoder.projection.": "text_projection.",
}
# keys of MS CLAP checkpoints that our model does not use
_MSCLAP_UNUSED_PREFIXES = (
    "audio_encoder.base." + IGNORED_CHECKPOINT_PREFIX,  # PANNs' AudioSet classifier head
    "caption_encoder.base.pooler.",  # BERT pooler: MS CLAP pools the CLS hidden state itself
)
_MSCLAP_UNUSED_KEYS = ("caption_encoder.base.embeddings.position_ids",)  # legacy buffer, gone in newer transformers
# audio sizes read from the weights; every other audio setting comes from the caller (MS CLAP's by default)
_AUDIO_SIZES_FROM_WEIGHTS = ("encoder", "window_size", "mel_bins", "base_channels")


def panns_encoder_sizes(state: dict[str, torch.Tensor], prefix: str, path: Path) -> dict:
    """Encoder kind, FFT window, mel bins and channel width of the PANNs CNN under `prefix` in `state`."""
    try:
        window_size = state[prefix + "spectrogram_extractor.stft.conv_real.weight"].shape[-1]
        mel_bins = state[prefix + "logmel_extractor.melW"].shape[1]
        base_channels = state[prefix + "conv_block1.conv1.weight"].shape[0]
    except KeyError as exc:
        raise ClapcurateError(f"{path}: no PANNs audio encoder in the checkpoint (no {exc.args[0]})") from exc
    n_blocks = len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix + "conv_block")})
    has_conv2 = prefix + "conv_block1.conv2.weight" in state
    encoders = {(6, True): "cnn14", (4, True): "cnn10", (4, False): "cnn6"}
    if (n_blocks, has_conv2) not in encoders:
        raise ClapcurateError(f"{path}: audio encoder with {n_blocks} conv blocks is not a PANNs CNN14/10/6")
    return dict(encoder=encoders[n_blocks, has_conv2], window_size=int(window_size), mel_bins=int(mel_bins),
                base_channels=int(base_channels))


def _rename_msclap_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """MS CLAP key names -> ours, dropping the keys our model does not use."""
    renamed = {}
    for key, tensor in state.items():
        if key in _MSCLAP_UNUSED_KEYS or key.startswith(_MSCLAP_UNUSED_PREFIXES):
            continue
        if key == "logit_scale":
            renamed[key] = tensor.reshape(())
            continue
        prefix = next((p for p in _MSCLAP_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise ClapcurateError(f"{path}: unexpected key {key!r} for an MS CLAP checkpoint")
        renamed[_MSCLAP_PREFIXES[prefix] + key[len(prefix):]] = tensor
    return renamed


def import_msclap(path: str | Path, text_encoder: str = "bert-base-uncased", **audio_kw) -> CLAP:
    """Build a `CLAP` from MS CLAP 2022 weights (e.g. `CLAP_weights_2022.pth`), in eval mode.

    The checkpoint holds weights only: the text encoder's architecture and tokenizer come from
    `text_encoder` (a Hugging Face name or local folder); d_proj, hidden and channel widths, mel
    bins and FFT size are read from the weights. `audio_kw` sets the remaining `AudioConfig`
    fields; the defaults are MS CLAP's preprocessing (44.1 kHz, hop 320, 50-14000 Hz, 5 s clips).
    Captions are tokenized as MS CLAP does (CLS pooling, padded to 100 tokens) but truncated
    beyond 100 tokens instead of failing.
    """
    path = Path(path)
    given_sizes = sorted(set(audio_kw) & set(_AUDIO_SIZES_FROM_WEIGHTS))
    if given_sizes:
        raise ClapcurateError(f"import_msclap: {', '.join(given_sizes)} are read from the checkpoint, not given")
    state = read_torch_state_dict(path)  # torch.load(path)["model"], or a bare state dict
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ClapcurateError(f"{path}: expected a state dict of tensors (or a dict with one under 'model')")
    audio_sizes = panns_encoder_sizes(state, "audio_encoder.base.", path)
    try:
        audio = from_dict(AudioConfig, {**audio_kw, **audio_sizes})
    except ConfigError as exc:
        raise ConfigError(f"import_msclap audio settings: {exc}") from exc
    weights = _rename_msclap_keys(state, path)
    text_projection = weights.get("text_projection.linear1.weight")
    if text_projection is None:
        raise ClapcurateError(f"{path}: not an MS CLAP checkpoint (no caption_encoder.projection.linear1.weight)")
    config = CLAPConfig(
        audio=audio,
        text=TextConfig(name_or_path=str(text_encoder), pooling="cls", max_length=100),
        d_proj=int(text_projection.shape[0]),
    )
    model = CLAP(config, pretrained_text=False)
    if model.text_encoder.out_dim != text_projection.shape[1]:
        raise ClapcurateError(
            f"{path}: the checkpoint's text encoder has hidden size {text_projection.shape[1]}, "
            f"but {text_encoder!r} has {model.text_encoder.out_dim}: give the text encoder it was trained with"
        )
    load_state_strict(model, weights, f"{path}: weights do not fit the model")
    return model.eval()


FAMILY_NAMES = {"msclap-2022": "MS CLAP 2022", "msclap-2023": "MS CLAP 2023", "laion-clap": "LAION-CLAP"}


def import_checkpoint(path: str | Path, text_encoder: str | None = None, families: tuple[str, ...] | None = None,
                      **audio_kw) -> CLAP:
    """A published CLAP checkpoint file of any supported family, recognised by its key names:
    MS CLAP 2022 (text encoder default `bert-base-uncased`), MS CLAP 2023 (`gpt2`) or LAION-CLAP
    (`roberta-base`); `text_encoder` names the text architecture and tokenizer (name or folder),
    `families` (keys of `FAMILY_NAMES`) restricts what is accepted, `audio_kw` sets `AudioConfig`
    fields the weights do not reveal (the family's published values by default)."""
    path = Path(path)
    family = checkpoint_family(read_state_dict(path))
    accepted = families or tuple(FAMILY_NAMES)
    if family not in accepted:
        expected = " or ".join(FAMILY_NAMES[name] for name in accepted)
        found = f"an {FAMILY_NAMES[family]} checkpoint" if family else "not a checkpoint of a supported family"
        raise ClapcurateError(f"{path}: {found}, expected {expected}")
    if family == "laion-clap":
        return import_laion_clap(path, text_encoder=text_encoder or "roberta-base", **audio_kw)
    if family == "msclap-2023":
        return import_msclap_2023(path, text_encoder=text_encoder or "gpt2", **audio_kw)
    return import_msclap(path, text_encoder=text_encoder or "bert-base-uncased", **audio_kw)
