"""Curation: blocked threshold search against brute force, the keep_fraction quantile, DU / DS /
ADS Improvement-Sets, exclusion of training clips, refusal of benchmark audio, stats."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from clapcurate import method
from clapcurate.curate import (
    shared_source_mask,
    curate_ads,
    curate_ds,
    curate_du,
    load_curation_config,
    refuse_benchmark_audio,
    threshold_from,
    run_curation,
    training_clip_mask,
)
from clapcurate.search import SimilarityHistogram, search_pass, similarity_histogram, threshold_search
from clapcurate.data.manifest import read_manifest, write_manifest
from clapcurate.errors import ClapcurateError, ConfigError


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
    counted = search_pass(queries, keys, sigma, top_k=top_k, block_size=block_size)
    counted, before_cap = counted.pairs, counted.pairs_at_sigma
    assert as_pairs(counted) == as_pairs(result) and before_cap == (sims >= sigma).sum()


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


def test_keep_fraction_resolves_to_the_quantile_within_one_bin(caplog):
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(200, 16)).astype(np.float32)
    keys = rng.normal(size=(150, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    all_sims = np.sort((queries @ keys.T).ravel())[::-1]
    keep_fraction = 0.01
    histogram = search_pass(queries, keys, block_size=64).histogram
    with caplog.at_level("INFO", logger="clapcurate.curate"):
        sigma = threshold_from(None, keep_fraction, histogram, "du")
    assert f"resolved to sigma = {sigma:.6f}" in caplog.text
    wanted = int(np.ceil(keep_fraction * all_sims.size))
    assert histogram.total == all_sims.size
    assert abs(sigma - all_sims[wanted - 1]) <= histogram.bin_width
    kept = len(threshold_search(queries, keys, sigma, block_size=64).query_idx)
    in_bin = ((all_sims >= sigma) & (all_sims < sigma + histogram.bin_width)).sum()
    assert wanted <= kept <= wanted + in_bin


def test_threshold_defaults_to_the_method_settings_and_refuses_both():
    assert threshold_from(None, None, None, "du") == 0.7
    assert threshold_from(None, None, None, "ds") == method.SIGMA["ds"]
    assert threshold_from(0.75, None, None, "ads") == 0.75
    with pytest.raises(ClapcurateError, match="either sigma or keep_fraction"):
        threshold_from(0.7, 0.1, SimilarityHistogram.empty(), "du")


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


# --------------------------------------------------------------------------- DU / DS / ADS


def unit(*weights, d=6):
    vector = np.zeros(d, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


@pytest.fixture
def pool_clips():
    return pd.DataFrame({"clip_id": ["p0", "p1", "p2", "p3"],
                         "audio_path": [f"/pool/p{i}.wav" for i in range(4)], "source": "pool"})


@pytest.fixture
def pool_embeddings():
    # p0 = dog, p1 = halfway between dog and rain (cosine 0.707 with both), p2 = rain, p3 = siren
    return np.stack([unit(1), unit(1, 1), unit(0, 1), unit(0, 0, 1)])


@pytest.fixture
def train_rows():
    return pd.DataFrame({"id": ["t0", "t1", "t2", "t3"], "clip_id": ["c0", "c1", "c2", "c3"],
                         "audio_path": [f"/train/c{i}.wav" for i in range(4)],
                         "caption": ["a dog barks", "rain falls", "a dog barks", "wind in trees"],
                         "label": "", "source": "captions"})


@pytest.fixture
def caption_embeddings():
    return np.stack([unit(1), unit(0, 1), unit(1), unit(0, 0, 0, 1)])  # aligned with train_rows


def test_du_keeps_pairs_at_or_above_sigma_once_per_distinct_caption(pool_embeddings, pool_clips,
                                                                    caption_embeddings, train_rows):
    du = curate_du(pool_embeddings, pool_clips, caption_embeddings, train_rows, sigma=float(unit(1, 1)[0]))
    assert list(zip(du.rows["clip_id"], du.rows["caption"])) == [
        ("p0", "a dog barks"), ("p1", "a dog barks"), ("p1", "rain falls"), ("p2", "rain falls")]
    assert list(du.rows["source_id"]) == ["t0", "t0", "t1", "t1"]  # the shared caption credits its first row
    assert du.rows["id"].is_unique and set(du.rows["method"]) == {"du"}
    assert list(du.rows["audio_path"]) == ["/pool/p0.wav", "/pool/p1.wav", "/pool/p1.wav", "/pool/p2.wav"]
    np.testing.assert_allclose(du.rows["similarity"], [1.0, unit(1, 1)[0], unit(1, 1)[0], 1.0], atol=1e-6)
    assert du.sigma == pytest.approx(0.7071, abs=1e-4) and du.histogram.total > 0


def test_du_top_caption_per_clip_breaks_ties_by_caption_order(pool_embeddings, pool_clips,
                                                              caption_embeddings, train_rows):
    du = curate_du(pool_embeddings, pool_clips, caption_embeddings, train_rows, sigma=0.5, max_captions_per_clip=1)
    assert list(zip(du.rows["clip_id"], du.rows["caption"])) == [
        ("p0", "a dog barks"), ("p1", "a dog barks"), ("p2", "rain falls")]
    assert du.pairs_before_cap == 4  # p1 reached sigma with both captions; the cap kept one
    from clapcurate.curate.stage import histogram_title

    assert histogram_title(du, 1) == "DU: 4 pairs >= sigma, 3 kept (at most 1 caption per clip)"
    uncapped = curate_du(pool_embeddings, pool_clips, caption_embeddings, train_rows, sigma=0.5)
    assert uncapped.pairs_before_cap == len(uncapped.rows) == 4


def test_du_default_sigma_is_the_papers(pool_embeddings, pool_clips, caption_embeddings, train_rows):
    assert curate_du(pool_embeddings, pool_clips, caption_embeddings, train_rows).sigma == 0.7


def test_du_keep_fraction_resolves_sigma(pool_embeddings, pool_clips, caption_embeddings, train_rows):
    # 4 clips x 3 distinct captions = 12 pairs; the top quarter (3 pairs) are at 1.0 and 0.707
    du = curate_du(pool_embeddings, pool_clips, caption_embeddings, train_rows, keep_fraction=0.25)
    assert du.histogram.total == 12
    assert 0.70 < du.sigma <= float(unit(1, 1)[0])
    assert len(du.rows) == 4  # the two pairs tied at 0.707 are both kept


def test_du_refuses_misaligned_embeddings(pool_embeddings, pool_clips, caption_embeddings, train_rows):
    with pytest.raises(ClapcurateError, match="pool: 3 embeddings for 4 rows"):
        curate_du(pool_embeddings[:3], pool_clips, caption_embeddings, train_rows)


def test_ds_keeps_training_pairs_close_to_a_label_prompt(caption_embeddings, train_rows):
    prompt_embeddings = np.stack([unit(0, 1), unit(0.9, 0.1), unit(0, 0, 1)])  # rain, dog-ish, siren
    labels = ["rain", "dog", "siren"]
    ds = curate_ds(train_rows, caption_embeddings, prompt_embeddings, labels, sigma=0.99)
    assert list(ds.rows["source_id"]) == ["t0", "t1", "t2"]
    assert list(ds.rows["best_label"]) == ["dog", "rain", "dog"]
    assert list(ds.rows["clip_id"]) == ["c0", "c1", "c2"]  # the training pairs themselves
    assert ds.rows["id"].is_unique and set(ds.rows["method"]) == {"ds"}
    np.testing.assert_allclose(ds.rows["similarity"], [unit(0.9, 0.1)[0], 1.0, unit(0.9, 0.1)[0]], atol=1e-6)
    assert ds.histogram.total == 4
    exact = curate_ds(train_rows, caption_embeddings, prompt_embeddings, labels, sigma=1.0)
    assert list(exact.rows["source_id"]) == ["t1"]  # sigma is inclusive


def test_ds_needs_labels(caption_embeddings, train_rows):
    with pytest.raises(ClapcurateError, match="labels"):
        curate_ds(train_rows, caption_embeddings, np.zeros((0, 6), np.float32), [], sigma=0.5)


def test_ads_matches_ds_captions_to_the_pool_and_keeps_their_provenance(pool_embeddings, pool_clips,
                                                                        caption_embeddings, train_rows):
    prompt_embeddings = np.stack([unit(0, 1)])
    ds = curate_ds(train_rows, caption_embeddings, prompt_embeddings, ["rain"], sigma=0.9)
    ds_embeddings = caption_embeddings[[1]]  # the DS rows' captions
    ads = curate_ads(ds.rows, ds_embeddings, pool_embeddings, pool_clips, sigma=0.7)
    assert list(ads.rows["clip_id"]) == ["p1", "p2"]
    assert set(ads.rows["caption"]) == {"rain falls"}
    assert set(ads.rows["source_id"]) == {"t1"} and set(ads.rows["best_label"]) == {"rain"}
    assert set(ads.rows["method"]) == {"ads"}


def test_training_clips_are_marked_for_exclusion(pool_clips, train_rows):
    seen = train_rows.assign(clip_id=["p2", "c1", "c2", "p0"])
    assert training_clip_mask(pool_clips, seen).tolist() == [True, False, True, False]
    # the same file under another id (a folder: pool against a csv: training set) is excluded too
    same_file = train_rows.iloc[:1].assign(clip_id="audio/p1.wav", audio_path=pool_clips["audio_path"][1])
    assert training_clip_mask(pool_clips, same_file).tolist() == [False, True, False, False]


def test_pool_with_benchmark_audio_is_refused(tmp_path, pool_clips):
    benchmark_file = tmp_path / "bench.wav"
    benchmark_file.write_bytes(b"")
    benchmark = pd.DataFrame({"clip_id": ["esc:1"], "audio_path": [str(benchmark_file)]})
    refuse_benchmark_audio(pool_clips, benchmark, "esc50")  # disjoint: accepted
    with pytest.raises(ClapcurateError, match="1 clip.*'esc50'.*esc:1"):
        refuse_benchmark_audio(pd.concat([pool_clips, benchmark]), benchmark, "esc50")
    link = tmp_path / "pool_copy.wav"
    link.symlink_to(benchmark_file)
    disguised = pool_clips.assign(audio_path=[str(link), "/a", "/b", "/c"])
    with pytest.raises(ClapcurateError, match="pool_copy.wav"):
        refuse_benchmark_audio(disguised, benchmark, "esc50")


def test_pool_clips_cut_from_a_benchmark_recording_are_refused(pool_clips):
    benchmark = pd.DataFrame({"clip_id": ["esc50/1-100032-A-0.wav"], "audio_path": ["/bench/1-100032-A-0.wav"],
                              "recording_id": ["freesound:100032"]})
    unrelated = pool_clips.assign(recording_id=["freesound:7", "", "youtube:x", ""])
    refuse_benchmark_audio(unrelated, benchmark, "esc50")  # no recording in common (empty ids never match)
    assert not shared_source_mask(unrelated.assign(recording_id=""), benchmark.assign(recording_id="")).any()
    same_sound = unrelated.assign(recording_id=["freesound:7", "freesound:100032", "", ""])
    assert shared_source_mask(same_sound, benchmark).tolist() == [False, True, False, False]
    with pytest.raises(ClapcurateError, match=r"1 clip\(s\) cut from the source recordings of the target benchmark "
                                              r"'esc50' \(e.g. 'p1' of freesound:100032\)"):
        refuse_benchmark_audio(same_sound, benchmark, "esc50")


@pytest.mark.parametrize("disguise", ["copy", "hard_link", "flac"])
def test_pool_file_with_a_benchmark_clips_content_is_refused(tmp_path, disguise):
    rng = np.random.default_rng(0)
    bench_dir, pool_dir = tmp_path / "bench", tmp_path / "pool"
    bench_dir.mkdir(), pool_dir.mkdir()
    clips = [(0.2 * rng.standard_normal(8000)).astype(np.float32) for _ in range(3)]
    for i, clip in enumerate(clips):
        soundfile.write(bench_dir / f"{i}.wav", clip, 16000, subtype="PCM_16")
        other = clip[::-1].copy() if i else np.concatenate([clip, clip[:10]])  # same size / same length, other audio
        soundfile.write(pool_dir / f"own{i}.wav", other, 16000, subtype="PCM_16")
    source = bench_dir / "1.wav"
    if disguise == "copy":
        (pool_dir / "renamed.wav").write_bytes(source.read_bytes())
        disguised = pool_dir / "renamed.wav"
    elif disguise == "hard_link":
        disguised = pool_dir / "linked.wav"
        disguised.hardlink_to(source)
    else:
        samples, rate = soundfile.read(source, dtype="int16")
        disguised = pool_dir / "reencoded.flac"
        soundfile.write(disguised, samples, rate, subtype="PCM_16")
    benchmark = pd.DataFrame({"clip_id": [f"esc:{i}" for i in range(3)],
                              "audio_path": [str(bench_dir / f"{i}.wav") for i in range(3)]})
    own = pd.DataFrame({"clip_id": [f"p{i}" for i in range(3)], "audio_path": [str(pool_dir / f"own{i}.wav") for i in range(3)]})
    refuse_benchmark_audio(own, benchmark, "esc50")  # other audio of the same size or length: accepted
    pool = pd.concat([own, pd.DataFrame({"clip_id": ["p9"], "audio_path": [str(disguised)]})], ignore_index=True)
    with pytest.raises(ClapcurateError, match=rf"1 file.*{disguised.name} has the content of .*bench/1.wav"):
        refuse_benchmark_audio(pool, benchmark, "esc50")


def test_content_check_reads_a_rewritten_file_again(tmp_path):
    """The digests are remembered per version of a file: a pool file rewritten with a benchmark
    clip's bytes after an accepted check is refused by the next check of the same process."""
    rng = np.random.default_rng(1)
    clip = (0.2 * rng.standard_normal(8000)).astype(np.float32)
    soundfile.write(tmp_path / "bench.wav", clip, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "pool.wav", clip[::-1].copy(), 16000, subtype="PCM_16")  # same size, other audio
    benchmark = pd.DataFrame({"clip_id": ["esc:0"], "audio_path": [str(tmp_path / "bench.wav")]})
    pool = pd.DataFrame({"clip_id": ["p0"], "audio_path": [str(tmp_path / "pool.wav")]})
    refuse_benchmark_audio(pool, benchmark, "esc50")
    before = (tmp_path / "pool.wav").stat().st_mtime_ns
    (tmp_path / "pool.wav").write_bytes((tmp_path / "bench.wav").read_bytes())
    os.utime(tmp_path / "pool.wav", ns=(before + 10**9, before + 10**9))  # a later write, beyond the clock's tick
    with pytest.raises(ClapcurateError, match="pool.wav has the content of"):
        refuse_benchmark_audio(pool, benchmark, "esc50")


