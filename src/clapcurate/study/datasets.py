"""The study's data: the embedded world (generated once) or the configured datasets, read into
manifests once (benchmark audio refused in the pool), and the low-resource teacher's pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import ConfigError
from .config import world_data

if TYPE_CHECKING:
    from .pipeline import Study


def prepare_data(study: Study) -> dict[str, str]:
    """The manifests of the training pairs, the pool and each benchmark (paths by name); the world
    first, when the study runs on it (`study.data` then becomes its datasets)."""
    from ..curate import refuse_benchmark_audio
    from ..data.manifest import write_manifest
    from ..data.readers import read_data
    from ..tasks import read_task

    cfg = study.config
    if cfg.world is not None:
        world_dir = Path(cfg.world.dir)

        def make_world():
            from ..data.synth import generate_world

            described = world_dir / "world.json"
            if not described.is_file():
                generate_world(world_dir, seed=cfg.world.seed, scale=cfg.world.scale, progress=True)
            existing = json.loads(described.read_text())
            if (existing["seed"], existing["scale"]) != (cfg.world.seed, cfg.world.scale):
                raise ConfigError(
                    f"{world_dir} holds a world of seed {existing['seed']} and scale {existing['scale']}, "
                    f"not the configured world.seed {cfg.world.seed} and world.scale {cfg.world.scale}: "
                    "choose another world.dir or delete that folder")
            return str(world_dir)

        study.stages.run("world", make_world)
        study.data = world_data(world_dir)

    def make_manifests():
        out = study.out / "manifests"
        out.mkdir(exist_ok=True)
        paths = {}
        train = pd.concat([read_data(spec) for spec in study.data.captioned], ignore_index=True)
        paths["train"] = str(write_manifest(train, out / "train.csv"))
        pool = read_data(study.data.pool)
        paths["pool"] = str(write_manifest(pool, out / "pool.csv"))
        for name, task in study.data.tasks().items():
            benchmark = read_task(task).manifest  # one label per clip, two classes or more
            refuse_benchmark_audio(pool, benchmark, name)  # before any pool audio is read
            paths[name] = str(write_manifest(benchmark, out / f"bench_{name}.csv"))
        return paths

    return study.stages.run("manifests", make_manifests)


def low_resource_manifest(study: Study, train_path: str, seed: int) -> str:
    """A reproducible random `low_resource_fraction` of the training pairs."""
    from ..data.manifest import read_manifest, take_subset, write_manifest

    name = f"train_{study.config.low_resource.slug}_s{seed}"

    def make():
        subset = take_subset(read_manifest(train_path), study.config.low_resource_fraction, seed)
        return str(write_manifest(subset, study.out / "manifests" / f"{name}.csv"))

    return study.stages.run(f"manifests/{name}", make)
