"""Metrics: classification accuracy, confusion matrices, per-class recall, retrieval recall@k and
mAP@10 (captioned sets, both directions) and multi-label average precision (tagging)."""

from __future__ import annotations

import numpy as np


def similarity(audio_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Cosine similarities [N, C] of L2-normalised embeddings (float64 for reproducible ties)."""
    return np.asarray(audio_emb, dtype=np.float64) @ np.asarray(class_emb, dtype=np.float64).T


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


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with at least one positive of the average precision of ranking the
    rows by `scores` [N, C] against 0/1 `targets` [N, C] (AudioSet's mAP)."""
    values = []
    for column in np.flatnonzero(targets.sum(axis=0) > 0):
        order = np.argsort(-scores[:, column], kind="stable")
        hits = targets[order, column] > 0
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        values.append(precision_at_hit.mean())
    return float(np.mean(values)) if values else float("nan")
