"""Uncertainty of accuracy differences: a paired bootstrap over benchmark clips (and seeds).

Two models are scored on the same clips; a difference in accuracy is the mean over seeds and
clips of (correct_a - correct_b). The bootstrap resamples the clips with replacement (the same
clips for both models and for every seed) and, with several seeds, the seeds too; the interval is
the percentile interval of the resampled differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A difference in accuracy (percentage points) and its confidence interval."""

    difference: float
    low: float
    high: float

    @property
    def holds_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        text = f"{self.difference:+.1f} [{self.low:+.1f}, {self.high:+.1f}]"
        return text + (" within noise" if self.holds_zero else "")


def paired_bootstrap(correct_a, correct_b, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> Interval:
    """Accuracy of model a minus model b in points, with a `level` percentile interval.

    `correct_a`, `correct_b`: 0/1 arrays [clips] or [seeds, clips], both models on the same clips
    in the same order (row s of each from the same seed).
    """
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=np.float64)), np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores need the same non-empty shape, got {a.shape} and {b.shape}")
    means = _resampled_means([a, b], resamples, seed)  # [2, R]
    resampled = means[0] - means[1]
    differences = a - b
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(100 * float(differences.mean()), 100 * float(low), 100 * float(high))


def _resampled_means(scores: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """Mean accuracy of each model [M, R] under the same clip (and seed) resamples."""
    stacked = np.stack([np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in scores])  # [M, S, N]
    _, n_seeds, n_clips = stacked.shape
    rng = np.random.default_rng(seed)
    clip_weights = rng.multinomial(n_clips, np.full(n_clips, 1.0 / n_clips), size=resamples)  # [R, N]
    per_seed = np.einsum("rn,msn->mrs", clip_weights, stacked) / n_clips  # [M, R, S]
    if n_seeds == 1:
        return per_seed[:, :, 0]
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)  # [R, S]
    return (per_seed * seed_weights[None]).sum(axis=2) / n_seeds


def bracket_position(curated, oracle, shuffled, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> tuple[float, float, float]:
    """(curated - shuffled) / (oracle - shuffled) in accuracy, with a `level` percentile interval
    from the same paired resamples of clips and seeds; NaNs when the oracle does not beat the
    shuffled bracket in more than `level` of the resamples (the ratio means nothing then)."""
    scores = [np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (curated, oracle, shuffled)]
    if len({s.shape for s in scores}) != 1:
        raise ValueError(f"paired scores need the same shape, got {[s.shape for s in scores]}")
    means = _resampled_means(scores, resamples, seed)  # [3, R]
    span = means[1] - means[2]
    if np.mean(span > 0) < level:
        return float("nan"), float("nan"), float("nan")
    ratios = (means[0] - means[2])[span > 0] / span[span > 0]
    point = (scores[0].mean() - scores[2].mean()) / (scores[1].mean() - scores[2].mean())
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(point), float(low), float(high)
