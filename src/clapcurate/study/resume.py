"""The resume guard: a study folder's stages are reused only under the settings they were
computed with (`settings.json`); a resumed run may change `RESUMABLE_KEYS` alone."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import to_dict
from ..errors import ConfigError
from ..train.config import TaggerConfig, result_settings
from .config import StudyConfig

# Settings a resumed run may change (dotted for nested keys): which seeds, variants, brackets,
# lengths and selection criteria to add, and how fast and where to compute (a finished stage stays
# valid on another device; `precision: auto` is compared as what it resolves to there, see
# `train.config.result_settings`). The selection criteria's own settings (`curation.selection_k`,
# `curation.selection_keep_fraction`) are not among them: their stages would be reused unchanged.
RESUMABLE_KEYS = ("seeds", "variants", "brackets", "lengths", "curation.selections", "num_workers", "eval_batch_size",
                  "out_root", "name", "device")


def _without_resumable(settings: dict) -> dict:
    """`settings` without `RESUMABLE_KEYS` (a copy)."""
    settings = json.loads(json.dumps(settings))
    for key in RESUMABLE_KEYS:
        *parents, last = key.split(".")
        mapping = settings
        for parent in parents:
            mapping = mapping.get(parent, {}) if isinstance(mapping, dict) else {}
        if isinstance(mapping, dict):
            mapping.pop(last, None)
    return settings
SETTINGS_FILE = "settings.json"  # the settings a run's stages were computed with


def check_settings(out: Path, config: StudyConfig) -> None:
    """Refuse to resume stages computed with other settings (their results would be reused
    silently); record the settings of a new run."""
    settings = result_settings(_without_resumable(to_dict(config)), config.device)
    recorded = out / SETTINGS_FILE
    has_stages = any((out / "stages").glob("*.json"))
    if recorded.is_file():
        pretrain = TaggerConfig() if config.pretrain_audio is not None else None
        defaults = result_settings(json.loads(json.dumps(to_dict(StudyConfig(world=config.world,
                                                                             pretrain_audio=pretrain)))),
                                   config.device)
        changed = changed_keys(result_settings(_without_resumable(json.loads(recorded.read_text())), config.device),
                               json.loads(json.dumps(settings)), defaults)
        if changed:
            raise ConfigError(
                f"{out} holds stages computed with other settings ({', '.join(changed[:8])}"
                f"{', ...' if len(changed) > 8 else ''} changed); choose another name or delete that folder")
    elif has_stages:
        raise ConfigError(f"{out} holds stages whose settings were not recorded (an older clapcurate); "
                          "choose another name or delete that folder")
    else:
        recorded.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


_ABSENT = object()  # a key one mapping lacks


def changed_keys(old, new, defaults=None, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings. A key the old mapping lacks
    (a setting added by a later clapcurate) is no change while the new value is its default."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new or (old is _ABSENT and new == defaults) else [prefix or "(all)"]
    defaults = defaults if isinstance(defaults, dict) else {}
    return [changed for key in sorted(set(old) | set(new))
            for changed in changed_keys(old.get(key, _ABSENT), new.get(key, _ABSENT), defaults.get(key, _ABSENT),
                                         f"{prefix}.{key}" if prefix else key)]
