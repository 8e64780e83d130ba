"""Checkpoints: our own folder format, and `load_model`, the one entry point for every model a
command or config names (our folders, and published checkpoints through `imports`).

Our format is a folder holding
- `config.json`: the `CLAPConfig`,
- `text_encoder/`: the text encoder's Hugging Face config and tokenizer files,
- `model.safetensors`: the weights of the `CLAP` model, less the parts it refers to,
- `weights.json`: for each part (`audio_encoder`, `text_encoder`, and `heads`: every other
  weight) the `tensors_hash` of its weights and, for a part unchanged from the source it was
  loaded from (`CLAP.weight_sources`: a pretrained text encoder, a checkpoint folder of ours, a
  PANNs file), that source instead of the weights.
A student with a frozen text encoder thus stores its projections and audio encoder (a few MB)
and refers to the text encoder by hash. `load` finds a referenced part, and checks its hash, at
the first of: the configured text-encoder name resolved as for a new model (e.g. "minilm": the
installed MiniLM), the recorded path relative to the checkpoint folder, the recorded absolute
path, each folder listed in `CLAPCURATE_WEIGHTS_PATH` (separated as in PATH) and its direct
subfolders. Verified parts stay in this process's memory (a few, by hash), so later loads take
them from there. `save(..., self_contained=True)` stores every weight: that folder alone
rebuilds the model.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..config import from_dict, to_dict
from ..errors import ClapcurateError, ConfigError
from ..files import partial_folder, publish_folder
from .audio_encoders import load_panns_checkpoint
from .clap import CLAP
from .config import CLAPConfig
from .imports import import_checkpoint
from .text_encoders import is_transformers_clap, pretrained_weights, resolve_text_encoder
from .transformers_clap import import_transformers_clap
from .weights import WeightsSource, check_stored_parts, load_state_strict, tensors_hash

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TEXT_ENCODER_DIR = "text_encoder"
PARTS_FILE = "weights.json"
PARTS_FORMAT = 1
PARTS = {"audio_encoder": "audio encoder", "text_encoder": "text encoder"}  # parts a checkpoint may refer to
HEADS = "heads"  # every other weight (projections, logit scales): always stored
SEARCH_PATH_ENV = "CLAPCURATE_WEIGHTS_PATH"
_MAX_REFERENCE_DEPTH = 8
_KEPT_SOURCES = 4
# verified referenced parts: {sha256: (weights, where they were found)}, the most recent last
_LOADED_SOURCES: collections.OrderedDict[str, tuple[dict[str, torch.Tensor], str]] = collections.OrderedDict()


def forget_loaded_sources() -> None:
    """Drop the referenced parts this process keeps in memory (the next load reads them again)."""
    _LOADED_SOURCES.clear()


def split_parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A CLAP state dict by part: {part: {name within the part: tensor}}, `heads` keeping full names."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in (*PARTS, HEADS)}
    for key, tensor in state.items():
        part = key.split(".", 1)[0]
        if part in PARTS:
            parts[part][key[len(part) + 1:]] = tensor
        else:
            parts[HEADS][key] = tensor
    return parts


def _full_names(part: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(weights) if part == HEADS else {f"{part}.{key}": tensor for key, tensor in weights.items()}


def _inside(path: str, folder: Path) -> bool:
    """Whether `path` is `folder` or lies below it."""
    path, folder_path = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder_path]) == folder_path


def _source_record(source: WeightsSource, directory: Path) -> dict:
    record = {"kind": source.kind, "path": source.path}
    if source.name:
        record["name"] = source.name
    if os.path.exists(source.path):
        record["relative"] = os.path.relpath(source.path, os.path.abspath(directory))
    return record


def save(model: CLAP, directory: str | Path, self_contained: bool = False) -> Path:
    """Write `model` to `directory` in our checkpoint format; returns the folder. A part whose
    weights equal those of its `model.weight_sources` entry is written as a reference to it,
    unless `self_contained`. The folder is built beside `directory` and swapped into place: an
    interrupted save leaves the previous checkpoint (or none), never a partial one."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_folder(directory)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    sources = {} if self_contained else getattr(model, "weight_sources", {})
    stored, parts = {}, {}
    for part, weights in split_parts(state).items():
        digest = tensors_hash(weights)
        source = sources.get(part)
        # a source inside the folder being replaced would vanish with it
        if source is not None and source.sha256 == digest and not _inside(source.path, directory):
            parts[part] = {"sha256": digest, "source": _source_record(source, directory)}
        else:
            parts[part] = {"sha256": digest}
            stored.update(_full_names(part, weights))
    save_file(stored, str(partial / WEIGHTS_FILE))
    (partial / CONFIG_FILE).write_text(json.dumps(to_dict(model.config), indent=2) + "\n")
    (partial / PARTS_FILE).write_text(json.dumps({"format": PARTS_FORMAT, "parts": parts}, indent=2) + "\n")
    model.text_encoder.save_architecture(partial / TEXT_ENCODER_DIR)
    return publish_folder(partial, directory)


