"""The study report's reading of what limits the method, from synthetic per-clip scores."""

import numpy as np
import pandas as pd

from clapcurate.study.paper import ReportedTask
from clapcurate.study.tables import gain_table, limits_table

N = 1500
ESC50 = [ReportedTask("esc50", "ESC-50", "esc50", 50)]


def _row(model, correct, bench="esc50", teacher="full", seed=0, recordings=None):
    """One evaluation as `outputs.load_results` gives it: per-clip outcomes, clip ids, recordings."""
    clip_ids = np.array([f"{bench}/{i}" for i in range(len(correct))])
    return {"teacher": teacher, "model": model, "seed": seed, "benchmark": bench,
            "accuracy": float(np.mean(correct)), "outcomes": np.asarray(correct, dtype=bool), "clip_ids": clip_ids,
            "recordings": clip_ids if recordings is None else np.asarray(recordings)}


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


def test_pooled_interval_is_the_mean_of_the_benchmarks_each_resampled_on_its_own():
    from clapcurate.intervals import Scores, paired_bootstrap, pooled_paired_bootstrap
    from clapcurate.study.statistics import POOLED, paired_interval, seed_differences

    rng = np.random.default_rng(2)
    rows, scores = [], {}
    for bench, n, share in (("esc50", 400, 0.6), ("urbansound8k", 2000, 0.5)):
        a = np.array([rng.random(n) < share for _ in (0, 1)])
        b = np.array([rng.random(n) < 0.5 for _ in (0, 1)])
        for seed in (0, 1):
            rows += [_row("A", a[seed], bench, seed=seed), _row("B", b[seed], bench, seed=seed)]
        scores[bench] = (a, b)
    results = pd.DataFrame(rows)
    pooled = paired_interval(results, "full", "A", "B", POOLED)
    assert pooled == pooled_paired_bootstrap([Scores.of(a, b) for a, b in scores.values()])
    # each benchmark weighs the same, whatever its clip count
    per_bench = [100 * (a.mean() - b.mean()) for a, b in scores.values()]
    assert abs(pooled.difference - np.mean(per_bench)) < 1e-9
    assert paired_interval(results, "full", "A", "B", "esc50") == paired_bootstrap(*scores["esc50"])
    per_seed = seed_differences(results, "full", "A", "B", POOLED)
    assert np.allclose(per_seed, [np.mean([100 * (a[s].mean() - b[s].mean()) for a, b in scores.values()])
                                  for s in (0, 1)])
    # a benchmark only one of the two models was scored on is left out of the pool
    extra = pd.concat([results, pd.DataFrame([_row("A", rng.random(50) < 0.5, "tut2017")])], ignore_index=True)
    assert paired_interval(extra, "full", "A", "B", POOLED) == pooled


def _claim_row(student, correct, bench, seed=0, recordings=None, teacher="full"):
    """A main-table evaluation of the paper's `student` with the structured columns of results.csv."""
    soft = student.endswith("SL")
    return {**_row(student, correct, bench, teacher, seed, recordings), "student": student, "bracket": "",
            "table": "main", "soft_labels": soft, "target_norm": "softmax" if soft else "",
            "teacher_targets": "online" if soft else ""}


def _verdicts(claims, claim="ADS+SL beats its teacher"):
    return dict(zip(claims[claims["claim"] == claim]["benchmark"], claims[claims["claim"] == claim]["verdict"]))


def test_a_planted_null_two_identical_students_is_within_noise_on_every_benchmark_and_their_mean():
    from clapcurate.study.statistics import POOLED
    from clapcurate.study.tables import claim_rows, claims_table

    rng = np.random.default_rng(3)
    rows = []
    for bench in ("esc50", "urbansound8k", "tut2017"):
        for seed in (0, 1):
            same = rng.random(300) < 0.6
            rows += [_claim_row("teacher", same, bench, seed), _claim_row("ADS+SL", same.copy(), bench, seed)]
    claims = claim_rows(pd.DataFrame(rows), "10%", ["esc50", "urbansound8k", "tut2017"])
    assert _verdicts(claims) == {b: "within noise" for b in ("esc50", "urbansound8k", "tut2017", POOLED)}
    cells = claims_table(claims, ESC50).set_index("claim").loc["ADS+SL beats its teacher"]
    assert cells["+SL targets"] == "softmax" and cells["ESC-50"].endswith(": within noise")
    assert "(seeds: +0.0, +0.0)" in cells["ESC-50"]  # with few seeds, each seed's difference beside the interval


def test_a_clustered_benchmark_gives_a_wider_claim_interval_over_recordings_than_over_clips():
    from clapcurate.study.tables import claim_rows

    rng = np.random.default_rng(4)
    recordings = np.repeat([f"freesound:{r}" for r in range(40)], 25)  # 40 recordings of 25 clips each
    # the student gains on some recordings and loses on others, every clip of a recording alike
    teacher = rng.random(recordings.size) < 0.5
    per_recording = rng.choice([-1, 0, 1], size=40, p=[0.3, 0.3, 0.4])
    effect = np.repeat(per_recording, 25)
    student = np.where(effect > 0, True, np.where(effect < 0, False, teacher))

    def claim(recording_ids):
        rows = [_claim_row("teacher", teacher, "esc50", recordings=recording_ids),
                _claim_row("ADS+SL", student, "esc50", recordings=recording_ids)]
        found = claim_rows(pd.DataFrame(rows), "10%", ["esc50"])
        return found[(found["claim"] == "ADS+SL beats its teacher") & (found["benchmark"] == "esc50")].iloc[0]

    clustered, by_clip = claim(recordings), claim(None)
    assert clustered["difference"] == by_clip["difference"]
    assert clustered["high"] - clustered["low"] > 1.5 * (by_clip["high"] - by_clip["low"])
