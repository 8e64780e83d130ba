"""Class prompts, shared by curation (DS matches captions to them) and zero-shot evaluation.

A class is represented by the prompt "this is a sound of {label}" (a task may give its own
template). The label's words are the label with `_` and `/` read as spaces (`crying_baby` ->
"crying baby"), unless the task maps the label to its own words (`clapcurate.tasks`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PROMPT_TEMPLATE = "this is a sound of {label}"


def label_text(label: str) -> str:
    """`car_horn` -> `car horn`, `cafe/restaurant` -> `cafe restaurant`."""
    return re.sub(r"\s+", " ", re.sub(r"[_/]", " ", str(label))).strip()


def prompts(labels, template: str = PROMPT_TEMPLATE, words: dict[str, str] | None = None) -> list[str]:
    """The class prompts of `labels`, in order; `words` maps a label to the words that stand for
    it (labels it leaves out read as `label_text`)."""
    words = words or {}
    return [template.format(label=words.get(label) or label_text(label)) for label in labels]


def benchmark_labels(manifest: pd.DataFrame) -> list[str]:
    """The class list of a labelled manifest, sorted for a stable order."""
    return sorted(set(manifest["label"]) - {""})
