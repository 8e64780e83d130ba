"""The study report's reading of what limits the method, from synthetic per-clip scores."""

import numpy as np
import pandas as pd

from clapcurate.study.paper import ReportedTask
from clapcurate.study.tables import gain_table, limits_table

N = 1500
ESC50 = [ReportedTask("esc50", "ESC-50", "esc50", 50)]


def _row(method, correct, bench="esc50", teacher="full", seed=0):
    text = "".join("1" if c else "0" for c in correct)
    return {"teacher": teacher, "method": method, "seed": seed, "benchmark": bench,
            "accuracy": float(np.mean(correct)), "correct": text, "clips": "same"}


def _scores(rng, accuracy):
    return rng.random(N) < accuracy


def _frames(oracle_accuracy):
    rng = np.random.default_rng(0)
    base = _scores(rng, 0.5)
    # each model: the base clips, with a share of clips flipped to right (a paired improvement)
    def better(share):
        return base | (rng.random(N) < share)
    results = pd.DataFrame([_row("teacher", base), _row("SL", better(0.02)), _row("ADS+SL", better(0.06))])
    brackets = pd.DataFrame([_row("ADS+SL oracle", better(oracle_accuracy)), _row("ADS+SL shuffled", better(0.0))])
    counts = pd.DataFrame([{"teacher": "full", "seed": 0, "method": "ADS", "benchmark": "esc50", "pairs": 10,
                            "precision": 0.5}])
    return results, brackets, counts


def test_the_world_reading_follows_the_oracle_gap():
    results, brackets, counts = _frames(oracle_accuracy=0.3)
    table = limits_table(results, brackets, None, None, counts, None, 80, ESC50).set_index("cause")
    world = table.loc["the world (is there anything in the pool to learn?)"]
    assert "in 1 of 1 brackets" in world["reading"] and "premise" not in world["reading"]
    precision = table.loc["curation precision"]
    assert "ADS precision 50%" in precision["measured"]
    assert "fall short of the oracle in 1 of 1" in precision["reading"]

    results, brackets, counts = _frames(oracle_accuracy=0.02)  # the oracle teaches what SL teaches
    world = limits_table(results, brackets, None, None, counts, None, 80, ESC50).set_index("cause").loc[
        "the world (is there anything in the pool to learn?)"]
    assert "in 0 of 1 brackets" in world["reading"] and "does not model the paper's premise" in world["reading"]


def test_training_length_and_soft_target_readings():
    rng = np.random.default_rng(1)
    base = _scores(rng, 0.5)

    def better(share):
        return base | (rng.random(N) < share)
    results = pd.DataFrame([_row("teacher", base), _row("SL", better(0.02)), _row("ADS+SL", better(0.02))])
    lengths = pd.DataFrame([_row("SL @1280", better(0.02)), _row("ADS+SL @1280", better(0.4))])
    ablations = pd.DataFrame([results.iloc[2].to_dict(), _row("ADS+SL norm=softmax", better(0.4)),
                              _row("ADS+SL norm=none", base & (rng.random(N) < 0.5))])
    counts = pd.DataFrame(columns=["teacher", "method", "precision"])
    peaked = {"alike_share": 0.1, "rows": [{"target_norm": "softmax", "self": 0.9, "alike items": 0.09,
                                            "other items": 0.01}]}
    table = limits_table(results, None, lengths, ablations, counts, peaked, 80, ESC50).set_index("cause")
    length = table.loc["training length"]
    assert "ADS+SL - SL on ESC-50: 80 steps" in length["measured"]
    moved = float(length["reading"].split("moves by ")[1].split(" points")[0])
    assert 10 < moved < 25  # about 0.5 * (0.4 - 0.02) of the clips turned right
    soft = table.loc["soft targets"]
    assert "softmax: 81.0x the mass per alike item" in soft["measured"]
    assert "ADS+SL norm=softmax: better on ESC-50" in soft["reading"]
    assert "ADS+SL norm=none: worse on ESC-50" in soft["reading"]
    gains = gain_table(ablations, "full", ["ADS+SL", "ADS+SL norm=softmax"], ESC50, baseline="ADS+SL")
    assert list(gains["model"]) == ["ADS+SL norm=softmax"] and gains["ESC-50"].iloc[0].startswith("+")


def test_pooled_interval_scores_the_clips_of_every_benchmark_together():
    from clapcurate.intervals import paired_bootstrap
    from clapcurate.study.statistics import POOLED, paired_interval

    rng = np.random.default_rng(2)
    rows, a_all, b_all = [], [], []
    for seed in (0, 1):
        a_seed, b_seed = [], []
        for bench, n in (("esc50", 400), ("urbansound8k", 250)):
            a, b = rng.random(n) < 0.6, rng.random(n) < 0.5
            rows += [_row("A", a, bench, seed=seed), _row("B", b, bench, seed=seed)]
            a_seed += list(a)
            b_seed += list(b)
        a_all.append(a_seed)
        b_all.append(b_seed)
    results = pd.DataFrame(rows)
    assert paired_interval(results, "full", "A", "B", POOLED) == paired_bootstrap(np.array(a_all), np.array(b_all))
    one = paired_interval(results, "full", "A", "B", "esc50")
    assert one == paired_bootstrap(np.array(a_all)[:, :400], np.array(b_all)[:, :400])
    # a benchmark only one of the two models was scored on is left out of the pool
    extra = pd.concat([results, pd.DataFrame([_row("A", rng.random(50) < 0.5, "tut2017")])], ignore_index=True)
    assert paired_interval(extra, "full", "A", "B", POOLED) == paired_interval(results, "full", "A", "B", POOLED)
