"""Brackets of a curated Improvement-Set on the embedded world (which has ground truth):

- the *oracle* set: as many pool pairs, every one right by the ground-truth rule of the curated
  sets' precision (the pool clip holds everything the caption names), drawn for the same captions
  where the pool allows it, else for other captions of the same candidates;
- the *shuffled* set: the same pool clips and the same captions, paired at random.

A student trained on each, with the curated student's replay, loss, steps and seed, brackets it:
(curated - shuffled) / (oracle - shuffled) says how much of what right pairs could give the
curated pairs give. Nothing here is read by curation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .groundtruth import WorldTruth


def shuffled_set(curated: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The curated rows with their captions (and caption provenance) permuted among them."""
    order = np.random.default_rng([seed, 41]).permutation(len(curated))
    caption_columns = ["caption", "source_id", "best_label"]
    rows = curated.reset_index(drop=True).copy()
    rows[caption_columns] = rows[caption_columns].iloc[order].to_numpy()
    rows["id"] = [f"shuffled:{clip}:{source}:{i}" for i, (clip, source) in enumerate(zip(rows["clip_id"], rows["source_id"]))]
    rows["similarity"] = np.nan
    rows["method"] = rows["method"].astype(str) + "-shuffled"
    return rows


def oracle_set(curated: pd.DataFrame, candidates: pd.DataFrame, pool: pd.DataFrame, truth: WorldTruth,
               source_paths: dict[str, str], seed: int) -> tuple[pd.DataFrame, int]:
    """(oracle rows, how many of them kept the curated pair's caption).

    `candidates`: the captions the curation matched against the pool (rows with `caption`,
    `source_id`, `best_label`); `pool`: the pool clips it could use (`clip_id`, `audio_path`,
    `source`); `source_paths`: training row id -> the audio the caption was written for. Each
    curated row's caption gets an unused pool clip that holds everything it names, at random;
    captions no pool clip fits are replaced by other candidate captions that have one.
    """
    rng = np.random.default_rng([seed, 43])
    clip_events = [truth.clip_events(path) for path in pool["audio_path"]]
    fitting: dict[frozenset, np.ndarray] = {}

    def clips_for(named: frozenset) -> np.ndarray:
        if named not in fitting:
            fitting[named] = np.flatnonzero([bool(named) and named <= events for events in clip_events])
        return fitting[named]

    used = np.zeros(len(pool), dtype=bool)
    chosen: list[tuple[int, pd.Series]] = []

    def take(row: pd.Series) -> bool:
        named = truth.named_events(source_paths.get(row["source_id"], ""), row["caption"])
        free = [k for k in clips_for(named) if not used[k]]
        if not free:
            return False
        clip = int(free[rng.integers(len(free))])
        used[clip] = True
        chosen.append((clip, row))
        return True

    same_caption = sum(take(row) for _, row in curated.iterrows())
    for _, row in candidates.iloc[rng.permutation(len(candidates))].iterrows():
        if len(chosen) >= len(curated):
            break
        take(row)
    clips = pool.iloc[[clip for clip, _ in chosen]].reset_index(drop=True)
    captions = pd.DataFrame([row for _, row in chosen]).reset_index(drop=True)
    method = str(curated["method"].iloc[0]) if len(curated) else "oracle"
    rows = pd.DataFrame({
        "id": [f"oracle:{clip}:{source}" for clip, source in zip(clips["clip_id"], captions.get("source_id", []))],
        "clip_id": clips["clip_id"], "audio_path": clips["audio_path"],
        "caption": captions.get("caption", pd.Series(dtype=str)),
        "source": clips["source"] if "source" in clips else "",
        "similarity": np.nan, "method": f"{method}-oracle",
        "source_id": captions.get("source_id", pd.Series(dtype=str)),
        "best_label": captions.get("best_label", pd.Series(dtype=str)),
    })
    return rows, same_caption
