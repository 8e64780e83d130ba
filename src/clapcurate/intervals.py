"""Uncertainty of accuracy differences: a paired bootstrap over recordings (and seeds).

Two models are scored on the same clips; a difference in accuracy is the mean over seeds and
clips of (correct_a - correct_b). Clips cut from one recording are not independent (several
ESC-50 clips share a Freesound source, UrbanSound8K slices share an `fsID`), so the bootstrap
resamples *recordings* with replacement, keeping the clips of a drawn recording together (the same
recordings for both models and for every seed), and, with several seeds, the seeds too. The
accuracy of a resample is its correct clips over its clips (a ratio estimator: recordings hold
different numbers of clips). Without recording ids every clip is its own recording, and the
bootstrap is the ordinary clip bootstrap, draw for draw. The interval is the percentile interval
of the resampled differences.

A pooled difference over several benchmarks is the mean of the per-benchmark differences (each
benchmark weighs the same, whatever its clip count), each benchmark resampled on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

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


@dataclass(frozen=True)
class AccuracyInterval:
    """One model's accuracy (percent) and its confidence interval."""

    accuracy: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.accuracy:.1f} [{self.low:.1f}, {self.high:.1f}]"


@dataclass(frozen=True)
class Scores:
    """Per-clip 0/1 outcomes of several models on one benchmark: `correct` [models, seeds, clips]
    (row s of every model from the same seed) and each clip's recording (None: every clip its
    own recording)."""

    correct: np.ndarray
    recordings: np.ndarray | None = None

    @classmethod
    def of(cls, *models, recordings=None) -> "Scores":
        stacked = [np.atleast_2d(np.asarray(m, dtype=np.float64)) for m in models]
        if len({s.shape for s in stacked}) != 1 or stacked[0].size == 0:
            raise ValueError(f"paired scores need the same non-empty shape, got {[s.shape for s in stacked]}")
        if recordings is not None:
            recordings = np.asarray(recordings)
            if recordings.shape != (stacked[0].shape[1],):
                raise ValueError(f"one recording id per clip: {recordings.shape[0]} ids for {stacked[0].shape[1]} clips")
        return cls(np.stack(stacked), recordings)

    def resampled_means(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Mean accuracy of each model [M, R] under the same recording (and seed) resamples."""
        _, n_seeds, n_clips = self.correct.shape
        if self.recordings is None:
            cluster_of, n_clusters = np.arange(n_clips), n_clips
        else:  # recordings numbered by first appearance: one clip per recording draws as the clip bootstrap
            _, first, inverse = np.unique(self.recordings, return_index=True, return_inverse=True)
            rank = np.empty(len(first), dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(first))
            cluster_of, n_clusters = rank[inverse.ravel()], len(first)
        draws = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=resamples)  # [R, K]
        clip_weights = draws[:, cluster_of].astype(np.float64)  # [R, N]
        per_seed = np.einsum("rn,msn->mrs", clip_weights, self.correct) / clip_weights.sum(axis=1)[None, :, None]
        if n_seeds == 1:
            return per_seed[:, :, 0]
        seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples)  # [R, S]
        return (per_seed * seed_weights[None]).sum(axis=2) / n_seeds


def _percentile_bounds(resampled: np.ndarray, level: float) -> tuple[float, float]:
    """The `level` percentile interval's bounds of resampled values."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


def _percentile_interval(point: float, resampled: np.ndarray, level: float) -> Interval:
    low, high = _percentile_bounds(resampled, level)
    return Interval(100 * float(point), 100 * low, 100 * high)


def paired_bootstrap(correct_a, correct_b, recordings=None, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> Interval:
    """Accuracy of model a minus model b in points, with a `level` percentile interval.

    `correct_a`, `correct_b`: 0/1 arrays [clips] or [seeds, clips], both models on the same clips
    in the same order (row s of each from the same seed); `recordings`: each clip's recording id
    [clips] (None: every clip its own recording).
    """
    scores = Scores.of(correct_a, correct_b, recordings=recordings)
    means = scores.resampled_means(resamples, np.random.default_rng(seed))  # [2, R]
    point = scores.correct[0].mean() - scores.correct[1].mean()
    return _percentile_interval(point, means[0] - means[1], level)


def accuracy_bootstrap(correct, recordings=None, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> AccuracyInterval:
    """One model's accuracy in percent with a `level` percentile interval, from the same
    resamples of recordings (and seeds) as `paired_bootstrap`: `correct` 0/1 [clips] or
    [seeds, clips], `recordings` each clip's recording id (None: every clip its own recording)."""
    scores = Scores.of(correct, recordings=recordings)
    means = scores.resampled_means(resamples, np.random.default_rng(seed))[0]
    low, high = _percentile_bounds(means, level)
    return AccuracyInterval(100 * float(scores.correct[0].mean()), 100 * low, 100 * high)


def pooled_paired_bootstrap(benchmarks: list[Scores], resamples: int = RESAMPLES, level: float = LEVEL,
                            seed: int = 0) -> Interval:
    """The mean over benchmarks of (model 0 - model 1), each benchmark's recordings resampled on
    their own, with a `level` percentile interval; every benchmark weighs the same."""
    if not benchmarks:
        raise ValueError("a pooled difference needs at least one benchmark")
    rng = np.random.default_rng(seed)
    resampled = np.mean([(m := s.resampled_means(resamples, rng))[0] - m[1] for s in benchmarks], axis=0)
    point = np.mean([s.correct[0].mean() - s.correct[1].mean() for s in benchmarks])
    return _percentile_interval(point, resampled, level)


def bracket_position(curated, oracle, shuffled, recordings=None, resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """(curated - shuffled) / (oracle - shuffled) in accuracy, with a `level` percentile interval
    from the same paired resamples of recordings and seeds; NaNs when the oracle does not beat the
    shuffled bracket in more than `level` of the resamples (the ratio means nothing then)."""
    scores = Scores.of(curated, oracle, shuffled, recordings=recordings)
    means = scores.resampled_means(resamples, np.random.default_rng(seed))  # [3, R]
    span = means[1] - means[2]
    if np.mean(span > 0) < level:
        return float("nan"), float("nan"), float("nan")
    ratios = (means[0] - means[2])[span > 0] / span[span > 0]
    c, o, s = (x.mean() for x in scores.correct)
    return (float((c - s) / (o - s)), *_percentile_bounds(ratios, level))


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / trials (e.g. the precision of a sample of
    pairs marked by hand): centre (p + z^2/2n) / (1 + z^2/n), half-width
    z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n), z the normal quantile of (1 + level) / 2. Unlike the
    normal approximation it stays inside [0, 1] and is usable for small n and p near 0 or 1;
    (0, 1) when there are no trials."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials], got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p, z2 = successes / trials, z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
