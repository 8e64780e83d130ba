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
    differences = a - b  # [S, N]
    n_seeds, n_clips = differences.shape
    rng = np.random.default_rng(seed)
    clip_weights = rng.multinomial(n_clips, np.full(n_clips, 1.0 / n_clips), size=resamples)  # [R, N]
    per_seed = clip_weights @ differences.T / n_clips  # [R, S]
    if n_seeds > 1:
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)  # [R, S]
        resampled = (per_seed * seed_weights).sum(axis=1) / n_seeds
    else:
        resampled = per_seed[:, 0]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(100 * float(differences.mean()), 100 * float(low), 100 * float(high))
