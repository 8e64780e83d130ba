"""The study's curation stages: a teacher's embeddings, its DU, DS and ADS sets, the oracle and
shuffled sets that bracket a curated set, and the curated pair counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import from_dict
from .plan import StudentSpec, slug

if TYPE_CHECKING:
    from .pipeline import Study


def embed(study: Study, kind: str, seed: int, ckpt: str, manifests: dict[str, str],
          train_manifest: str) -> dict[str, str]:
    """The teacher's embeddings: pool audio and all training captions (for curation), and its
    own training audio (for students with cached teacher targets on replay batches)."""
    from ..embed import embed_manifest

    def run():
        out = study.out / "embeddings" / f"{slug(study.config, kind)}_s{seed}"
        jobs = {"audio": (manifests["pool"], "pool_audio", "audio"),
                "train_audio": (train_manifest, "train_audio", "audio"),
                "text": (manifests["train"], "caption_text", "text")}
        return {key: str(embed_manifest(ckpt, manifest, out / name, modality=modality,
                                        num_workers=study.config.num_workers, progress=True,
                                        device=study.config.device))
                for key, (manifest, name, modality) in jobs.items()}

    return study.stages.run(f"embed/{slug(study.config, kind)}_s{seed}", run)


def curate(study: Study, kind: str, seed: int, ckpt: str, manifests: dict[str, str], train_manifest: str,
           embeddings: dict[str, str]) -> dict[str, str]:
    """The teacher's curated sets: DU once, DS and ADS per benchmark (paths of their
    `improvement_set.csv` by `DU`, `DS/<benchmark>`, `ADS/<benchmark>`)."""
    from ..curate import CurationConfig, run_curation

    c = study.config.curation
    split = study.config.teacher.data  # the teacher's held-out clips give the precision estimate
    base = dict(teacher=ckpt, pool_manifest=manifests["pool"], train_manifest=manifests["train"],
                teacher_train_manifest=train_manifest, pool_embeddings=embeddings["audio"],
                caption_embeddings=embeddings["text"], block_size=c.block_size, device=study.config.device,
                held_out_fraction=split.val_fraction, held_out_seed=split.split_seed,
                reference_embeddings=str(Path(embeddings["audio"]).parent / "reference_audio"))
    out = study.out / "curated" / f"{slug(study.config, kind)}_s{seed}"
    stage = f"curate/{slug(study.config, kind)}_s{seed}"

    def run(method: str, name: str, settings: dict) -> str:
        if settings.get("keep_fraction") is not None:
            settings["sigma"] = None  # a quantile threshold replaces the absolute one
        config = from_dict(CurationConfig, {**base, **settings, "out_dir": str(out / name), "overwrite": True})
        return study.stages.run(f"{stage}/{name}", lambda: str(run_curation(method, config)))

    sets = {"DU": run("du", "du", {"sigma": c.du_sigma, "keep_fraction": c.du_keep_fraction,
                                   "max_captions_per_clip": c.du_max_captions_per_clip})}
    for bench in study.data.benchmarks:
        target = {"benchmark_manifest": manifests[bench], "benchmark": bench}
        # DS selects among the teacher's own pairs (the 10% teacher's 10%, whose captions are
        # then embedded in the DS folder itself)
        own = {} if train_manifest == manifests["train"] else {"train_manifest": train_manifest,
                                                               "caption_embeddings": ""}
        sets[f"DS/{bench}"] = run("ds", f"ds_{bench}", {**target, **own, "sigma": c.ds_sigma,
                                                        "keep_fraction": c.ds_keep_fraction})
        sets[f"ADS/{bench}"] = run("ads", f"ads_{bench}", {
            **target, "ds_manifest": sets[f"DS/{bench}"], "sigma": c.ads_sigma,
            "keep_fraction": c.ads_keep_fraction, "max_captions_per_clip": c.ads_max_captions_per_clip})
    return sets


def bracket_students(study: Study, kind: str, seed: int, spec: StudentSpec, train_manifest: str,
                     manifests: dict[str, str], embeddings: dict[str, str]) -> list[StudentSpec]:
    """The oracle and shuffled students of a curated student (`study.brackets`): the same
    replay, loss, steps and seed, on sets of the same size; the oracle draws from the pool
    clips curation could use (readable, i.e. embedded, and not in the teacher's training set)."""
    from ..curate import training_clip_mask
    from ..data.manifest import read_manifest, write_manifest
    from ..embed import load_embeddings, unique_captions, unique_clips
    from .brackets import oracle_set, shuffled_set

    curated_dir = Path(spec.improvement_set).parent
    name = f"brackets/{slug(study.config, kind)}_s{seed}/{curated_dir.name}"

    def make():
        out = study.out / name
        out.mkdir(parents=True, exist_ok=True)
        curated = read_manifest(spec.improvement_set)
        train = read_manifest(manifests["train"])
        if curated_dir.name == "du":
            candidates = unique_captions(train).assign(source_id=lambda t: t["id"], best_label="")
        else:
            candidates = read_manifest(spec.replay)  # the DS set whose captions ADS matched
        pool = unique_clips(read_manifest(manifests["pool"]))
        readable = set(load_embeddings(embeddings["audio"], dtype=np.float16)[0])
        pool = pool[pool["clip_id"].isin(readable).to_numpy()
                    & ~training_clip_mask(pool, read_manifest(train_manifest))].reset_index(drop=True)
        oracle, same_caption = oracle_set(curated, candidates, pool, study.truth(),
                                          dict(zip(train["id"], train["audio_path"])), seed)
        return {"oracle": str(write_manifest(oracle, out / "oracle.csv")),
                "shuffled": str(write_manifest(shuffled_set(curated, seed), out / "shuffled.csv")),
                "pairs": len(curated), "oracle_pairs": len(oracle), "oracle_same_caption": same_caption}

    record = study.stages.run(name, make)
    return [dataclasses.replace(spec, method=f"{spec.method} {arm}", improvement_set=record[arm], table="bracket")
            for arm in ("oracle", "shuffled")]


def curated_counts(study: Study, kind: str, seed: int, sets: dict[str, str], manifests: dict[str, str]) -> list[dict]:
    """One row per curated set: its pairs, the pairs >= sigma before the per-clip cap, the tried
    estimate of its precision without labels (`curate.false_discovery_precision`; NaN without the
    teacher's held-out pairs), its path and, on the embedded world, its precision."""
    from ..curate import false_discovery_precision

    from ..data.manifest import read_manifest

    truth = study.truth()
    out = []
    for key, path in sets.items():
        method, _, bench = key.partition("/")
        out.append({"teacher": kind, "seed": seed, "method": method, "benchmark": bench or "all",
                    "pairs": len(read_manifest(path)), "pairs_at_sigma": _stat(path, "pairs_at_sigma", "before_cap"),
                    "tried_estimate": _tried_estimate(path, false_discovery_precision),
                    "path": str(Path(path).resolve()),
                    "precision": truth.precision(path, manifests["train"], bench) if truth else np.nan})
    return out


def _tried_estimate(improvement_set: str, estimate) -> float:
    share = _stat(improvement_set, "teacher_reference", "mismatched_share_at_sigma")
    value = estimate(share, _stat(improvement_set, "pairs_at_sigma", "before_cap"),
                     _stat(improvement_set, "pairs_searched"))
    return np.nan if value is None else value


def _stat(improvement_set: str, *keys: str) -> float:
    """A number of the set's `stats.json` (nested `keys`; NaN when absent or null, as in a set
    curated before it recorded it)."""
    value = json.loads((Path(improvement_set).parent / "stats.json").read_text())
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return np.nan if value is None else value


def refuse_empty_sets(specs: list[StudentSpec], sets: dict[str, str], kind: str, seed: int) -> None:
    """Stop before any student trains on a curated set (of `sets`) of 0 pairs: `ClapcurateError`
    naming the set, its path, the sigma that would keep some and the study key to change."""
    from ..errors import ClapcurateError

    curated = set(sets.values())
    for spec in (spec for spec in specs if spec.improvement_set in curated):
        stats = json.loads((Path(spec.improvement_set).parent / "stats.json").read_text())
        if stats["pairs"] == 0:
            method = stats["method"]
            keeping = stats.get("sigma_keeping_suggested_pairs")
            hint = f" (sigma = {keeping:.4f} would keep about 100 pairs)" if keeping is not None else ""
            raise ClapcurateError(
                f"the {kind} teacher's {method.upper()} set{' for ' + spec.benchmark if spec.benchmark else ''} "
                f"(seed {seed}) holds 0 pairs at sigma = {stats['sigma']:.4f}{hint}, so its students cannot "
                f"train: lower curation.{method}_sigma or set curation.{method}_keep_fraction "
                f"({spec.improvement_set})")
