"""The one-pass blocked search (`clapcurate.search.search_pass`) against a brute-force reference over
the full similarity matrix: pairs, similarities, histogram counts and sigma, exactly, for a given
sigma, a keep_fraction and top-k, on float16 and float32 inputs, on the CPU kernel and the torch
path, with blocks that do not divide N and M and with candidate buffers small enough to overflow."""

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


def reference_histogram(sims: np.ndarray) -> SimilarityHistogram:
    histogram = SimilarityHistogram.empty()
    histogram.add(torch.from_numpy(sims.astype(np.float32).ravel().copy()))
    return histogram


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
