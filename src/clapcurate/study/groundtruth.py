"""The embedded world's ground truth, read only by the study's report (never by curation):
which sound events each clip holds, how often each benchmark class is captioned in the corpus,
and how many curated pairs are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.manifest import read_manifest
from ..data.readers import read_data
from ..data.synth.concepts import SCENES_BY_NAME


def _events(events: str, background: str) -> frozenset[str]:
    """`dog/small;rain/light` + `scene:park` -> {dog, rain, scene:park} (variants dropped)."""
    names = {item.split("/")[0] for item in str(events).split(";") if item and item != "nan"}
    if str(background).startswith("scene:"):
        names.add(str(background))
    return frozenset(names)


class WorldTruth:
    """Events per audio file, and the concept behind each benchmark label."""

    def __init__(self, world_dir: str | Path):
        world_dir = Path(world_dir).resolve()
        self.events: dict[str, frozenset[str]] = {}
        paths: dict[str, list[str]] = {}
        for part in ("corpus", "pool"):
            table = pd.read_csv(world_dir / "ground_truth" / f"{part}.csv", dtype=str, keep_default_na=False)
            paths[part] = [str(world_dir / path) for path in table["path"]]
            for path, events, background in zip(paths[part], table["events"], table["background"]):
                self.events[path] = _events(events, background)
        self.corpus_paths = paths["corpus"]
        world = json.loads((world_dir / "world.json").read_text())
        self.concept_of: dict[tuple[str, str], str] = {}
        for concept in world["concepts"]:
            for item in concept.get("benchmark_labels", []):
                benchmark, _, label = item.partition(":")
                self.concept_of[(benchmark, label)] = concept["name"]
        for scene in world["scenes"]:
            self.concept_of[("tut2017", scene["name"])] = f"scene:{scene['name']}"

    def clip_events(self, audio_path: str) -> frozenset[str]:
        return self.events.get(str(Path(audio_path).resolve()), frozenset())

    def named_events(self, audio_path: str, caption: str) -> frozenset[str]:
        """What a caption of the clip says it holds: every sound event of the clip (captions name
        all of them), and its scene only when the caption names the place ("on a bus")."""
        events = self.clip_events(audio_path)
        text = str(caption).lower()
        return frozenset(event for event in events if not event.startswith("scene:") or
                         any(place in text for place in SCENES_BY_NAME[event[len("scene:"):]].places))

    def corpus_frequency(self, benchmark: str, labels) -> dict[str, int]:
        """How many corpus clips hold each benchmark class's sound."""
        counts = {label: 0 for label in labels}
        for path in self.corpus_paths:
            events = self.events[path]
            for label in labels:
                counts[label] += self.concept_of.get((benchmark, label)) in events
        return counts

    def rare_classes(self, benchmark: str, labels) -> dict[str, str]:
        """`rare` for the less captioned half of the classes, `frequent` for the rest."""
        counts = self.corpus_frequency(benchmark, labels)
        median = np.median(list(counts.values()))
        return {label: ("rare" if count < median else "frequent") for label, count in counts.items()}

    def pair_is_right(self, pairs: pd.DataFrame, train_manifest: str | Path, benchmark: str | None) -> np.ndarray:
        """Whether each curated pair is right, bool [len(pairs)].

        Pool pairs (DU, ADS): the pool clip holds everything the caption names (`named_events` of
        the clip it was written for, found through `source_id` in `train_manifest`). Training
        pairs (DS): the clip holds the sound of the benchmark class its caption was matched to.
        """
        if len(pairs) == 0:
            return np.zeros(0, dtype=bool)
        if (pairs["method"] == "ds").all():
            right = [self.concept_of.get((benchmark, label)) in self.clip_events(path)
                     for label, path in zip(pairs["best_label"], pairs["audio_path"])]
        else:
            source_path = dict(zip(*read_data(train_manifest)[["id", "audio_path"]].T.values))
            named = [self.named_events(source_path[source], caption)
                     for source, caption in zip(pairs["source_id"], pairs["caption"])]
            right = [bool(events) and events <= self.clip_events(path) for events, path in zip(named, pairs["audio_path"])]
        return np.asarray(right, dtype=bool)

    def precision(self, improvement_set: str | Path, train_manifest: str | Path, benchmark: str | None) -> float:
        """Share of the curated pairs of the manifest `improvement_set` that are right
        (`pair_is_right`); nan for an empty set."""
        right = self.pair_is_right(read_manifest(improvement_set), train_manifest, benchmark)
        return float(right.mean()) if len(right) else float("nan")
