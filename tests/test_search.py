"""The one-pass blocked search (`clapcurate.search.search_pass`) against a brute-force reference over
the full similarity matrix: pairs, similarities, histogram counts and sigma, exactly, for a given
sigma, a keep_fraction and top-k, on float16 and float32 inputs, on the CPU kernel and the torch
path, with blocks that do not divide N and M and with candidate buffers small enough to overflow;
and under the hub-aware selections (CSLS, mutual nearest neighbours) against their scores computed
from the full matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapcurate import search
from clapcurate.errors import ClapcurateError
from clapcurate.search import SimilarityHistogram, best_key, search_pass, threshold_search


def grid_rows(rng, n, d=16):
    """Rows with entries in {-2, -1, 0, 1, 2} / 8: every dot product is a multiple of 1/64 in
    [-1, 1], exact in float16 and float32, so pairs tie, sit exactly on sigma and on bin edges."""
    return (rng.integers(-2, 3, size=(n, d)) / 8).astype(np.float32)


def reference(sims: np.ndarray, sigma: float, top_k: int | None):
    """Per query, keys by (-similarity, key), the first k, those >= sigma."""
    pairs = []
    for q, row in enumerate(sims):
        ranked = np.lexsort((np.arange(len(row)), -row))[: top_k or len(row)]
        pairs += [(q, int(k), float(row[k])) for k in ranked if row[k] >= sigma]
    return pairs


def reference_histogram(sims: np.ndarray, low: float = -1.0, high: float = 1.0) -> SimilarityHistogram:
    histogram = SimilarityHistogram.empty(low=low, high=high)
    histogram.add(torch.from_numpy(sims.astype(np.float32).ravel().copy()))
    return histogram


def reference_scores(sims: np.ndarray, selection: str, k: int) -> np.ndarray:
    """The selection's score of every pair from the full matrix: csls (2 cos - r_query) - r_key with
    r the mean of the k largest cosines of the row / column (float64 over the sorted values, then
    float32); mutual the cosine where it reaches the k-th largest of its row and of its column."""
    sims = sims.astype(np.float32)
    row_top = -np.sort(-sims, axis=1)[:, :k]  # [N, k], descending
    col_top = -np.sort(-sims, axis=0)[:k].T  # [M, k]
    if selection == "csls":
        r_query, r_key = ((top.astype(np.float64).sum(axis=1) / top.shape[1]).astype(np.float32)
                          for top in (row_top, col_top))
        return (np.float32(2) * sims - r_query[:, None]) - r_key[None, :]
    mutual = (sims >= row_top[:, -1:]) & (sims >= col_top[:, -1][None, :])
    return np.where(mutual, sims, np.float32(-np.inf))


def as_pairs(result):
    return list(zip(result.query_idx.tolist(), result.key_idx.tolist(), result.similarity.tolist()))


@pytest.fixture(params=["kernel", "torch"])
def scan(request, monkeypatch):
    """The CPU kernel, or the torch operations other devices use (run here on the CPU)."""
    if request.param == "torch":
        monkeypatch.setattr(search, "_use_cpu_kernel", lambda device: False)
    return request.param


@pytest.fixture
def small_buffers(monkeypatch):
    """Candidate buffers too small for the fixtures: rows overflow the kernel's per-row buffer and
    the pass's candidate buffer is pruned and grown."""
    monkeypatch.setattr(search, "ROW_CANDIDATES", 2)
    return 5


FIXTURE = (61, 47)  # queries, keys


def fixture(dtype):
    rng = np.random.default_rng(7)
    queries, keys = grid_rows(rng, FIXTURE[0]), grid_rows(rng, FIXTURE[1])
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T
    return queries.astype(dtype), keys.astype(dtype), sims


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block_size", [5, 16, 64])
@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_threshold_pass_equals_brute_force(scan, small_buffers, dtype, block_size, top_k):
    queries, keys, sims = fixture(dtype)
    sigma = 0.0625  # a multiple of 1/64 many pairs hit exactly
    assert (sims == sigma).sum() > 5 and ((sims >= sigma).sum(axis=1) > 2 * search.ROW_CANDIDATES).any()
    result = search_pass(queries, keys, sigma, top_k=top_k, block_size=block_size, candidate_capacity=small_buffers)
    assert as_pairs(result.pairs) == reference(sims, sigma, top_k)
    assert result.pairs.query_idx.dtype == np.int64 and result.pairs.similarity.dtype == np.float32
    assert result.sigma == sigma and result.pairs_at_sigma == (sims >= sigma).sum()
    assert np.array_equal(result.histogram.counts, reference_histogram(sims).counts)
    assert result.histogram_queries == len(queries)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block_size", [5, 16, 64])
