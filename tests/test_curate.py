"""Curation: blocked threshold search against brute force, the keep_fraction quantile, DU / DS /
ADS Improvement-Sets, exclusion of training clips, refusal of benchmark audio, stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapcurate.curate import (
    SimilarityHistogram,
    resolve_sigma,
    similarity_histogram,
    threshold_search,
)
from clapcurate.errors import ClapcurateError


def brute_force(queries: np.ndarray, keys: np.ndarray, sigma: float, top_k: int | None = None):
    """Reference: the full similarity matrix; per query keys by (-similarity, key), first k, >= sigma."""
    sims = queries.astype(np.float64) @ keys.astype(np.float64).T
    pairs = []
    for q in range(len(queries)):
        ranked = sorted(range(len(keys)), key=lambda k: (-sims[q, k], k))[: top_k or len(keys)]
        pairs += [(q, k, sims[q, k]) for k in ranked if sims[q, k] >= sigma]
    return pairs


def as_pairs(result):
    return list(zip(result.query_idx.tolist(), result.key_idx.tolist(), result.similarity.tolist()))


def grid_embeddings(rng, n, d=8):
    """Vectors with entries in {-1, -0.5, 0, 0.5, 1}: every dot product is exact in float32,
    so many pairs tie and many sit exactly on a threshold."""
    return (rng.integers(-2, 3, size=(n, d)) / 2).astype(np.float32)


@pytest.mark.parametrize("block_size", [1, 3, 8, 64])
@pytest.mark.parametrize("top_k", [None, 1, 3, 40])
def test_search_equals_brute_force_with_ties_and_exact_threshold(block_size, top_k):
    rng = np.random.default_rng(block_size)
    queries, keys = grid_embeddings(rng, 23), grid_embeddings(rng, 17)
    sigma = 1.5  # a value that many exact dot products hit
    sims = queries.astype(np.float64) @ keys.T
    assert (sims == sigma).sum() > 5, "the fixture must contain pairs exactly at sigma"
    result = threshold_search(queries, keys, sigma, block_size=block_size, top_k=top_k)
    assert as_pairs(result) == brute_force(queries, keys, sigma, top_k)
    assert result.query_idx.dtype == np.int64 and result.similarity.dtype == np.float32


def test_search_on_random_normalised_embeddings():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(300, 32)).astype(np.float32)
    keys = rng.normal(size=(130, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    sigma = 0.45
    result = threshold_search(queries, keys, sigma, block_size=50)
    expected = brute_force(queries, keys, sigma)
    assert len(expected) > 50
    assert [(q, k) for q, k, _ in as_pairs(result)] == [(q, k) for q, k, _ in expected]
    np.testing.assert_allclose(result.similarity, [s for _, _, s in expected], atol=1e-6)


def test_search_accepts_tensors_and_float16_memmaps(tmp_path):
    rng = np.random.default_rng(2)
    queries, keys = grid_embeddings(rng, 20), grid_embeddings(rng, 11)
    path = tmp_path / "queries.npy"
    np.save(path, queries.astype(np.float16))  # grid values are exact in float16
    from_memmap = threshold_search(np.load(path, mmap_mode="r"), keys, 1.0, block_size=4)
    from_tensor = threshold_search(torch.from_numpy(queries), torch.from_numpy(keys), 1.0, block_size=4)
    expected = brute_force(queries, keys, 1.0)
    assert as_pairs(from_memmap) == expected
    assert as_pairs(from_tensor) == expected


def test_search_with_no_hits_or_no_rows_is_empty():
    rng = np.random.default_rng(3)
    queries, keys = grid_embeddings(rng, 9), grid_embeddings(rng, 5)
    assert len(threshold_search(queries, keys, 100.0, block_size=2).query_idx) == 0
    assert len(threshold_search(queries, keys, 100.0, block_size=2, top_k=2).key_idx) == 0
    assert len(threshold_search(queries[:0], keys, 0.0).similarity) == 0


def test_search_rejects_mismatched_widths_and_bad_top_k():
    with pytest.raises(ClapcurateError, match="same width"):
        threshold_search(np.zeros((3, 4), np.float32), np.zeros((3, 5), np.float32), 0.5)
    with pytest.raises(ClapcurateError, match="top_k"):
        threshold_search(np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32), 0.5, top_k=0)


def test_keep_fraction_resolves_to_the_quantile_within_one_bin():
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(200, 16)).astype(np.float32)
    keys = rng.normal(size=(150, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    all_sims = np.sort((queries @ keys.T).ravel())[::-1]
    keep_fraction = 0.01
    sigma, histogram = resolve_sigma(queries, keys, None, keep_fraction, block_size=64)
    wanted = int(np.ceil(keep_fraction * all_sims.size))
    assert histogram.total == all_sims.size
    assert abs(sigma - all_sims[wanted - 1]) <= histogram.bin_width
    kept = len(threshold_search(queries, keys, sigma, block_size=64).query_idx)
    in_bin = ((all_sims >= sigma) & (all_sims < sigma + histogram.bin_width)).sum()
    assert wanted <= kept <= wanted + in_bin


def test_resolve_sigma_defaults_to_the_paper_and_refuses_both():
    assert resolve_sigma(np.zeros((1, 2)), np.zeros((1, 2)), None, None) == (0.7, None)
    assert resolve_sigma(np.zeros((1, 2)), np.zeros((1, 2)), 0.75, None) == (0.75, None)
    with pytest.raises(ClapcurateError, match="either sigma or keep_fraction"):
        resolve_sigma(np.zeros((1, 2)), np.zeros((1, 2)), 0.7, 0.1)


def test_histogram_counts_every_pair_and_clamps_out_of_range_values():
    rng = np.random.default_rng(5)
    queries, keys = grid_embeddings(rng, 10), grid_embeddings(rng, 7)  # dot products up to +-8
    histogram = similarity_histogram(queries, keys, block_size=3, bins=8)
    sims = (queries @ keys.T).ravel()
    assert histogram.total == sims.size
    assert histogram.counts[-1] >= (sims >= 1.0).sum() and histogram.counts[0] >= (sims <= -1.0).sum()
    sampled = similarity_histogram(queries, keys, block_size=3, bins=8, max_queries=4)
    assert sampled.total == 4 * len(keys)


def test_keep_fraction_must_be_a_fraction():
    histogram = SimilarityHistogram.empty(4)
    histogram.counts[:] = 1
    with pytest.raises(ClapcurateError, match="keep_fraction"):
        histogram.value_at_keep_fraction(1.5)
    assert histogram.value_at_keep_fraction(0.25) == 0.5
    assert histogram.value_at_keep_fraction(1.0) == -1.0
