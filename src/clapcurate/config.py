"""Typed configuration: nested dataclasses read from YAML, validated strictly.

Unknown keys and values of the wrong type are errors that name the full key
(`train.batch_size: expected int, got 'abc'`); a misspelt key is answered with the key it
resembles ("did you mean"), a renamed key with its new name and whether its meaning changed
(`RENAMED_KEYS`). `--set a.b=value` overrides are parsed as YAML scalars and applied before
validation. Nothing here imports torch: a config error is reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

# a key of an earlier version -> (what it is now, how its meaning changed or "" when it did not); a
# key matches wherever it is nested (`replay.curated_prob` also as `student.replay.curated_prob`)
RENAMED_KEYS = {
    "replay.curated_prob": ("replay.replay_prob", "its meaning is inverted: replay_prob = 1 - curated_prob, "
                                                  "the probability that a step is a replay batch"),
    "lengths.methods": ("lengths.models", ""),
}


def _unknown_key_message(key: str, known: list[str], prefix: str) -> str:
    """The error of an unknown key `prefix + key`: what a renamed key became, else the known key it
    resembles, else the known keys."""
    full = prefix + key
    renamed = next(((old, new) for old, new in RENAMED_KEYS.items() if full == old or full.endswith("." + old)), None)
    if renamed:
        old, (new, change) = renamed
        new_key = full[: len(full) - len(old)] + new
        return (f"config key {full} was renamed {new_key}; " + (change if change else "its meaning is the same"))
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    if close:
        return f"unknown config key {full}: did you mean {prefix}{close[0]}?"
    return f"unknown config key {full} (known keys here: {', '.join(known)})"


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: no accepted type matches {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected float, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and bad types raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(_unknown_key_message(str(unknown[0]), sorted(fields), prefix))
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {prefix}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def to_dict(obj) -> dict:
    """Plain-data view of a config dataclass (for saving next to results)."""
    return dataclasses.asdict(obj)


def deep_merge(*layers: dict) -> dict:
    """Nested mappings merged left to right: a later layer's value wins, mappings merge key by key."""
    merged: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = deep_merge(merged[key], value)
            else:
                merged[key] = value
    return merged


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply `key.sub=value` strings (values parsed as YAML) to a nested mapping."""
    data = dict(data or {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict | None = None) -> T:
    """Read YAML `path` (or `data`), apply `overrides`, validate into `cls`."""
    base = read_yaml(path) if path is not None else dict(data or {})
    return from_dict(cls, apply_overrides(base, overrides))
