"""What every clip of the embedded world holds, decided before any audio is rendered.

A `ClipPlan` fixes a clip's events, background, mixing style and its own random seed
``(world seed, part, index)``; rendering a plan is then deterministic wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .concepts import CONCEPTS, CONCEPTS_BY_NAME, NOISE_BACKGROUNDS, SCENES, SCENES_BY_NAME

PART_CODES = {"corpus": 1, "pool": 2, "esc50": 3, "urbansound8k": 4, "tut2017": 5, "ids": 6, "tagged": 7}
NOISE_COLOURS = tuple(sorted(NOISE_BACKGROUNDS))
CORPUS_TIERS = (("common", 1.0), ("medium", 0.35), ("rare", 0.1))  # (tier, sampling weight)


@dataclass(frozen=True)
class ClipPlan:
    """One clip to render: ``events`` are ``(concept, variant)`` pairs; ``backgrounds`` are
    ``(concept, variant, gain_db)`` textures over the whole clip, or ``("noise", colour, 0.0)``."""

    path: str
    seed: tuple
    events: tuple
    backgrounds: tuple
    scene: str
    mixing: str
    seconds: float
    fault: str = ""

    @property
    def background_colour(self) -> str:
        """The noise colour of a plain-noise background ("" for scenes)."""
        return self.backgrounds[0][1] if self.backgrounds[0][0] == "noise" else ""

    def describe_events(self) -> str:
        return ";".join(f"{concept}/{variant}" for concept, variant in self.events)

    def describe_background(self) -> str:
        return f"scene:{self.scene}" if self.scene else f"noise:{self.background_colour}"


@dataclass(frozen=True)
class CorpusCoverage:
    """How the captioned corpus covers the concepts: a sampling weight and the allowed
    sub-variants per concept (rare concepts: only one or two variants)."""

    tiers: dict
    weights: np.ndarray
    variants: dict

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "CorpusCoverage":
        order = rng.permutation(len(CONCEPTS))
        tiers, weights, variants = {}, np.zeros(len(CONCEPTS)), {}
        for rank, concept_index in enumerate(order):
            concept = CONCEPTS[concept_index]
            tier, weight = CORPUS_TIERS[rank * len(CORPUS_TIERS) // len(CONCEPTS)]
            names = [variant.name for variant in concept.variants]
            if tier == "medium":
                names = names[:-1]
            elif tier == "rare":
                names = names[: int(rng.integers(1, 3))]
            tiers[concept.name], weights[concept_index], variants[concept.name] = tier, weight, tuple(names)
        return cls(tiers, weights / weights.sum(), variants)

    def event(self, rng: np.random.Generator) -> tuple:
        concept = CONCEPTS[int(rng.choice(len(CONCEPTS), p=self.weights))]
        return concept.name, str(rng.choice(self.variants[concept.name]))

    def variant_of(self, concept_name: str, rng: np.random.Generator) -> tuple:
        return concept_name, str(rng.choice(self.variants[concept_name]))


def any_event(rng: np.random.Generator) -> tuple:
    """A concept and sub-variant drawn evenly over everything (pool and benchmarks)."""
    concept = CONCEPTS[int(rng.integers(len(CONCEPTS)))]
    return concept.name, concept.variants[int(rng.integers(len(concept.variants)))].name


def any_variant(concept_name: str, rng: np.random.Generator) -> tuple:
    variants = CONCEPTS_BY_NAME[concept_name].variants
    return concept_name, variants[int(rng.integers(len(variants)))].name


def scene_backgrounds(scene_name: str, rng: np.random.Generator) -> tuple:
    """The scene's background textures with their variants resolved and gains jittered."""
    resolved = []
    for concept_name, variant_name, gain_db in SCENES_BY_NAME[scene_name].backgrounds:
        variant_name = variant_name or any_variant(concept_name, rng)[1]
        resolved.append((concept_name, variant_name, gain_db + float(rng.uniform(-3, 3))))
    return tuple(resolved)


def noise_background(rng: np.random.Generator) -> tuple:
    return (("noise", NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))], 0.0),)


def event_count(rng: np.random.Generator, probabilities: tuple) -> int:
    """1, 2 or 3 events with the given probabilities."""
    return int(rng.choice(len(probabilities), p=probabilities)) + 1


def corpus_plan(path: str, seed: tuple, coverage: CorpusCoverage, seconds: float,
                rng: np.random.Generator) -> ClipPlan:
    """A captioned clip: 1-3 events in sequence over a quiet background, concepts drawn unevenly."""
    events = [coverage.event(rng) for _ in range(event_count(rng, (0.45, 0.4, 0.15)))]
    if rng.random() < 0.25:
        scene = SCENES[int(rng.integers(len(SCENES)))]
        if rng.random() < 0.5:
            events[0] = coverage.variant_of(scene.events[int(rng.integers(len(scene.events)))], rng)
        return ClipPlan(path, seed, tuple(events), scene_backgrounds(scene.name, rng), scene.name, "studio", seconds)
    return ClipPlan(path, seed, tuple(events), noise_background(rng), "", "studio", seconds)


def pool_plan(path: str, seed: tuple, seconds: float, rng: np.random.Generator) -> ClipPlan:
    """An in-the-wild clip: 1-3 overlapping events (half of them one), all concepts and variants
    evenly, reverberant and at lower signal-to-noise ratios than the corpus; 30% inside a scene."""
    events = [any_event(rng) for _ in range(event_count(rng, (0.5, 0.3, 0.2)))]
    if rng.random() < 0.3:
        scene = SCENES[int(rng.integers(len(SCENES)))]
        events[0] = any_variant(scene.events[int(rng.integers(len(scene.events)))], rng)
        return ClipPlan(path, seed, tuple(events), scene_backgrounds(scene.name, rng), scene.name, "wild", seconds)
    return ClipPlan(path, seed, tuple(events), noise_background(rng), "", "wild", seconds)


def benchmark_event_plan(path: str, seed: tuple, concept_name: str, backgrounds: tuple, mixing: str,
                         seconds: float, rng: np.random.Generator) -> ClipPlan:
    """A benchmark clip of one labelled event (any sub-variant) over a background."""
    return ClipPlan(path, seed, (any_variant(concept_name, rng),), backgrounds, "", mixing, seconds)


def scene_plan(path: str, seed: tuple, scene_name: str, backgrounds: tuple, rng: np.random.Generator,
               seconds: float) -> ClipPlan:
    """A scene clip: the recording's background textures and 0-2 of the scene's events."""
    scene = SCENES_BY_NAME[scene_name]
    n_events = int(rng.choice(3, p=(0.2, 0.5, 0.3)))
    events = tuple(any_variant(scene.events[int(rng.integers(len(scene.events)))], rng) for _ in range(n_events))
    return ClipPlan(path, seed, events, backgrounds, scene_name, "scene", seconds)


def with_fault(plan: ClipPlan, fault: str) -> ClipPlan:
    return replace(plan, fault=fault)
