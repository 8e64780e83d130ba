"""The curated set's summary, its warnings on planted degenerate sets, and the precision estimate
against sets whose right pairs are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clapcurate.curate import ImprovementSet, TeacherReference, false_discovery_precision, improvement_set_stats
from clapcurate.curate.summary import summary_text
from clapcurate.search import SimilarityHistogram


def histogram_of(values) -> SimilarityHistogram:
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.as_tensor(np.asarray(values, dtype=np.float32)))
    return histogram


def curated(captions, similarities, method="du", histogram=None, labels=None) -> ImprovementSet:
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(len(captions))], "clip_id": [f"c{i}" for i in range(len(captions))],
                         "caption": captions, "similarity": similarities,
                         "best_label": labels if labels is not None else [""] * len(captions)})
    return ImprovementSet(method, rows, 0.3, histogram if histogram is not None else histogram_of(similarities))


@pytest.fixture(scope="module")
def reference():
    """A teacher whose held-out matched pairs sit around 0.6 and mismatched ones around 0.1."""
    rng = np.random.default_rng(0)
    return TeacherReference(np.sort(rng.normal(0.6, 0.05, 400)), np.sort(rng.normal(0.1, 0.1, 40_000)), 400)


def test_summary_counts_top_captions_and_labels():
    captions = ["a dog barks"] * 6 + ["rain falls"] * 3 + ["a siren"]
    stats = improvement_set_stats(curated(captions, np.linspace(0.3, 0.5, 10), "ads",
                                          labels=["dog"] * 6 + ["rain"] * 4), sigma_from="keep_fraction",
                                  keep_fraction=0.01, candidate_captions=3)
    assert stats["top_captions"][:2] == [{"caption": "a dog barks", "pairs": 6, "share": 0.6},
                                         {"caption": "rain falls", "pairs": 3, "share": 0.3}]
    assert stats["top_labels"] == [{"label": "dog", "pairs": 6, "share": 0.6}, {"label": "rain", "pairs": 4, "share": 0.4}]
    assert stats["highest_similarity"] == pytest.approx(0.5) and stats["sigma_from"] == "keep_fraction"
    assert stats["estimated_precision"] is None and stats["warnings"] == []  # 3 candidates: no hub
    text = summary_text(stats)
    assert "ADS Improvement-Set: 10 pairs, 10 clips, 3 captions" in text
    assert "sigma = 0.3000 (from keep_fraction 0.01)" in text and "'a dog barks' 60.0%" in text


def test_one_hub_caption_is_warned_about_with_its_share():
    captions = ["A pair of open scissors."] * 29 + [f"caption {i}" for i in range(11)]
    stats = improvement_set_stats(curated(captions, np.full(40, 0.4)), candidate_captions=50)
    [warning] = stats["warnings"]
    assert warning.startswith("hub caption: 29 of the 40 pairs (72%) carry one caption of the 50 candidates, "
                              "'A pair of open scissors.'")
    assert "raise sigma (or keep_fraction)" in warning
    spread = improvement_set_stats(curated([f"caption {i % 8}" for i in range(40)], np.full(40, 0.4)),
                                   candidate_captions=50)
    assert spread["warnings"] == []  # the top caption holds 12.5%


def test_sigma_far_below_the_teachers_matched_pairs_is_warned_about(reference):
    bulk = curated(["a", "b"], [0.25, 0.3])
    bulk.sigma = 0.05
    stats = improvement_set_stats(bulk, reference=reference, pairs_searched=1000)
    [warning] = stats["warnings"]
    lower_quartile = np.quantile(reference.matched, 0.25)
    assert f"sigma = 0.0500 lies below the bulk of the teacher's held-out matched pairs (their lower quartile " \
           f"{lower_quartile:.4f}" in warning
    assert f"{reference.share_at(0.05):.1%} of its mismatched pairs reach it: raise sigma (or keep_fraction)" in warning
    assert stats["estimated_precision"] is None  # no method measured within 10 points: no number
    assert stats["teacher_reference"]["mismatched_share_at_sigma"] == pytest.approx(reference.share_at(0.05))
    assert "reaching sigma: 100.0% of the matched" in summary_text(stats)
    fine = curated(["a", "b"], [0.5, 0.6])
    fine.sigma = 0.45
    assert improvement_set_stats(fine, reference=reference, pairs_searched=2)["warnings"] == []


def test_a_single_held_out_clip_has_no_mismatched_pairs_and_the_summary_says_so():
    """One held-out clip gives matched pairs only: no mismatched quartiles or share (not a share
    of 100% of no pairs), and the summary prints a dash instead of failing."""
    single = TeacherReference.of(np.eye(4)[:1], np.eye(4)[:2], [0, 0])
    assert len(single.mismatched) == 0
    stats = improvement_set_stats(curated(["a", "b"], [0.25, 0.3]), reference=single, pairs_searched=10)
    assert stats["teacher_reference"]["mismatched_quartiles"] is None
    assert stats["teacher_reference"]["mismatched_share_at_sigma"] is None
    assert "mismatched median -; reaching sigma:" in summary_text(stats) and "matched, - of the mismatched" in summary_text(stats)


def test_zero_pairs_name_the_sigma_that_keeps_some():
    similarities = np.random.default_rng(1).uniform(-0.2, 0.4, 10_000)
    empty = ImprovementSet("du", curated([], []).rows, 0.7, histogram_of(similarities))
    stats = improvement_set_stats(empty, pairs_searched=10_000)
    [warning] = stats["warnings"]
    suggested = stats["sigma_keeping_suggested_pairs"]
    assert (similarities >= suggested).sum() == pytest.approx(100, abs=2)
    assert warning == (f"0 pairs reach sigma = 0.7000 (the highest similarity seen is {stats['highest_similarity']:.4f})"
                       f"; sigma = {suggested:.4f} would keep about 100 pairs: lower sigma (or keep_fraction)")
    assert stats["highest_similarity"] == pytest.approx(similarities.max(), abs=1e-4)


def test_the_tried_estimate_follows_a_mixture_whose_wrong_pairs_are_like_the_mismatched(reference):
    """The tried false-discovery estimate is right when its assumption holds (a search of 200,000
    pairs, 600 right ones drawn like the matched pairs, the rest like the mismatched); on the
    embedded world it does not (docs/curation-checks.md), so curation does not report it."""
    rng = np.random.default_rng(2)
    right, wrong = rng.normal(0.6, 0.05, 600), rng.normal(0.1, 0.1, 199_400)
    for sigma in (0.35, 0.4, 0.45):
        truth = (right >= sigma).sum() / ((right >= sigma).sum() + (wrong >= sigma).sum())
        kept = int((right >= sigma).sum() + (wrong >= sigma).sum())
        assert false_discovery_precision(float(reference.share_at(sigma)), kept, 200_000) == pytest.approx(truth, abs=0.08)
    assert false_discovery_precision(0.01, 0, 200_000) is None


def test_study_reports_the_estimate_beside_the_ground_truth_and_stops_on_an_empty_set(tmp_path):
    import json

    from clapcurate.errors import ClapcurateError
    from clapcurate.study.curation import refuse_empty_sets
    from clapcurate.study.plan import StudentSpec
    from clapcurate.study.tables import estimate_error, precision_table

    counts = pd.DataFrame({"teacher": ["full", "full", "full", "10%"], "method": ["DU", "ADS", "DS", "DU"],
                           "benchmark": ["all", "esc50", "esc50", "all"], "pairs": [100, 50, 20, 30],
                           "precision": [0.6, 0.5, 0.9, 0.4], "tried_estimate": [0.55, 0.62, np.nan, 0.2]})
    table = precision_table(counts, "full").set_index("set")
    assert table.loc["DU", "tried estimate %"] == "55.0" and table.loc["DU", "error (points)"] == "-5.0"
    assert table.loc["ADS", "error (points)"] == "+12.0" and table.loc["DS", "tried estimate %"] == "-"
    assert estimate_error(counts) == pytest.approx((37 / 3, 20.0, 3))
    folder = tmp_path / "du"
    folder.mkdir()
    (folder / "stats.json").write_text(json.dumps({"pairs": 0, "method": "du", "sigma": 0.7,
                                                   "sigma_keeping_suggested_pairs": 0.4123}))
    spec = StudentSpec("DU+SL", None, str(folder / "improvement_set.csv"), "train.csv", True)
    with pytest.raises(ClapcurateError, match=r"the full teacher's DU set \(seed 0\) holds 0 pairs at sigma = 0\.7000 "
                                              r"\(sigma = 0\.4123 would keep about 100 pairs\), so its students "
                                              r"cannot train: lower curation\.du_sigma"):
        refuse_empty_sets([spec], {"DU": spec.improvement_set}, "full", 0)
    refuse_empty_sets([spec], {}, "full", 0)  # not a curated set (e.g. the training pairs): not checked
