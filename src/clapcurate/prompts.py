"""Class prompts, shared by curation (DS matches captions to them) and zero-shot evaluation.

A class is represented by the prompt "this is a sound of {label}" (labels with `_` and `/` read
as spaces).
"""

from __future__ import annotations

import re

import pandas as pd

PROMPT_TEMPLATE = "this is a sound of {label}"


def label_text(label: str) -> str:
    """`car_horn` -> `car horn`, `cafe/restaurant` -> `cafe restaurant`."""
    return re.sub(r"\s+", " ", re.sub(r"[_/]", " ", str(label))).strip()


def prompts(labels, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The class prompts of `labels`, in order."""
    return [template.format(label=label_text(label)) for label in labels]


def benchmark_labels(manifest: pd.DataFrame) -> list[str]:
    """The class list of a labelled manifest, sorted for a stable order."""
    return sorted(set(manifest["label"]) - {""})