# --------------------------------------------------------------------------- the stage


def write_tones(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        t = np.arange(int((0.5 + 0.3 * i) * 16000)) / 16000
        soundfile.write(folder / f"{name}.wav", (0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t)).astype(np.float32), 16000)
        paths.append(str(folder / f"{name}.wav"))
    return paths


@pytest.fixture
def world(tmp_path, tiny_clap):
    """A teacher, a training manifest (4 pairs, one caption shared), a pool of 6 readable clips plus
    one clip the teacher trained on and one broken file, and a benchmark whose audio does not exist
    (so reading it would fail)."""
    from clapcurate.model.checkpoints import save

    teacher = save(tiny_clap, tmp_path / "teacher")
    train_paths = write_tones(tmp_path / "train", ["c0", "c1", "c2", "c3"])
    train = pd.DataFrame({"id": ["t0", "t1", "t2", "t3"], "clip_id": ["c0", "c1", "c2", "c3"],
                          "audio_path": train_paths,
                          "caption": ["a dog barks", "rain on a roof", "a dog barks", "a siren wails"]})
    pool_paths = write_tones(tmp_path / "pool", [f"p{i}" for i in range(6)])
    (tmp_path / "pool" / "broken.wav").write_bytes(b"not audio")
    pool = pd.DataFrame({"id": [f"p{i}" for i in range(6)] + ["seen", "broken"],
                         "clip_id": [f"p{i}" for i in range(6)] + ["c0", "broken"],
                         "audio_path": pool_paths + [train_paths[0], str(tmp_path / "pool" / "broken.wav")],
                         "source": "pool"})
    benchmark = pd.DataFrame({"id": ["b0", "b1", "b2"], "clip_id": ["esc:0", "esc:1", "esc:2"],
                              "audio_path": [str(tmp_path / "bench" / f"{i}.wav") for i in range(3)],
                              "label": ["dog_bark", "rain", "siren"]})
    config = {"teacher": str(teacher), "train_manifest": str(write_manifest(train, tmp_path / "train.csv")),
              "pool_manifest": str(write_manifest(pool, tmp_path / "pool.csv")),
              "benchmark": "esc50", "benchmark_manifest": str(write_manifest(benchmark, tmp_path / "esc50.csv")),
              "batch_size": 4, "shard_size": 3, "progress": False,
              "pool_embeddings": str(tmp_path / "emb" / "pool"), "caption_embeddings": str(tmp_path / "emb" / "text")}
    return tmp_path, config


