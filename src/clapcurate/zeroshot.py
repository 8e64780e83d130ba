"""Zero-shot classification and retrieval metrics.

A class is represented by the text embedding of the prompt "this is a sound of {label}"
(labels with `_` and `/` read as spaces); a clip is assigned the class whose prompt embedding
has the highest cosine similarity with the clip's audio embedding: c^ = argmax_j t_j^T a.
Everything here is deterministic: the same model and files give the same numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PROMPT_TEMPLATE = "this is a sound of {label}"


def label_text(label: str) -> str:
    """`car_horn` -> `car horn`, `cafe/restaurant` -> `cafe restaurant`."""
    return re.sub(r"\s+", " ", re.sub(r"[_/]", " ", str(label))).strip()


def prompts(labels, template: str = PROMPT_TEMPLATE) -> list[str]:
    """The class prompts of `labels`, in order."""
    return [template.format(label=label_text(label)) for label in labels]


def class_embeddings(model, labels, template: str = PROMPT_TEMPLATE, batch_size: int = 256) -> np.ndarray:
    """L2-normalised text embeddings of the class prompts, [C, d]."""
    from .embed import embed_texts

    return embed_texts(model, prompts(labels, template), batch_size=batch_size)


def similarity(audio_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Cosine similarities [N, C] of L2-normalised embeddings (float64 for reproducible ties)."""
    return np.asarray(audio_emb, dtype=np.float64) @ np.asarray(class_emb, dtype=np.float64).T


def classify(audio_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Predicted class index per clip, [N] (ties go to the lower index)."""
    return similarity(audio_emb, class_emb).argmax(axis=1)


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float((y_true == y_pred).mean())


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts [n_classes, n_classes]; rows are true classes, columns predictions."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def per_class_accuracy(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Recall of each class, [n_classes] (NaN for a class without clips)."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / np.maximum(support, 1), np.nan)


def _ranks_of_relevant(scores: np.ndarray, relevant: np.ndarray) -> list[np.ndarray]:
    """For each query row, the 1-based ranks of its relevant items (stable order for ties)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, scores.shape[1] + 1)[None, :]
    return [ranks[i][relevant[i]] for i in range(scores.shape[0])]


def _recall_and_map(rank_lists: list[np.ndarray], ks=(1, 5, 10), map_k: int = 10) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"R@{k}"] = float(np.mean([(r <= k).any() for r in rank_lists]))
    aps = []
    for r in rank_lists:
        hits = np.sort(r[r <= map_k])
        # precision at the rank of each hit: (number of hits so far) / rank
        precision = np.arange(1, len(hits) + 1) / hits if len(hits) else np.zeros(0)
        aps.append(precision.sum() / min(len(r), map_k))
    out[f"mAP@{map_k}"] = float(np.mean(aps))
    return out


def retrieval_metrics(audio_emb: np.ndarray, text_emb: np.ndarray, text_to_audio) -> dict[str, float]:
    """Retrieval metrics of captioned sets, both directions.

    `text_to_audio[j]` is the index of caption j's clip among the rows of `audio_emb`
    (several captions may share a clip, as in Clotho). Text->audio has one relevant clip per
    caption; audio->text counts a clip as found at rank k if any of its captions is there, and
    its mAP@10 averages precision over all of its captions.
    """
    text_to_audio = np.asarray(text_to_audio)
    scores = similarity(text_emb, audio_emb)  # [T, A]
    relevant_t2a = np.zeros(scores.shape, dtype=bool)
    relevant_t2a[np.arange(len(text_to_audio)), text_to_audio] = True
    t2a = _recall_and_map(_ranks_of_relevant(scores, relevant_t2a))
    a2t = _recall_and_map(_ranks_of_relevant(scores.T, relevant_t2a.T))
    return {**{f"text_to_audio/{k}": v for k, v in t2a.items()},
            **{f"audio_to_text/{k}": v for k, v in a2t.items()}}


@dataclass
class ZeroShotResult:
    """Zero-shot evaluation of one model on one labelled manifest."""

    accuracy: float
    labels: list[str]
    per_class: dict[str, float]
    confusion: np.ndarray
    predictions: pd.DataFrame  # id, label, predicted, score
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
    predictions = pd.DataFrame({
        "id": list(ids),
        "label": list(true_labels),
        "predicted": [labels[i] for i in y_pred],
        "score": scores[np.arange(len(y_pred)), y_pred] if len(y_pred) else np.zeros(0),
    })
    return ZeroShotResult(
        accuracy=accuracy(y_true, y_pred),
        labels=list(labels),
        per_class={label: float(per_class[i]) for i, label in enumerate(labels)},
        confusion=confusion_matrix(y_true, y_pred, len(labels)),
        predictions=predictions,
        n_clips=len(y_true),
    )


def benchmark_labels(manifest: pd.DataFrame) -> list[str]:
    """The class list of a labelled manifest, sorted for a stable order."""
    labels = sorted(set(manifest["label"]) - {""})
    return labels


def evaluate(model, manifest: pd.DataFrame, labels: list[str] | None = None, batch_size: int = 64,
             num_workers: int = 0, template: str = PROMPT_TEMPLATE, progress: bool = False) -> ZeroShotResult:
    """Zero-shot accuracy of `model` on a labelled manifest (one row per clip).

    Unreadable clips are skipped and reported in `result.skipped`; the accuracy is over the
    clips that could be read.
    """
    from .embed import embed_audio

    labels = list(labels) if labels is not None else benchmark_labels(manifest)
    audio = embed_audio(model, manifest, batch_size=batch_size, num_workers=num_workers, progress=progress)
    label_of = dict(zip(manifest["clip_id"], manifest["label"]))
    result = evaluate_embeddings(audio.ids, audio.embeddings, [label_of[i] for i in audio.ids],
                                 class_embeddings(model, labels, template), labels)
    result.skipped = audio.skipped
    return result
