"""The sharded feature store, the log-mel and text caches built on it, and evaluation that reuses
a benchmark's stored log-mels."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from clapcurate import embed, feature_store, features
from clapcurate.feature_store import FeatureStore
from clapcurate.zeroshot import evaluate

from test_train import SAMPLE_RATE, write_clips

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def fresh_feature_memory():
    features.clear_memory()
    yield
    features.clear_memory()


def random_arrays(n, width=8, seed=0):
    """`n` float16 arrays [rows, width] of 1..40 rows, holding every kind of float16 value."""
    rng = np.random.default_rng(seed)
    arrays = [(rng.standard_normal((int(rng.integers(1, 40)), width)) * 10 ** rng.uniform(-6, 4)).astype(np.float16)
              for _ in range(n)]
    arrays[0][0, :4] = [np.inf, -np.inf, np.float16(6e-8), -0.0]  # infinities, a subnormal, a negative zero
    return arrays


def keys_of(n):
    return [bytes([k]) * 20 for k in range(n)]


def test_store_round_trip_is_exact_across_shards(tmp_path):
    arrays = random_arrays(10)
    store = FeatureStore(tmp_path / "store", 8, np.float16, shard_arrays=3)
    with store.writer() as writer:
        for key, array in zip(keys_of(10), arrays):
            writer.add(key, array)
    assert len(list((tmp_path / "store").glob("shard-*.bin"))) == 4
    reopened = FeatureStore(tmp_path / "store", 8, np.float16)
    found = reopened.locate([*keys_of(10), b"unknown", None, keys_of(10)[4]])
    assert found.present.tolist() == [True] * 10 + [False, False, True]
    for k, array in enumerate(arrays + [arrays[4]]):
        item = found[k if k < 10 else 12]
        assert item.dtype == np.float16 and item.tobytes() == array.tobytes()
    with pytest.raises(Exception, match="other settings"):
        FeatureStore(tmp_path / "store", 16, np.float16).locate(keys_of(1))


def test_an_array_written_and_read_in_parts_is_the_whole_array(tmp_path):
    long, short = np.random.default_rng(1).standard_normal((100, 8)).astype(np.float16), random_arrays(1)[0]
    store = FeatureStore(tmp_path / "store", 8, np.float16)
    with store.writer() as writer:
        for start in range(0, 100, 30):  # 30 + 30 + 30 + 10 rows
            writer.add_rows(b"long", long[start:start + 30])
        writer.end_entry()
        writer.add(b"short", short)
        writer.add_rows(b"cut short", long[:5])  # never ended: dropped when the writer closes
    found = store.locate([b"long", b"short", b"cut short"])
    assert found.present.tolist() == [True, True, False]
    assert found[0].tobytes() == long.tobytes() and found[1].tobytes() == short.tobytes()
    parts = list(found.parts(0, 40))
    assert [len(part) for part in parts] == [40, 40, 20]
    assert np.concatenate(parts).tobytes() == long.tobytes()
    with open(store.shard_path(int(found.shard[0])), "r+b") as shard:  # a byte of the last part changed
        shard.seek(95 * 16)
        shard.write(b"\x7f")
    parts = found.parts(0, 40)
    assert len(next(parts)) == 40 and len(next(parts)) == 40
    with pytest.raises(Exception, match="corrupt"):
        next(parts)


KILLED_BUILD = """
import os, signal, sys
import numpy as np
from clapcurate.feature_store import FeatureStore
store = FeatureStore(sys.argv[1], 8, np.float16, shard_arrays=3)
writer = store.writer()
for k in range(8):
    if k == 7:
        os.kill(os.getpid(), signal.SIGKILL)  # two shards finished, the third holds one array
    writer.add(bytes([k]) * 20, np.full((5, 8), k, np.float16))
