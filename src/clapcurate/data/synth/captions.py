"""Natural-language captions for clips of the embedded world.

A caption names the clip's events in onset order, each by a clause ("a dog barks") or a noun
phrase ("barking of a dog") drawn from the concept's and the variant's synonyms, joined by one of
several templates, sometimes with the place (scene) or the background ("over a low rumble").
Captions never use a benchmark's label spelling ("dog_bark", "cafe/restaurant").
"""

from __future__ import annotations

import numpy as np

from .concepts import CONCEPTS_BY_NAME, NOISE_BACKGROUNDS, SCENES_BY_NAME

TEMPLATES = {
    1: ("{c0}", "{c0} {place}", "{n0} {place}", "{n0} can be heard {place}", "the sound of {n0}",
        "{n0} is heard nearby", "{c0} nearby", "a recording of {n0} {place}"),
    2: ("{c0} while {c1}", "{c0}, then {c1}", "{n0} followed by {n1}", "{n0} and {n1} {place}",
        "{c0} as {c1} {place}", "{n0}, then {n1} nearby", "{c0} and {c1}", "{n1} while {c0}"),
    3: ("{c0}, {c1} and {c2}", "{n0}, {n1} and {n2} {place}", "{c0} while {n1} and {n2} go on",
        "{n0} and {n1}, then {c2}", "{c0}, then {c1} as {c2}"),
}


def pick(options, rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def event_phrases(concept_name: str, variant_name: str, rng: np.random.Generator) -> tuple:
    """A (clause, noun phrase) pair for one event; the variant's own wording half of the time."""
    concept = CONCEPTS_BY_NAME[concept_name]
    variant = concept.variant(variant_name)
    clause = pick(variant.says, rng) if variant.says and rng.random() < 0.5 else pick(concept.says, rng)
    noun = pick(variant.heard, rng) if variant.heard and rng.random() < 0.5 else pick(concept.heard, rng)
    return clause, noun


def place_phrase(scene: str, background_colour: str, rng: np.random.Generator) -> str:
    """Where the clip sounds: the scene's place words, else the background's."""
    if scene:
        return pick(SCENES_BY_NAME[scene].places, rng)
    return pick(NOISE_BACKGROUNDS[background_colour][1], rng)


def write_caption(events: tuple, scene: str, background_colour: str, rng: np.random.Generator) -> str:
    """One caption for events ``((concept, variant), ...)`` in onset order (at most three named)."""
    named = events[:3]
    fields = {"place": place_phrase(scene, background_colour, rng)}
    for index, (concept, variant) in enumerate(named):
        fields[f"c{index}"], fields[f"n{index}"] = event_phrases(concept, variant, rng)
    caption = pick(TEMPLATES[len(named)], rng).format(**fields)
    caption = caption[0].upper() + caption[1:]
    return caption + "." if rng.random() < 0.6 else caption


def write_captions(events: tuple, scene: str, background_colour: str, count: int,
                   rng: np.random.Generator) -> list:
    """``count`` different captions of one clip (distinct while the phrasings allow)."""
    captions: list = []
    for _ in range(20 * count):
        caption = write_caption(events, scene, background_colour, rng)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == count:
            return captions
    return (captions * count)[:count]
