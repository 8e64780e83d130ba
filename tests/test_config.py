from dataclasses import dataclass, field
from typing import Literal

import pytest

from clapcurate.config import apply_overrides, load_config
from clapcurate.errors import ConfigError


@dataclass
class Inner:
    beta: float = 0.3
    target_norm: Literal["none", "after_mix", "before_mix"] = "before_mix"


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    path: str | None = None


def test_defaults_and_nested_values(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("steps: 20\ninner:\n  beta: 1\ntags: [a, b]\n")
    cfg = load_config(Outer, cfg_file)
    assert cfg.steps == 20 and cfg.inner.beta == 1.0 and isinstance(cfg.inner.beta, float)
    assert cfg.inner.target_norm == "before_mix" and cfg.tags == ["a", "b"] and cfg.path is None


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(Outer, data={"steps": 3}, overrides=["inner.target_norm=none", "steps=7", "path=x.csv"])
    assert cfg.inner.target_norm == "none" and cfg.steps == 7 and cfg.path == "x.csv"


@pytest.mark.parametrize("data, message", [
    ({"stepz": 3}, "unknown config key stepz"),
    ({"inner": {"gamma": 1}}, "unknown config key inner.gamma"),
    ({"steps": "ten"}, "steps: expected int"),
    ({"steps": True}, "steps: expected int"),
    ({"inner": {"target_norm": "both"}}, "inner.target_norm: expected one of"),
    ({"tags": "a"}, "tags: expected a list"),
])
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, data=data)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])


def test_deep_merge_layers_nested_mappings():
    from clapcurate.config import deep_merge

    base = {"trainer": {"max_steps": 10, "progress_bar": False}, "seed": 0}
    merged = deep_merge(base, {"trainer": {"max_steps": 3}}, {"seed": 2, "out_dir": "x"})
    assert merged == {"trainer": {"max_steps": 3, "progress_bar": False}, "seed": 2, "out_dir": "x"}
    assert base["trainer"]["max_steps"] == 10  # inputs are left as they were


def test_pyproject_ships_what_exists_and_declares_only_used_extras():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    for package, patterns in project["tool"]["setuptools"]["package-data"].items():
        for pattern in patterns:
            assert list((root / "src" / package).glob(pattern)), f"package data {pattern} matches no file"
    assert set(project["project"]["optional-dependencies"]) == {"test"}  # no extra the code never imports