def read_config(directory: Path) -> CLAPConfig:
    config_path = directory / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
        return from_dict(CLAPConfig, data)
    except json.JSONDecodeError as exc:
        raise ClapcurateError(f"{config_path}: not valid JSON: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc


def _read_parts(directory: Path) -> dict[str, dict]:
    """`weights.json`'s parts ({} for a folder written before it existed: every weight stored)."""
    path = directory / PARTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ClapcurateError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PARTS_FORMAT or not isinstance(data.get("parts"), dict):
        raise ClapcurateError(f"{path}: not a clapcurate weights record (format {PARTS_FORMAT})")
    return data["parts"]


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    weights_path = directory / WEIGHTS_FILE
    try:
        return load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ClapcurateError(f"{weights_path}: cannot read weights: {exc}") from exc


def _checkpoint_files(directory: Path) -> list[Path]:
    """The files that make up a checkpoint folder, sorted; a missing part is an error."""
    directory = Path(directory)
    for required in (WEIGHTS_FILE, CONFIG_FILE, TEXT_ENCODER_DIR):
        if not (directory / required).exists():
            raise ClapcurateError(f"{directory}: not a clapcurate checkpoint folder (missing {required})")
    text_files = sorted(path for path in (directory / TEXT_ENCODER_DIR).rglob("*") if path.is_file())
    return [directory / CONFIG_FILE, directory / WEIGHTS_FILE, *text_files]


def _reference(directory: Path, part: str, entry: dict) -> tuple[WeightsSource, str | None]:
    """The source a `weights.json` entry refers to, and its path relative to `directory`."""
    record = entry.get("source")
    try:
        source = WeightsSource(kind=record["kind"], path=str(record["path"]), sha256=str(entry["sha256"]),
                               name=str(record.get("name", "")))
    except (KeyError, TypeError) as exc:
        raise ClapcurateError(f"{directory / PARTS_FILE}: the {part} entry is incomplete") from exc
    if source.kind not in ("pretrained", "checkpoint", "panns"):
        raise ClapcurateError(f"{directory / PARTS_FILE}: unknown source kind {source.kind!r} for the {part}")
    return source, record.get("relative")


def _candidates(directory: Path, source: WeightsSource, relative: str | None) -> list[str]:
    """Where to look for a referenced part, in order (see the module docstring)."""
    found: list[str] = []
    if source.kind == "pretrained" and source.name:
        try:
            found.append(resolve_text_encoder(source.name))
        except ClapcurateError:  # "minilm" without the MiniLM package: look elsewhere
            pass
    if relative:
        found.append(os.path.normpath(os.path.join(os.path.abspath(directory), relative)))
    found.append(source.path)
    for entry in filter(None, os.environ.get(SEARCH_PATH_ENV, "").split(os.pathsep)):
        found.append(entry)
        if os.path.isdir(entry):
            found.extend(sorted(str(child) for child in Path(entry).iterdir() if child.is_dir()))
    return list(dict.fromkeys(found))


def _weights_at(location: str, part: str, source: WeightsSource, model: CLAP, depth: int):
    """The weights of `part` that `location` holds as a source of `source.kind`, or None when it
    holds none. Building them draws nothing from the global random generator."""
    is_local = os.path.exists(location)
    with torch.random.fork_rng(devices=[]):
        if source.kind == "pretrained":
            if part != "text_encoder" or not (is_local or source.name == location):
                return None
            try:
                return pretrained_weights(location, model.config.text.pooling)
            except ClapcurateError:
                return None
        if source.kind == "checkpoint":
            if not (Path(location) / CONFIG_FILE).is_file():
                return None
            return _stored_part(Path(location), part, model, depth + 1)
        if not Path(location).is_file():
            return None
        encoder = model.config.audio.build_encoder()
        return load_panns_checkpoint(encoder, location, keep_frontend=True).state_dict()


def _stored_part(directory: Path, part: str, model: CLAP, depth: int) -> dict[str, torch.Tensor]:
    """The weights of `part` in the checkpoint folder `directory` (stored there or referenced)."""
    entry = _read_parts(directory).get(part, {})
    if "source" in entry:
        return _referenced_part(directory, part, *_reference(directory, part, entry), model, depth)[0]
    prefix = f"{part}."
    try:
        with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as handle:
            return {key[len(prefix):]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ClapcurateError(f"{directory / WEIGHTS_FILE}: cannot read weights: {exc}") from exc


def _referenced_part(directory: Path, part: str, source: WeightsSource, relative: str | None, model: CLAP,
                     depth: int = 0) -> tuple[dict[str, torch.Tensor], str]:
    """The weights `directory`'s `part` refers to, checked against their recorded hash, and where
    they were found; `ClapcurateError` when they are missing or changed."""
    if source.sha256 in _LOADED_SOURCES:
        _LOADED_SOURCES.move_to_end(source.sha256)
        return _LOADED_SOURCES[source.sha256]
    what = PARTS[part]
    if depth > _MAX_REFERENCE_DEPTH:
        raise ClapcurateError(f"{directory}: the {what} is referred to through more than "
                              f"{_MAX_REFERENCE_DEPTH} checkpoints (a reference cycle?)")
    changed = None
    for location in _candidates(directory, source, relative):
        weights = _weights_at(location, part, source, model, depth)
        if weights is None:
            continue
        digest = tensors_hash(weights)
        if digest == source.sha256:
            _LOADED_SOURCES[digest] = (weights, location)
            while len(_LOADED_SOURCES) > _KEPT_SOURCES:
                _LOADED_SOURCES.popitem(last=False)
            return weights, location
        changed = changed or (location, digest)
    if changed:
        raise ClapcurateError(
            f"{directory}: the {what} it refers to has changed: {changed[0]} holds sha256 {changed[1]}, "
            f"expected {source.sha256} (the checkpoint keeps no copy: restore the {what} it was saved with)")
    raise ClapcurateError(
        f"{directory}: the {what} it refers to is missing: {source.path} (sha256 {source.sha256}); "
        f"put it back or list a folder holding it in {SEARCH_PATH_ENV}")


def load(directory: str | Path, device: str | torch.device = "cpu") -> CLAP:
    """Rebuild a `CLAP` model from a checkpoint folder written by `save`, in eval mode, its
    referenced parts found and checked by hash (see the module docstring)."""
    directory = Path(directory)
    _checkpoint_files(directory)
    config = read_config(directory)
    parts = _read_parts(directory)
    config = dataclasses.replace(
        config, text=dataclasses.replace(config.text, name_or_path=str(directory / TEXT_ENCODER_DIR))
    )
    model = CLAP(config, pretrained_text=False)
    state = _read_weights(directory)
    stored = split_parts(state)
    check_stored_parts(stored, parts, directory / WEIGHTS_FILE)
    sources = {}
    for part in PARTS:
        entry = parts.get(part, {})
        if "source" in entry:
            source, relative = _reference(directory, part, entry)
            weights, location = _referenced_part(directory, part, source, relative, model)
            state.update(_full_names(part, weights))
            sources[part] = dataclasses.replace(source, path=location)
        else:  # stored here: the next checkpoint may refer to this folder
            digest = entry.get("sha256") or tensors_hash(stored[part])
            sources[part] = WeightsSource("checkpoint", os.path.abspath(directory), digest)
    load_state_strict(model, state, f"{directory / WEIGHTS_FILE}: weights do not fit the model")
    model.weight_sources = sources
    return model.to(device).eval()


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 of a checkpoint folder: its config and text-encoder files (names and bytes) and the
    `tensors_hash` of each part's weights, a referenced part by the hash it records. Equal for
    the same weights whether a part is stored or referenced, stable across copies and moves;
    any weight that differs changes it. A folder written before `weights.json` existed keeps the
    hash it had then (over the names and bytes of all its files), which embedding folders of that
    time recorded."""
    directory = Path(directory)
    files = _checkpoint_files(directory)
    if not (directory / PARTS_FILE).is_file():
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            _hash_file(digest, path)
        return digest.hexdigest()
    parts = _read_parts(directory)
    stored = split_parts(_read_weights(directory))
    digest = hashlib.sha256(b"clapcurate checkpoint\0")
    for path in files:
        if path != directory / WEIGHTS_FILE:
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            _hash_file(digest, path)
    for part in (*PARTS, HEADS):
        entry = parts.get(part, {})
        part_hash = entry["sha256"] if "source" in entry else tensors_hash(stored[part])
        digest.update(f"{part}\0{part_hash}\0".encode())
    return digest.hexdigest()


def _hash_file(digest, path: Path) -> None:
    """Feed `path`'s bytes and a separator to `digest`."""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(b"\0")


def _hash_folder(digest, folder: Path) -> None:
    """Feed the names and bytes of every file below `folder` to `digest`, in sorted order."""
    for file in sorted(item for item in folder.rglob("*") if item.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        _hash_file(digest, file)


def load_model(path: str | Path, text_encoder: str | None = None, device: str | torch.device = "cpu") -> CLAP:
    """Any supported model, in eval mode on `device`: a clapcurate checkpoint folder, a
    transformers `ClapModel` folder (`import_transformers_clap`), or a published weights file
    (MS CLAP 2022 or 2023, LAION-CLAP; see `import_checkpoint`, whose text encoder architecture
    and tokenizer come from `text_encoder`). The one entry point behind every command's
    `--model` and every config's `teacher`."""
    path = require_model_path(path)
    if is_transformers_clap(path):
        return import_transformers_clap(path).to(device)
    if path.is_dir():
        return load(path, device=device)
    return import_checkpoint(path, text_encoder).to(device)


def model_hash(path: str | Path, text_encoder: str | None = None) -> str:
    """The identity of the model `load_model(path, text_encoder)` builds, as embedding folders
    record it: a checkpoint folder's `checkpoint_hash` (the text encoder is inside it), or for a
    weights file SHA-256 over its bytes and the text-encoder setting (a local text-encoder folder
    by its files' names and bytes, a name as written; none: the family's default); a transformers
    CLAP folder by its files' names and bytes."""
    path = require_model_path(path)
    if is_transformers_clap(path):
        digest = hashlib.sha256(b"transformers clap\0")
        _hash_folder(digest, path)
        return digest.hexdigest()
    if path.is_dir():
        return checkpoint_hash(path)
    digest = hashlib.sha256(b"weights\0")
    _hash_file(digest, path)
    setting = Path(text_encoder) if text_encoder else None
    if setting is not None and setting.is_dir():
        _hash_folder(digest, setting)
    else:
        digest.update(b"text_encoder\0" + (text_encoder or "").encode())
    return digest.hexdigest()


def require_model_path(path: str | Path, key: str | None = None) -> Path:
    """`path` if it exists (checked before any work starts); otherwise `ClapcurateError`
    (`ConfigError` naming the config key or option `key` when given)."""
    path = Path(path)
    if not str(path).strip() or not path.exists():
        message = f"model not found: {path} (expected a checkpoint folder, a transformers ClapModel folder or a published CLAP .pth/.pt file)"
        if key:
            raise ConfigError(f"{key}: {message}")
        raise ClapcurateError(message)
    return path
