"""Zero-shot classification.

A class is represented by the text embedding of its prompt "this is a sound of {label}"
(`clapcurate.prompts`); a clip is assigned the class whose prompt embedding has the highest
cosine similarity with the clip's audio embedding: c^ = argmax_j t_j^T a.
Everything here is deterministic: the same model and files give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .metrics import accuracy, confusion_matrix, per_class_accuracy, similarity
from .prompts import PROMPT_TEMPLATE, benchmark_labels, prompts


def class_embeddings(model, labels, template: str = PROMPT_TEMPLATE, batch_size: int = 256,
                     words: dict[str, str] | None = None) -> np.ndarray:
    """L2-normalised text embeddings of the class prompts, [C, d] (`words`: a label's own words,
    `prompts.prompts`)."""
    from .embed import embed_texts

    return embed_texts(model, prompts(labels, template, words), batch_size=batch_size)


def classify(audio_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Predicted class index per clip, [N] (ties go to the lower index)."""
    return similarity(audio_emb, class_emb).argmax(axis=1)


@dataclass
class ZeroShotResult:
    """Zero-shot evaluation of one model on one labelled manifest."""

    accuracy: float
    labels: list[str]
    per_class: dict[str, float]
    confusion: np.ndarray
    predictions: pd.DataFrame  # id, label, predicted, score, rank (1-based rank of the true class)
    n_clips: int
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "audio_path", "reason"]))


def evaluate_embeddings(ids, audio_emb: np.ndarray, true_labels, class_emb: np.ndarray,
                        labels: list[str]) -> ZeroShotResult:
    """Zero-shot accuracy of precomputed audio embeddings against class prompt embeddings."""
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index[label] for label in true_labels], dtype=np.int64)
    scores = similarity(audio_emb, class_emb)
    y_pred = scores.argmax(axis=1)
    per_class = per_class_accuracy(y_true, y_pred, len(labels))
    order = np.argsort(-scores, axis=1, kind="stable")  # rank 1 is the argmax (ties to the lower index)
    predictions = pd.DataFrame({
        "id": list(ids),
        "label": list(true_labels),
        "predicted": [labels[i] for i in y_pred],
        "score": scores[np.arange(len(y_pred)), y_pred] if len(y_pred) else np.zeros(0),
        "rank": (order == y_true[:, None]).argmax(axis=1) + 1 if len(y_pred) else np.zeros(0, dtype=np.int64),
    })
    return ZeroShotResult(
        accuracy=accuracy(y_true, y_pred),
        labels=list(labels),
        per_class={label: float(per_class[i]) for i, label in enumerate(labels)},
        confusion=confusion_matrix(y_true, y_pred, len(labels)),
        predictions=predictions,
        n_clips=len(y_true),
    )


def evaluate(model, manifest: pd.DataFrame, labels: list[str] | None = None, batch_size: int = 64,
             num_workers: int | str = "auto", template: str = PROMPT_TEMPLATE, progress: bool | str = False,
             feature_cache=None, words: dict[str, str] | None = None) -> ZeroShotResult:
    """Zero-shot accuracy of `model` on a labelled manifest (one row per clip), computed where
    the model is (`num_workers` and bf16 autocast: `auto`, see `embed.embed_audio`).

    Unreadable clips are skipped and reported in `result.skipped`; the accuracy is over the
    clips that could be read. `feature_cache` (a folder): the clips' log-mels are computed once
    per front-end and reused by every model evaluated with that folder (`embed.embed_audio`).
    `words`: a label's own words in its prompt (`prompts.prompts`). `progress`: a bar, named
    after the dataset when it is a string.
    """
    from .embed import embed_audio

    labels = list(labels) if labels is not None else benchmark_labels(manifest)
    audio = embed_audio(model, manifest, batch_size=batch_size, num_workers=num_workers, progress=progress,
                        feature_cache=feature_cache)
    label_of = dict(zip(manifest["clip_id"], manifest["label"]))
    result = evaluate_embeddings(audio.ids, audio.embeddings, [label_of[i] for i in audio.ids],
                                 class_embeddings(model, labels, template, words=words), labels)
    result.skipped = audio.skipped
    return result
