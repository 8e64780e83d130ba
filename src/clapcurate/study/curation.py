"""The study's curation stages: a teacher's embeddings, its DU, DS and ADS sets, the oracle and
shuffled sets that bracket a curated set, the sets of the compared selection criteria, and the
curated pair counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import from_dict
from . import selections
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


def _curation_runner(study: Study, kind: str, seed: int, ckpt: str, manifests: dict[str, str],
                     train_manifest: str, embeddings: dict[str, str], folder: str = "curated"):
    """run(method, name, settings) -> the manifest of one curation stage of the teacher, curated
    into `<folder>/<teacher>_s<seed>/<name>`."""
    from ..curate import CurationConfig, run_curation

    split = study.config.teacher.data  # the teacher's held-out clips give the precision estimate
    base = dict(teacher=ckpt, pool_manifest=manifests["pool"], train_manifest=manifests["train"],
                teacher_train_manifest=train_manifest, pool_embeddings=embeddings["audio"],
                caption_embeddings=embeddings["text"], block_size=study.config.curation.block_size,
                device=study.config.device,
                held_out_fraction=split.val_fraction, held_out_seed=split.split_seed,
                reference_embeddings=str(Path(embeddings["audio"]).parent / "reference_audio"))
    out = study.out / folder / f"{slug(study.config, kind)}_s{seed}"
    stage = f"{'curate' if folder == 'curated' else folder}/{slug(study.config, kind)}_s{seed}"

    def run(method: str, name: str, settings: dict) -> str:
        if settings.get("keep_fraction") is not None:
            settings["sigma"] = None  # a quantile threshold replaces the absolute one
        config = from_dict(CurationConfig, {**base, **settings, "out_dir": str(out / name), "overwrite": True})
        return study.stages.run(f"{stage}/{name}", lambda: str(run_curation(method, config)))

    return run


def curate(study: Study, kind: str, seed: int, ckpt: str, manifests: dict[str, str], train_manifest: str,
           embeddings: dict[str, str]) -> dict[str, str]:
    """The teacher's curated sets: DU once, DS and ADS per benchmark (paths of their
    `improvement_set.csv` by `DU`, `DS/<benchmark>`, `ADS/<benchmark>`)."""
    c = study.config.curation
    run = _curation_runner(study, kind, seed, ckpt, manifests, train_manifest, embeddings)
    sets = {"DU": run("du", "du", {"sigma": c.du_sigma, "keep_fraction": c.du_keep_fraction,
                                   "max_captions_per_clip": c.du_max_captions_per_clip})}
    for bench, task in study.data.tasks().items():
        target = {"benchmark_manifest": manifests[bench], "benchmark": bench, "template": task.template,
                  "label_words": task.label_words}
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


def selection_students(study: Study, kind: str, seed: int, ckpt: str, manifests: dict[str, str],
                       train_manifest: str, embeddings: dict[str, str], sets: dict[str, str],
                       specs: list[StudentSpec]) -> tuple[list[dict], list[StudentSpec]]:
    """`curation.selections` (`study.selections`): each criterion's DU and ADS sets curated at
    `selection_keep_fraction` into `selections/`, ranked by its score; returns (their precision
    curves, the DU and ADS+SL students of the criteria other than cosine on their best pairs at
    the sizes of the teacher's own sets, `specs`' students otherwise)."""
    from ..data.manifest import read_manifest, write_manifest

    c = study.config.curation
    run = _curation_runner(study, kind, seed, ckpt, manifests, train_manifest, embeddings, "selections")
    curves, students = [], []
    for key, own_set in sets.items():
        set_kind, _, bench = key.partition("/")
        if set_kind not in ("DU", "ADS"):
            continue
        name = Path(own_set).parent.name
        settings = {"keep_fraction": c.selection_keep_fraction, "selection_k": c.selection_k,
                    "max_captions_per_clip": c.du_max_captions_per_clip if set_kind == "DU"
                    else c.ads_max_captions_per_clip}
        if set_kind == "ADS":
            settings.update(benchmark_manifest=manifests[bench], benchmark=bench, ds_manifest=sets[f"DS/{bench}"])
        model = "DU" if set_kind == "DU" else "ADS+SL"
        spec = next((s for s in specs if s.table == "main" and s.model == model and s.benchmark == (bench or None)),
                    None)
        for selection in c.selections:
            curated = run(set_kind.lower(), f"{name}_{selection}", {**settings, "selection": selection})

            def matched(curated=curated):
                rows = selections.ranked(read_manifest(curated))
                size = len(read_manifest(own_set))
                right = study.truth().pair_is_right(rows, manifests["train"], bench or None)
                out = Path(curated).parent / "matched"
                out.mkdir(exist_ok=True)
                return {"set": str(write_manifest(rows.iloc[:size], out / "improvement_set.csv")), "matched": size,
                        "right": "".join("1" if r else "0" for r in right)}

            record = study.stages.run(f"selections/{slug(study.config, kind)}_s{seed}/{name}_{selection}/matched",
                                      matched)
            right = np.array([char == "1" for char in record["right"]], dtype=bool)
            curves += selections.curve_rows(kind, seed, key, selection, right, record["matched"])
            if spec is not None and selection != "cosine":
                students.append(dataclasses.replace(spec, model=selections.student_name(model, selection),
                                                   improvement_set=record["set"], table="selection",
                                                   selection=selection))
    return curves, students


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
    return [dataclasses.replace(spec, model=f"{spec.model} {arm}", improvement_set=record[arm], table="bracket",
                                bracket=arm)
            for arm in ("oracle", "shuffled")]


def curated_counts(study: Study, kind: str, seed: int, sets: dict[str, str], manifests: dict[str, str]) -> list[dict]:
    """One row per curated set: its pairs, the pairs >= sigma before the per-clip cap, the tried
    estimate of its precision without labels (`curate.false_discovery_precision`; NaN without the
    teacher's held-out pairs), its path, on the embedded world its precision, and with `marks` its
    hand-marked sample's."""
    from ..curate import false_discovery_precision
    from ..data.manifest import read_manifest

    truth = study.truth()
    out = []
    for key, path in sets.items():
        method, _, bench = key.partition("/")
        rows = read_manifest(path)
        folder = Path(path).parent.relative_to(study.out / "curated").as_posix()
        out.append({"teacher": kind, "seed": seed, "method": method, "benchmark": bench or "all",
                    "pairs": len(rows), "pairs_at_sigma": _stat(path, "pairs_at_sigma", "before_cap"),
                    "tried_estimate": _tried_estimate(path, false_discovery_precision),
                    "path": str(Path(path).resolve()), "folder": folder,
                    "precision": truth.precision(path, manifests["train"], bench) if truth else np.nan,
                    **marked_sample(study.config.marks.get(folder), rows["id"])})
    return out


def marked_sample(marks_csv: str | None, pair_ids) -> dict:
    """The counts, precision and 95% Wilson interval of a set's hand-marked sample (NaN without one)."""
    from ..browse import read_marks

    if not marks_csv:
        return dict.fromkeys(MARKED_COLUMNS, np.nan)
    sample = read_marks(marks_csv, pair_ids)
    return dict(zip(MARKED_COLUMNS, (sample.right, sample.wrong, sample.unsure, sample.precision, *sample.interval())))


MARKED_COLUMNS = ("marked_right", "marked_wrong", "marked_unsure", "marked_precision", "marked_low", "marked_high")


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
