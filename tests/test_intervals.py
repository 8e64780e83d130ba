"""The paired bootstrap of accuracy differences against its analytic counterpart."""

import math

import numpy as np
import pytest

from clapcurate.intervals import bracket_position, paired_bootstrap


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


def test_bracket_position_of_a_model_between_its_brackets():
    n = 2000
    rng = np.random.default_rng(3)
    shuffled = (rng.random(n) < 0.40).astype(int)
    oracle = np.maximum(shuffled, (rng.random(n) < 0.25).astype(int))  # right wherever shuffled is, and more
    halfway = np.where(rng.random(n) < 0.5, oracle, shuffled)
    point, low, high = bracket_position(halfway, oracle, shuffled)
    assert low < point < high and 0.35 < point < 0.65 and low > 0.2 and high < 0.8
    assert bracket_position(oracle, oracle, shuffled)[:1] == (1.0,)
    assert bracket_position(shuffled, oracle, shuffled)[0] == 0.0
    assert all(np.isnan(bracket_position(halfway, shuffled, shuffled)))  # no span: no position


def test_recording_bootstrap_matches_the_enumerated_bootstrap_distribution():
    """Four recordings of 1, 2, 3 and 5 clips: every ordered draw of four recordings is equally
    likely, so the bootstrap distribution of the pooled-ratio difference can be enumerated."""
    import itertools

    from clapcurate.intervals import Scores

    sizes = [1, 2, 3, 5]
    recordings = np.repeat(np.array(["r0", "r1", "r2", "r3"]), sizes)
    a = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1])
    b = np.array([0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0])
    exact = []
    for draw in itertools.product(range(4), repeat=4):
        clips = np.concatenate([np.flatnonzero(recordings == f"r{k}") for k in draw])
        exact.append(a[clips].mean() - b[clips].mean())
    means = Scores.of(a, b, recordings=recordings).resampled_means(40000, np.random.default_rng(5))
    sampled = means[0] - means[1]
    assert sampled.mean() == pytest.approx(np.mean(exact), abs=0.005)
    assert sampled.std() == pytest.approx(np.std(exact), abs=0.005)
    for q in (10, 50, 90):
        assert np.percentile(sampled, q) == pytest.approx(np.percentile(exact, q), abs=0.02)


def test_one_clip_per_recording_is_the_clip_bootstrap_draw_for_draw():
    rng = np.random.default_rng(6)
    a, b = rng.integers(0, 2, size=(2, 300)), rng.integers(0, 2, size=(2, 300))
    ids = np.array([f"rec{i}" for i in rng.permutation(300)])  # unique ids in no particular order
    assert paired_bootstrap(a, b, recordings=ids) == paired_bootstrap(a, b)
    assert bracket_position(a[0], np.maximum(a[0], b[0]), b[0] * 0, recordings=ids) == \
        bracket_position(a[0], np.maximum(a[0], b[0]), b[0] * 0)


def test_clustered_benchmark_widens_the_interval():
    """Recordings of 10 clips that are all right or all wrong together: the clips are not 10x the
    evidence, and the recording interval is about sqrt(10) times wider than the clip interval."""
    rng = np.random.default_rng(7)
    per_recording = rng.random((2, 60)) < np.array([[0.6], [0.4]])
    a, b = np.repeat(per_recording[0], 10).astype(int), np.repeat(per_recording[1], 10).astype(int)
    recordings = np.repeat(np.arange(60), 10)
    clips = paired_bootstrap(a, b)
    clustered = paired_bootstrap(a, b, recordings=recordings)
    assert clustered.difference == clips.difference
    ratio = (clustered.high - clustered.low) / (clips.high - clips.low)
    assert 2.4 < ratio < 4.0


def test_pooled_difference_weighs_every_benchmark_the_same():
    from clapcurate.intervals import Scores, pooled_paired_bootstrap

    rng = np.random.default_rng(8)
    big_a, big_b = rng.random(2000) < 0.7, rng.random(2000) < 0.5  # +20 points on 2000 clips
    small_a, small_b = np.zeros(100), np.zeros(100)  # 0 points on 100 clips
    pooled = pooled_paired_bootstrap([Scores.of(big_a, big_b), Scores.of(small_a, small_b)])
    big = paired_bootstrap(big_a, big_b)
    assert pooled.difference == pytest.approx(big.difference / 2)
    assert pooled.low == pytest.approx(big.low / 2, abs=0.3) and pooled.high == pytest.approx(big.high / 2, abs=0.3)
    with pytest.raises(ValueError, match="at least one"):
        pooled_paired_bootstrap([])
    with pytest.raises(ValueError, match="one recording id per clip"):
        paired_bootstrap(big_a, big_b, recordings=np.arange(5))