"""


def test_a_build_killed_midway_keeps_its_finished_shards_and_resumes(tmp_path):
    folder = tmp_path / "store"
    run = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(folder)], env={**os.environ, "PYTHONPATH": SRC})
    assert run.returncode == -9
    assert len(list(folder.glob(".shard-*.partial-*"))) == 1  # the killed shard, named by no entry
    store = FeatureStore(folder, 8, np.float16)
    found = store.locate(keys_of(8))
    assert found.present.tolist() == [True] * 6 + [False] * 2
    assert all(np.array_equal(found[k], np.full((5, 8), k, np.float16)) for k in range(6))
    with store.writer() as writer:  # resuming: only the missing arrays are written
        assert not list(folder.glob(".shard-*.partial-*"))  # the dead writer's partial file is removed
        for k in (6, 7):
            writer.add(keys_of(8)[k], np.full((5, 8), k, np.float16))
    found = FeatureStore(folder, 8, np.float16).locate(keys_of(8))
    assert all(np.array_equal(found[k], np.full((5, 8), k, np.float16)) for k in range(8))


def test_a_live_writers_partial_file_is_kept_by_a_starting_writer(tmp_path):
    store = FeatureStore(tmp_path / "store", 8, np.float16)
    with store.writer() as first:
        first.add(b"a" * 20, np.zeros((5, 8), np.float16))
        (partial,) = (tmp_path / "store").glob(".shard-*.partial-*")
        FeatureStore(tmp_path / "store", 8, np.float16).writer().close()  # removes the partial files nobody holds
        assert partial.is_file()
    assert FeatureStore(tmp_path / "store", 8, np.float16).locate([b"a" * 20]).present.all()


def count_computations(monkeypatch):
    computed = []
    original = features.compute_logmel

    def compute(wave, settings, path="waveform"):
        computed.append(len(wave))
        return original(wave, settings, path)

    monkeypatch.setattr(features, "compute_logmel", compute)
    return computed


def test_a_damaged_shard_is_never_read_and_its_clips_are_computed_again(tiny_clap, tmp_path, monkeypatch):
    manifest = write_clips(tmp_path / "audio", 4)
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    original, _ = features.LogMelCache(settings, tmp_path / "cache").get_many(manifest.audio_path)
    original = [original[k].copy() for k in range(4)]
    shard, = (tmp_path / "cache" / settings.digest()).glob("shard-*.bin")
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 2)  # e.g. a copy cut short
    computed = count_computations(monkeypatch)
    cache = features.LogMelCache(settings, tmp_path / "cache")
    assert not cache.store.locate(features.store_keys(manifest.audio_path)[0]).present.any()
    again, failures = cache.get_many(manifest.audio_path)
    assert not failures and len(computed) == 4
    assert all(np.array_equal(again[k], original[k]) for k in range(4))


def test_a_changed_file_is_computed_again(tiny_clap, tmp_path, monkeypatch):
    manifest = write_clips(tmp_path / "audio", 2)
    path = manifest.audio_path[0]
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    before = features.LogMelCache(settings, tmp_path / "cache").get(path).copy()
    computed = count_computations(monkeypatch)
    assert np.array_equal(features.LogMelCache(settings, tmp_path / "cache").get(path), before)
    assert computed == []
    wave = soundfile.read(path, dtype="float32")[0]
    soundfile.write(path, 0.5 * wave, SAMPLE_RATE)  # same size, new content and modification time
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = features.LogMelCache(settings, tmp_path / "cache").get(path)
    assert len(computed) == 1 and not np.array_equal(after, before)
    assert np.array_equal(after, features.compute_logmel(soundfile.read(path, dtype="float32")[0], settings))


def test_per_clip_files_of_the_earlier_layout_are_read(tiny_clap, tmp_path, monkeypatch):
    manifest = write_clips(tmp_path / "audio", 1)
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    key = features.file_key(manifest.audio_path[0])
    legacy = tmp_path / "cache" / settings.digest() / key[:2] / f"{key}.npy"
    legacy.parent.mkdir(parents=True)
    np.save(legacy, np.full((101, 32), 7.0, np.float16))
    computed = count_computations(monkeypatch)
    assert np.all(features.LogMelCache(settings, tmp_path / "cache").get(manifest.audio_path[0]) == 7.0)
    legacy.unlink()  # now in the shards
    assert np.all(features.LogMelCache(settings, tmp_path / "cache").get(manifest.audio_path[0]) == 7.0)
    assert computed == []


def test_without_a_cache_folder_the_process_folder_serves_every_run_until_cleared(tiny_clap, tmp_path, monkeypatch):
    manifest = write_clips(tmp_path / "audio", 2)
    settings = features.FrontendSettings.of(tiny_clap.config.audio)
    computed = count_computations(monkeypatch)
    features.LogMelCache(settings).get_many(manifest.audio_path)
    features.LogMelCache(settings).get_many(manifest.audio_path)
    assert len(computed) == 2
    folder = features._PROCESS_FOLDER[0]
    assert list(folder.rglob("shard-*.bin"))
    features.clear_memory()
    assert not folder.exists()


def open_shard_files() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.islink(f"/proc/self/fd/{fd}")} if Path("/proc/self/fd").is_dir() else set()


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc")
def test_reads_keep_nothing_of_the_shards_in_the_process(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_store, "MAX_OPEN_SHARDS", 2)
    arrays = random_arrays(12)
    store = FeatureStore(tmp_path / "store", 8, np.float16, shard_arrays=3)
    with store.writer() as writer:
        for key, array in zip(keys_of(12), arrays):
            writer.add(key, array)
    found = store.locate(keys_of(12))
    read = [found[k] for k in range(12)]
    shards = {str(p) for p in (tmp_path / "store").glob("shard-*.bin")}
    assert len(shards) == 4
    assert len(open_shard_files() & shards) == 2  # the two most recently read shard files stay open
    assert not any(path in Path("/proc/self/maps").read_text() for path in shards)  # nothing mapped
    read[0][0, 0] = 1  # a copy, the store is unchanged
    assert found[0].tobytes() == arrays[0].tobytes()
    store.close()
    assert not open_shard_files() & shards


def test_text_memory_is_a_bounded_lru(tiny_clap, monkeypatch):
    memory = features.BoundedMemory(3 * 4)
    for key in "abc":
        memory.put(key, np.zeros(1, np.float32))
    memory.get("a")
    memory.put("d", np.zeros(1, np.float32))
    assert memory.get("b") is None and all(memory.get(key) is not None for key in "acd") and memory.nbytes == 12

    cache = features.TextFeatureCache(tiny_clap.text_encoder)
    monkeypatch.setattr(features._TEXT_MEMORY, "max_bytes", 3 * tiny_clap.text_encoder.out_dim * 4)
    captions = [f"caption {k}" for k in range(10)]
    got = cache.features(captions + captions[:2])
    assert len(features._TEXT_MEMORY) == 3 and features._TEXT_MEMORY.nbytes <= features._TEXT_MEMORY.max_bytes
    expected = features.TextFeatureCache(tiny_clap.text_encoder, batch_size=256)
    features.clear_memory()
    assert np.array_equal(got, expected.features(captions + captions[:2]))


# ---------------------------------------------------------------- evaluation
@pytest.fixture
def benchmark(tmp_path):
    """Labelled clips: 1 s clips, a 3.4 s clip (four windows of the 1 s model), a 0.3 s clip and
    an unreadable file."""
    manifest = write_clips(tmp_path / "audio", 6)
    rng = np.random.default_rng(1)
    for name, seconds in (("long", 3.4), ("short", 0.3)):
        path = tmp_path / "audio" / f"{name}.wav"
        soundfile.write(path, (0.3 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32), SAMPLE_RATE)
        manifest.loc[len(manifest)] = {"id": name, "clip_id": name, "audio_path": str(path), "caption": ""}
    (tmp_path / "audio" / "broken.wav").write_bytes(b"not audio")
    manifest.loc[len(manifest)] = {"id": "broken", "clip_id": "broken", "audio_path": str(tmp_path / "audio" / "broken.wav"),
                                   "caption": ""}
    manifest["label"] = ["dog", "rain", "siren"] * 3
    return manifest


def test_evaluation_reuses_stored_benchmark_log_mels_with_identical_results(
        tiny_clap, tiny_clap_config, build_tiny_clap, benchmark, tmp_path, monkeypatch):
    other = build_tiny_clap(dataclasses.replace(tiny_clap_config, d_proj=16))  # another model, same front-end
    int16 = build_tiny_clap(dataclasses.replace(
        tiny_clap_config, audio=dataclasses.replace(tiny_clap_config.audio, int16_round_trip=True)))
    models = {"a": tiny_clap, "b": other, "int16": int16}
    fresh = {name: evaluate(model, benchmark, batch_size=3) for name, model in models.items()}
    embedded = {name: embed.embed_audio(model, benchmark, batch_size=3) for name, model in models.items()}
    cache = tmp_path / "features"
    evaluate(tiny_clap, benchmark, batch_size=3, feature_cache=cache)  # decodes and stores
    evaluate(int16, benchmark, batch_size=3, feature_cache=cache)  # another front-end: its own store
    assert len(list(cache.glob("windows-*"))) == 2

    class NoDecoding:
        def __init__(self, *args, **kwargs):
            raise AssertionError("audio decoded although every clip is stored")

    monkeypatch.setattr(embed, "AudioFiles", NoDecoding)
    for name, model in models.items():
        result = evaluate(model, benchmark, batch_size=3, feature_cache=cache)
        assert result.accuracy == fresh[name].accuracy
        pd.testing.assert_frame_equal(result.predictions, fresh[name].predictions)
        pd.testing.assert_frame_equal(result.skipped, fresh[name].skipped)
        assert list(result.skipped["id"]) == ["broken"]
        stored = embed.embed_audio(model, benchmark, batch_size=3, feature_cache=cache)
        assert stored.ids == embedded[name].ids and np.array_equal(stored.embeddings, embedded[name].embeddings)
