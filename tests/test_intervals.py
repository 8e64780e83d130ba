"""The paired bootstrap of accuracy differences against its analytic counterpart."""

import math

import numpy as np
import pytest

from clapcurate.study.intervals import paired_bootstrap


def test_a_model_against_itself_is_exactly_zero():
    correct = np.random.default_rng(0).integers(0, 2, size=(3, 500))
    interval = paired_bootstrap(correct, correct)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.holds_zero and "within noise" in str(interval)


@pytest.mark.parametrize("better, worse, n", [(60, 20, 1000), (30, 25, 400), (5, 0, 2000)])
def test_models_differing_on_k_clips_match_the_analytic_paired_interval(better, worse, n):
    """a is right and b wrong on `better` clips, the reverse on `worse`: the difference is
    (better - worse) / n and its standard error sqrt((better + worse) / n - d^2) / sqrt(n)."""
    a = np.zeros(n, dtype=int)
    b = np.zeros(n, dtype=int)
    a[:better] = 1
    b[better:better + worse] = 1
    both = slice(better + worse, better + worse + n // 2)
    a[both] = b[both] = 1  # clips both get right do not move the difference
    interval = paired_bootstrap(a, b, resamples=20000, seed=1)
    d = (better - worse) / n
    se = math.sqrt((better + worse) / n - d * d) / math.sqrt(n)
    assert interval.difference == pytest.approx(100 * d)
    assert interval.low == pytest.approx(100 * (d - 1.96 * se), abs=100 * (0.15 * se + 1 / n))
    assert interval.high == pytest.approx(100 * (d + 1.96 * se), abs=100 * (0.15 * se + 1 / n))
    assert interval.holds_zero == (d - 1.96 * se <= 0)


def test_seeds_add_their_spread():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, size=400)
    same = np.stack([base, base, base])
    shifted = np.stack([base, 1 - base * 0, base])  # one seed of model a gets every clip right
    one_seed = paired_bootstrap(shifted[:1], same[:1])
    all_seeds = paired_bootstrap(shifted, same)
    assert one_seed.difference == 0 and all_seeds.difference > 0
    assert all_seeds.high - all_seeds.low > 5  # the seed that differs makes the interval wide
    with pytest.raises(ValueError, match="same non-empty shape"):
        paired_bootstrap(same, same[:2])