def read_outputs(manifest_path):
    rows = read_manifest(manifest_path)
    stats = json.loads((manifest_path.parent / "stats.json").read_text())
    png = (manifest_path.parent / "similarity_histogram.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    return rows, stats


def config_file(tmp_path, data, name):
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_du_stage_excludes_training_clips_and_counts_what_it_wrote(world):
    tmp_path, config = world
    path = config_file(tmp_path, {**config, "out_dir": str(tmp_path / "du")}, "du")
    manifest = run_curation("du", load_curation_config(path, ["keep_fraction=0.4"]))
    rows, stats = read_outputs(manifest)
    assert len(rows) > 0 and "c0" not in set(rows["clip_id"]) and "broken" not in set(rows["clip_id"])
    assert stats["pairs"] == len(rows) and stats["clips"] == rows["clip_id"].nunique()
    assert stats["captions"] == rows["caption"].nunique()
    assert stats["excluded_training_clips"] == 1 and stats["unreadable_pool_clips"] == 1
    assert stats["pool_clips"] == 8 and stats["candidate_captions"] == 3
    assert stats["keep_fraction"] == 0.4 and stats["similarity"]["min"] >= stats["sigma"]
    assert len(rows) >= 0.4 * 6 * 3  # keep_fraction of the 6 x 3 pairs, at least
    assert set(rows["source_id"]) <= {"t0", "t1", "t3"} and set(rows["method"]) == {"du"}
    skipped = pd.read_csv(tmp_path / "emb" / "pool" / "skipped.csv")
    assert list(skipped["id"]) == ["broken"]


def test_ds_then_ads_stages(world):
    tmp_path, config = world
    ds_path = run_curation("ds", load_curation_config(data={**config, "out_dir": str(tmp_path / "ds"),
                                                             "keep_fraction": 0.5}))
    ds_rows, ds_stats = read_outputs(ds_path)
    assert ds_stats["pairs"] == len(ds_rows) >= 2 and ds_stats["labels"] == 3
    assert ds_stats["benchmark"] == "esc50" and set(ds_rows["best_label"]) <= {"dog_bark", "rain", "siren"}
    assert set(ds_rows["clip_id"]) <= {"c0", "c1", "c2", "c3"}
    ads_path = run_curation("ads", load_curation_config(data={
        **config, "out_dir": str(tmp_path / "ads"), "ds_manifest": str(ds_path), "sigma": -1.0,
        "max_captions_per_clip": 1}))
    ads_rows, ads_stats = read_outputs(ads_path)
    assert list(ads_rows["clip_id"]) == [f"p{i}" for i in range(6)]  # every clip gets its best DS caption
    assert set(ads_rows["caption"]) <= set(ds_rows["caption"])
    ds_label = dict(zip(ds_rows["source_id"], ds_rows["best_label"]))
    assert all(ds_label[s] == label for s, label in zip(ads_rows["source_id"], ads_rows["best_label"]))
    assert ads_stats["pairs"] == 6 and ads_stats["clips"] == 6 and ads_stats["sigma"] == -1.0
    # every pool clip x DS caption reached sigma = -1; the cap kept one caption per clip
    n_captions = ds_rows["caption"].nunique()
    assert ads_stats["pairs_at_sigma"] == {"before_cap": 6 * n_captions, "after_cap": 6} and n_captions > 1
    assert ds_stats["pairs_at_sigma"] == {"before_cap": len(ds_rows), "after_cap": len(ds_rows)}


def test_pool_holding_benchmark_audio_is_refused_before_any_audio_is_read(world):
    tmp_path, config = world
    pool = read_manifest(config["pool_manifest"])
    bench = read_manifest(config["benchmark_manifest"])
    leaky = write_manifest(pd.concat([pool, bench.iloc[:1]]), tmp_path / "leaky_pool.csv")
    with pytest.raises(ClapcurateError, match="target benchmark 'esc50'"):
        run_curation("du", load_curation_config(data={**config, "pool_manifest": str(leaky),
                                                      "out_dir": str(tmp_path / "du")}))
    assert not (tmp_path / "emb" / "pool").exists()


def test_pool_clips_of_the_teachers_recordings_are_dropped_and_benchmark_clips_it_heard_counted(world, caplog):
    """Contamination by source: another segment of a video the teacher trained on is dropped from
    the pool (counted apart from the teacher's own clips); benchmark clips cut from the teacher's
    recordings are counted and warned about."""
    tmp_path, config = world
    train = read_manifest(config["train_manifest"]).assign(recording_id=["youtube:v0", "youtube:v9", "", "youtube:v3"])
    pool = read_manifest(config["pool_manifest"])
    pool = pool.assign(recording_id=["youtube:v0", "youtube:v3", *[""] * (len(pool) - 2)])
    bench = read_manifest(config["benchmark_manifest"]).assign(recording_id=["freesound:1", "youtube:v9", ""])
    data = {**config, "train_manifest": str(write_manifest(train, tmp_path / "train_rec.csv")),
            "pool_manifest": str(write_manifest(pool, tmp_path / "pool_rec.csv")),
            "benchmark_manifest": str(write_manifest(bench, tmp_path / "bench_rec.csv")),
            "pool_embeddings": str(tmp_path / "emb" / "pool_rec"), "out_dir": str(tmp_path / "du_rec"), "sigma": -1.0}
    with caplog.at_level(logging.WARNING, logger="clapcurate.curate"):
        rows, stats = read_outputs(run_curation("du", load_curation_config(data=data)))
    assert stats["excluded_training_clips"] == 1 and stats["excluded_training_sources"] == 2
    assert not {"p0", "p1", "c0"} & set(rows["clip_id"])
    assert stats["benchmark_clips_from_teacher_sources"] == 1
    assert "2 pool clip(s) come from source recordings the teacher trained on" in caplog.text
    assert "1 of the 3 clips of the benchmark 'esc50' come from recordings the teacher trained on" in caplog.text


def test_stage_summary_on_planted_degenerate_pools(world):
    """A pool with a byte copy of a clip and a 2-ms clip, curated at sigma = -1 (far too low) and at
    sigma = 1 (0 pairs): the copies are reported, the 2-ms clip skipped with its reason, and
    stats.json holds the summary and the warnings with their numbers."""
    tmp_path, config = world
    pool = read_manifest(config["pool_manifest"])
    copy = tmp_path / "pool" / "copy_of_p2.wav"
    copy.write_bytes(open(pool["audio_path"][2], "rb").read())
    click = tmp_path / "pool" / "click.wav"
    soundfile.write(click, np.full(32, 0.5, np.float32), 16000)  # 2 ms
    planted = pd.concat([pool, pd.DataFrame({"id": ["copy", "click"], "clip_id": ["copy", "click"],
                                             "audio_path": [str(copy), str(click)], "source": "pool"})])
    data = {**config, "pool_manifest": str(write_manifest(planted, tmp_path / "planted.csv")),
            "pool_embeddings": str(tmp_path / "emb" / "planted"), "held_out_fraction": 0.5}
    rows, stats = read_outputs(run_curation("du", load_curation_config(data={**data, "out_dir": str(tmp_path / "low"),
                                                                              "sigma": -1.0})))
    skipped = pd.read_csv(tmp_path / "emb" / "planted" / "skipped.csv")
    assert skipped.set_index("id")["reason"]["click"].startswith("near-empty: 2.0 ms of audio")
    assert stats["duplicate_clips"] == 1 and sorted(stats["duplicate_examples"][0]) == sorted(
        [str(copy), pool["audio_path"][2]])
    assert any(w.startswith("1 curated clips hold the same audio as another") for w in stats["warnings"])
    assert stats["sigma_from"] == "given" and stats["pairs"] == len(rows) == 7 * 3
    assert stats["teacher_reference"]["clips"] >= 1 and stats["pairs_searched"] == 7 * 3
    assert (tmp_path / "low" / "teacher_reference.png").read_bytes().startswith(b"\x89PNG")
    assert any("sigma = -1.0000 lies below the bulk of the teacher's held-out matched pairs" in w
               for w in stats["warnings"])
    assert sum(entry["pairs"] for entry in stats["top_captions"]) == stats["pairs"]
    _, empty = read_outputs(run_curation("du", load_curation_config(data={**data, "out_dir": str(tmp_path / "high"),
                                                                           "sigma": 1.0})))
    assert empty["pairs"] == 0 and empty["estimated_precision"] is None
    [zero] = [w for w in empty["warnings"] if w.startswith("0 pairs")]
    assert f"(the highest similarity seen is {empty['highest_similarity']:.4f}); sigma = " \
           f"{empty['sigma_keeping_suggested_pairs']:.4f} would keep about 100 pairs: lower sigma" in zero


def test_embed_and_curate_commands_print_the_duplicates_summary_and_warnings(world, capsys, monkeypatch):
    from clapcurate.cli import main

    tmp_path, config = world
    pool = read_manifest(config["pool_manifest"])
    copy = tmp_path / "pool" / "p4_again.wav"
    copy.write_bytes(open(pool["audio_path"][4], "rb").read())
    planted = write_manifest(pd.concat([pool, pd.DataFrame({"id": ["again"], "clip_id": ["again"],
                                                             "audio_path": [str(copy)]})]), tmp_path / "copied.csv")
    assert main(["embed", "--model", config["teacher"], "--manifest", str(planted), "--out",
                 str(tmp_path / "emb" / "copied"), "--batch-size", "4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # the fixture's p0 is c0's tone, which the pool also holds as "seen"; p4_again is planted
    assert "warning: 2 embedded clip(s) repeat the audio of another (2 group(s), e.g. " in out
    assert f"{pool['audio_path'][0]} = {pool['audio_path'][6]}" in out
    # above the pairwise search's bound the command says where to look instead, and searches nothing
    monkeypatch.setattr("clapcurate.content.EMBEDDED_DUPLICATES_MAX", 5)
    assert main(["embed", "--model", config["teacher"], "--manifest", str(planted), "--out",
                 str(tmp_path / "emb" / "copied"), "--batch-size", "4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    embedded = int(out.split(" audio embeddings in ")[0].split()[-1])
    assert f"{embedded} clips: more than 5, so duplicate audio is not looked for here" in out
    assert "repeat the audio" not in out
    monkeypatch.undo()
    path = config_file(tmp_path, {**config, "pool_manifest": str(planted), "pool_embeddings": str(tmp_path / "emb" / "copied"),
                                  "out_dir": str(tmp_path / "cli"), "sigma": 0.999999}, "cli")
    assert main(["curate", "du", "--config", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "DU Improvement-Set: 0 pairs, 0 clips, 0 captions" in out and "sigma = 1.0000 (given)" in out
    assert "warning: 0 pairs reach sigma = 1.0000" in out and "would keep about 100 pairs" in out
    assert f"Improvement-Set written to {tmp_path / 'cli' / 'improvement_set.csv'}" in out


def test_stage_config_errors_name_the_key(world):
    tmp_path, config = world
    with pytest.raises(ConfigError, match="ds_manifest"):
        run_curation("ads", load_curation_config(data={**config, "out_dir": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match="unknown config key sigma_du"):
        load_curation_config(data={**config, "out_dir": "x", "sigma_du": 0.7})
    with pytest.raises(ConfigError, match="either sigma or keep_fraction"):
        run_curation("ds", load_curation_config(data={**config, "out_dir": str(tmp_path / "x"),
                                                     "sigma": 0.7, "keep_fraction": 0.1}))


def test_ds_prompts_follow_the_target_tasks_template_and_label_words(world):
    tmp_path, config = world
    words = tmp_path / "words.yaml"
    words.write_text("dog_bark: a dog barks\n")
    path = run_curation("ds", load_curation_config(data={
        **config, "out_dir": str(tmp_path / "ds_words"), "benchmark": "my_pets", "template": "{label}",
        "label_words": str(words), "sigma": 0.9999}))
    rows, stats = read_outputs(path)
    assert stats["benchmark"] == "my_pets"
    barks = rows[rows["caption"] == "a dog barks"]  # the caption is the prompt of dog_bark, word for word
    assert len(barks) == 2 and (barks["best_label"] == "dog_bark").all()
    assert np.allclose(barks["similarity"], 1.0, atol=1e-3)
    with pytest.raises(ConfigError, match="template must contain"):
        load_curation_config(data={**config, "out_dir": str(tmp_path / "x"), "template": "a sound of {lable}"})
