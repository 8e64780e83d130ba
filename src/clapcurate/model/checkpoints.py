"""Checkpoints: our own folder format, and import of MS CLAP 2022 weights.

Our format is a folder holding
- `model.safetensors`: every weight of the `CLAP` model,
- `config.json`: the `CLAPConfig`,
- `text_encoder/`: the text encoder's Hugging Face config and tokenizer files,
so that the folder alone rebuilds the model, with no access to the original encoder path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import from_dict, to_dict
from ..errors import ClapcurateError, ConfigError
from ..files import partial_folder, publish_folder
from .audio_encoders import IGNORED_CHECKPOINT_PREFIX
from .clap import CLAP, AudioConfig, CLAPConfig, TextConfig
from .weights import load_state_strict, read_torch_state_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TEXT_ENCODER_DIR = "text_encoder"


def save(model: CLAP, directory: str | Path) -> Path:
    """Write `model` to `directory` in our checkpoint format; returns the folder. The folder is
    built beside `directory` and swapped into place: an interrupted save leaves the previous
    checkpoint (or none), never a partial one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_folder(directory)
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(weights, str(partial / WEIGHTS_FILE))
    (partial / CONFIG_FILE).write_text(json.dumps(to_dict(model.config), indent=2) + "\n")
    model.text_encoder.save_architecture(partial / TEXT_ENCODER_DIR)
    return publish_folder(partial, directory)


def _read_config(directory: Path) -> CLAPConfig:
    config_path = directory / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
        return from_dict(CLAPConfig, data)
    except json.JSONDecodeError as exc:
        raise ClapcurateError(f"{config_path}: not valid JSON: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc


def _checkpoint_files(directory: Path) -> list[Path]:
    """The files that make up a checkpoint folder, sorted; a missing part is an error."""
    directory = Path(directory)
    for required in (WEIGHTS_FILE, CONFIG_FILE, TEXT_ENCODER_DIR):
        if not (directory / required).exists():
            raise ClapcurateError(f"{directory}: not a clapcurate checkpoint folder (missing {required})")
    text_files = sorted(path for path in (directory / TEXT_ENCODER_DIR).rglob("*") if path.is_file())
    return [directory / CONFIG_FILE, directory / WEIGHTS_FILE, *text_files]


def load(directory: str | Path, device: str | torch.device = "cpu") -> CLAP:
    """Rebuild a `CLAP` model from a checkpoint folder written by `save`, in eval mode."""
    directory = Path(directory)
    _checkpoint_files(directory)
    config = _read_config(directory)
    config = dataclasses.replace(
        config, text=dataclasses.replace(config.text, name_or_path=str(directory / TEXT_ENCODER_DIR))
    )
    model = CLAP(config, pretrained_text=False)
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ClapcurateError(f"{weights_path}: cannot read weights: {exc}") from exc
    load_state_strict(model, state, f"{weights_path}: weights do not fit the model")
    return model.to(device).eval()


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 over the names and bytes of a checkpoint folder's files (stable across copies)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in _checkpoint_files(directory):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        _hash_file(digest, path)
    return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    """Feed `path`'s bytes and a separator to `digest`."""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(b"\0")


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
    from .imports import checkpoint_family, import_laion_clap, import_msclap_2023, read_state_dict

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


def load_model(path: str | Path, text_encoder: str | None = None, device: str | torch.device = "cpu") -> CLAP:
    """Any supported model, in eval mode on `device`: a clapcurate checkpoint folder, or a published
    weights file (MS CLAP 2022 or 2023, LAION-CLAP; see `import_checkpoint`, whose text encoder
    architecture and tokenizer come from `text_encoder`). The one entry point behind every
    command's `--model` and every config's `teacher`."""
    path = require_model_path(path)
    if path.is_dir():
        return load(path, device=device)
    return import_checkpoint(path, text_encoder).to(device)


def model_hash(path: str | Path, text_encoder: str | None = None) -> str:
    """The identity of the model `load_model(path, text_encoder)` builds, as embedding folders
    record it: a checkpoint folder's `checkpoint_hash` (the text encoder is inside it), or for a
    weights file SHA-256 over its bytes and the text-encoder setting (a local text-encoder folder
    by its files' names and bytes, a name as written; none: the family's default)."""
    path = require_model_path(path)
    if path.is_dir():
        return checkpoint_hash(path)
    digest = hashlib.sha256(b"weights\0")
    _hash_file(digest, path)
    setting = Path(text_encoder) if text_encoder else None
    if setting is not None and setting.is_dir():
        for file in sorted(item for item in setting.rglob("*") if item.is_file()):
            digest.update(file.relative_to(setting).as_posix().encode() + b"\0")
            _hash_file(digest, file)
    else:
        digest.update(b"text_encoder\0" + (text_encoder or "").encode())
    return digest.hexdigest()


def require_model_path(path: str | Path, key: str | None = None) -> Path:
    """`path` if it exists (checked before any work starts); otherwise `ClapcurateError`
    (`ConfigError` naming the config key or option `key` when given)."""
    path = Path(path)
    if not str(path).strip() or not path.exists():
        message = f"model not found: {path} (expected a checkpoint folder or a published CLAP .pth/.pt file)"
        if key:
            raise ConfigError(f"{key}: {message}")
        raise ClapcurateError(message)
    return path