@pytest.mark.parametrize("top_k", [None, 1, 3])
@pytest.mark.parametrize("keep_fraction", [0.02, 0.3])
def test_keep_fraction_pass_equals_two_passes_and_brute_force(scan, small_buffers, dtype, block_size, top_k,
                                                              keep_fraction):
    queries, keys, sims = fixture(dtype)
    histogram = reference_histogram(sims)
    sigma = histogram.value_at_keep_fraction(keep_fraction)
    result = search_pass(queries, keys, keep_fraction=keep_fraction, top_k=top_k, block_size=block_size,
                         candidate_capacity=small_buffers)
    assert result.sigma == sigma
    assert np.array_equal(result.histogram.counts, histogram.counts)
    assert as_pairs(result.pairs) == reference(sims, sigma, top_k)
    assert result.pairs_at_sigma == (sims >= sigma).sum() >= np.ceil(keep_fraction * sims.size)
    two_passes = search_pass(queries, keys, sigma, top_k=top_k, block_size=block_size)  # sigma known
    assert as_pairs(result.pairs) == as_pairs(two_passes.pairs)
    assert result.pairs_at_sigma == two_passes.pairs_at_sigma


def test_keep_fraction_on_random_embeddings_equals_the_pass_with_sigma_known(scan):
    """Float similarities (bins hit off their edges by float32 rounding): the pass with sigma read
    from its own histogram keeps what a second pass with that sigma keeps."""
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((300, 32)).astype(np.float32)
    keys = rng.standard_normal((170, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    queries, keys = queries.astype(np.float16), keys.astype(np.float16)
    for top_k in (None, 2):
        one = search_pass(queries, keys, keep_fraction=0.01, top_k=top_k, block_size=64, candidate_capacity=50)
        two = search_pass(queries, keys, one.sigma, top_k=top_k, block_size=64)
        assert as_pairs(one.pairs) == as_pairs(two.pairs) and len(one.pairs.query_idx) > 0
        assert one.pairs_at_sigma == two.pairs_at_sigma
        assert np.array_equal(one.histogram.counts, two.histogram.counts)
        assert one.pairs_at_sigma >= np.ceil(0.01 * queries.shape[0] * keys.shape[0])


def test_histogram_of_sampled_rows_and_no_histogram(scan):
    queries, keys, sims = fixture(np.float16)
    sampled = search_pass(queries, keys, 0.25, histogram_queries=10, block_size=16)
    rows = np.linspace(0, len(queries) - 1, 10).round().astype(np.int64)
    assert sampled.histogram_queries == 10
    assert np.array_equal(sampled.histogram.counts, reference_histogram(sims[rows]).counts)
    assert as_pairs(sampled.pairs) == reference(sims, 0.25, None)
    none = search_pass(queries, keys, 0.25, histogram_queries=0, block_size=16)
    assert none.histogram is None and as_pairs(none.pairs) == as_pairs(sampled.pairs)
    only_histogram = search_pass(queries, keys, block_size=16)
    assert len(only_histogram.pairs.query_idx) == 0
    assert np.array_equal(only_histogram.histogram.counts, reference_histogram(sims).counts)
    with pytest.raises(ClapcurateError, match="histogram_queries"):
        search_pass(queries, keys, keep_fraction=0.1, histogram_queries=10)


def test_search_pass_refuses_bad_arguments():
    queries, keys, _ = fixture(np.float32)
    with pytest.raises(ClapcurateError, match="either sigma or keep_fraction"):
        search_pass(queries, keys, 0.5, 0.1)
    with pytest.raises(ClapcurateError, match="keep_fraction"):
        search_pass(queries, keys, keep_fraction=1.5)
    with pytest.raises(ClapcurateError, match="top_k"):
        search_pass(queries, keys, 0.5, top_k=0)
    with pytest.raises(ClapcurateError, match="block_size"):
        search_pass(queries, keys, 0.5, block_size=0)


def test_best_key_and_threshold_search_on_tensors_and_float16(scan):
    queries, keys, sims = fixture(np.float16)
    index, value = best_key(torch.from_numpy(queries), torch.from_numpy(keys), block_size=16)
    expected = np.lexsort((np.broadcast_to(np.arange(sims.shape[1]), sims.shape), -sims), axis=1)[:, 0]
    assert np.array_equal(index, expected) and np.array_equal(value, sims.max(axis=1).astype(np.float32))
    found = threshold_search(torch.from_numpy(queries), keys, 0.125, block_size=9, top_k=2)
    assert as_pairs(found) == reference(sims, 0.125, 2)


def hub_world(rng, n_queries=400, n_keys=80, d=32, hubs=2):
    """Queries that are noisy copies of one key each (their true key), all sharing a common
    direction; the first `hubs` keys are planted hubs: that common direction, close to every query."""
    common = rng.standard_normal(d)
    keys = rng.standard_normal((n_keys, d))
    keys[:hubs] = common + 0.3 * rng.standard_normal((hubs, d))
    truth = rng.integers(hubs, n_keys, n_queries)
    queries = keys[truth] + 0.9 * rng.standard_normal((n_queries, d)) + 1.2 * common
    unit = [(rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16) for rows in (queries, keys)]
    return unit[0], unit[1], truth


@pytest.mark.parametrize("selection", ["csls", "mutual"])
def test_hub_aware_selection_equals_brute_force(scan, small_buffers, selection):
    """Grid embeddings (ties, values on sigma and on bin edges): the pass under csls / mutual
    keeps what the brute-force scores give, for a sigma and a keep_fraction, with and without
    top-k, blocks that do not divide N and M, a k larger than one side, overflowing buffers."""
    queries, keys, sims = fixture(np.float16)
    low, high = (-4.0, 4.0) if selection == "csls" else (-1.0, 1.0)
    for k, block_size, top_k, sigma, keep_fraction in [(3, 16, None, 0.0625, None), (3, 5, 2, None, 0.05),
                                                       (60, 64, 1, None, 0.3), (5, 16, None, None, 0.02)]:
        scores = reference_scores(sims, selection, k)
        histogram = reference_histogram(scores, low, high)
        if keep_fraction is not None:
            sigma = histogram.value_at_keep_fraction(keep_fraction)
        result = search_pass(queries, keys, None if keep_fraction else sigma, keep_fraction, top_k,
                             block_size=block_size, candidate_capacity=small_buffers, selection=selection,
                             selection_k=k)
        expected = reference(scores, sigma, top_k)
        assert as_pairs(result.pairs) == expected and expected
        assert result.sigma == sigma and result.pairs_at_sigma == (scores >= np.float32(sigma)).sum()
        assert np.array_equal(result.histogram.counts, histogram.counts)
        assert (result.histogram.low, result.histogram.high) == (low, high)


def test_hub_aware_selection_lowers_the_planted_hubs_share(scan):
    """Random float16 embeddings with two planted hub keys: at one keep_fraction the raw cosine
    gives most pairs to the hubs; csls and mutual give them a far smaller share and more pairs to
    the queries' true keys, exactly as the brute-force scores do."""
    queries, keys, truth = hub_world(np.random.default_rng(5))
    sims = queries.astype(np.float32) @ keys.astype(np.float32).T
    share, right = {}, {}
    for selection in ("cosine", "csls", "mutual"):
        result = search_pass(queries, keys, keep_fraction=0.004, top_k=1, block_size=48, candidate_capacity=40,
                             selection=selection, selection_k=5)
        pairs = result.pairs
        if selection != "cosine":
            scores = reference_scores(sims, selection, 5)
            assert result.sigma == reference_histogram(scores, result.histogram.low,
                                                       result.histogram.high).value_at_keep_fraction(0.004)
            assert as_pairs(pairs) == reference(scores, result.sigma, 1)
        share[selection] = np.isin(pairs.key_idx, [0, 1]).mean()
        right[selection] = (pairs.key_idx == truth[pairs.query_idx]).mean()
    assert share["cosine"] > 0.5 and share["csls"] < share["cosine"] / 2 and share["mutual"] < share["cosine"] / 2
    assert right["csls"] > right["cosine"] and right["mutual"] > right["cosine"]


def test_selection_refuses_bad_arguments():
    queries, keys, _ = fixture(np.float32)
    with pytest.raises(ClapcurateError, match="selection must be one of cosine, csls, mutual"):
        search_pass(queries, keys, 0.5, selection="hubless")
    with pytest.raises(ClapcurateError, match="selection_k"):
        search_pass(queries, keys, 0.5, selection="csls", selection_k=0)


def test_curation_config_checks_the_selection_and_what_sigma_means_under_it(tmp_path):
    """A wrong selection or k, a sigma outside the score's range, and csls without a threshold
    (the paper's default sigma is a cosine) are refused naming the key."""
    from clapcurate.curate import load_curation_config
    from clapcurate.curate.stage import check_curation_inputs
    from clapcurate.errors import ConfigError

    base = {"teacher": str(tmp_path), "train_manifest": "t.csv", "out_dir": str(tmp_path / "out"),
            "pool_manifest": "p.csv"}
    for settings, message in [({"selection": "hubless"}, "selection must be one of cosine, csls, mutual"),
                              ({"selection": "mutual", "selection_k": 0}, "selection_k must be at least 1"),
                              ({"selection": "mutual", "sigma": 1.5}, "sigma is a cosine similarity"),
                              ({"selection": "csls", "sigma": 4.5}, "sigma is a CSLS score")]:
        with pytest.raises(ConfigError, match=message):
            load_curation_config(data={**base, **settings})
    assert load_curation_config(data={**base, "selection": "csls", "sigma": 1.5}).sigma == 1.5
    with pytest.raises(ConfigError, match="selection csls: sigma applies to the CSLS score"):
        check_curation_inputs("du", load_curation_config(data={**base, "selection": "csls"}))
