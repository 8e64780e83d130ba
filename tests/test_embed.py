"""Embedding: deterministic windowed audio embeddings, text embeddings, sharded resumable folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import torch.nn.functional as F

from clapcurate import audio
from clapcurate.audio import inference_windows, load_audio
from clapcurate.data.manifest import write_manifest
from clapcurate.embed import (
    embed_audio,
    embed_manifest,
    embed_texts,
    load_embeddings,
    text_key,
)
from clapcurate.errors import ClapcurateError

SAMPLE_RATE = 16000


def write_tone(path, seconds, frequency, sample_rate=SAMPLE_RATE):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * frequency * t).astype(np.float32), sample_rate)
    return str(path)


@pytest.fixture
def audio_manifest(tmp_path):
    """Seven rows: short and long (multi-window) clips, one clip shared by two captioned rows,
    a corrupted file and a missing one."""
    folder = tmp_path / "audio"
    folder.mkdir()
    paths = [write_tone(folder / f"tone{i}.wav", seconds, 200 + 150 * i)
             for i, seconds in enumerate([0.4, 2.5, 1.0, 3.2])]
    # an 8 kHz stereo file: resampled and mixed down on load
    stereo = np.stack([np.linspace(-0.2, 0.2, 12000), np.zeros(12000)], axis=1).astype(np.float32)
    soundfile.write(folder / "stereo.wav", stereo, 8000)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    rows = [
        ("a", "clip-a", paths[0], "a short high tone"),
        ("b", "clip-b", paths[1], "a long tone"),
        ("b2", "clip-b", paths[1], "the same long tone, second caption"),
        ("c", "clip-c", str(folder / "broken.wav"), "noise"),
        ("d", "clip-d", paths[2], "a short high tone"),
        ("e", "clip-e", str(folder / "missing.wav"), ""),
        ("f", "clip-f", paths[3], "a very long tone"),
        ("g", "clip-g", str(folder / "stereo.wav"), "a ramp"),
    ]
    return pd.DataFrame(rows, columns=["id", "clip_id", "audio_path", "caption"])


@pytest.fixture
def checkpoint_dir(tiny_clap, tmp_path):
    from clapcurate.model.checkpoints import save

    return save(tiny_clap, tmp_path / "teacher")


@pytest.fixture
def manifest_path(audio_manifest, tmp_path):
    return write_manifest(audio_manifest, tmp_path / "manifest.csv")


def test_clip_embedding_is_the_normalised_mean_of_its_windows(tiny_clap, audio_manifest):
    result = embed_audio(tiny_clap, audio_manifest, batch_size=3)
    assert result.ids == ["clip-a", "clip-b", "clip-d", "clip-f", "clip-g"]
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-6)
    long_path = audio_manifest.set_index("clip_id").loc["clip-f", "audio_path"]
    windows = inference_windows(load_audio(long_path, SAMPLE_RATE), tiny_clap.clip_samples)
    assert len(windows) > 1
    with torch.inference_mode():
        per_window = tiny_clap.encode_audio(torch.from_numpy(windows), normalize=True)  # [W, d]
    expected = F.normalize(per_window.mean(dim=0), dim=0).numpy()
    np.testing.assert_allclose(result.embeddings[3], expected, atol=1e-5)


def test_audio_embeddings_are_deterministic_across_batch_sizes_and_workers(tiny_clap, audio_manifest):
    reference = embed_audio(tiny_clap, audio_manifest, batch_size=4)
    again = embed_audio(tiny_clap, audio_manifest, batch_size=4)
    np.testing.assert_array_equal(again.embeddings, reference.embeddings)
    for batch_size, num_workers in [(1, 0), (16, 0), (2, 2)]:
        other = embed_audio(tiny_clap, audio_manifest, batch_size=batch_size, num_workers=num_workers)
        assert other.ids == reference.ids
        np.testing.assert_allclose(other.embeddings, reference.embeddings, atol=2e-5)


def test_unreadable_clips_are_skipped_with_their_reason(tiny_clap, audio_manifest):
    skipped = embed_audio(tiny_clap, audio_manifest).skipped
    assert list(skipped.columns) == ["id", "audio_path", "reason"]
    assert list(skipped["id"]) == ["clip-c", "clip-e"]
    assert "no such file" in skipped["reason"].iloc[1]
    assert skipped["audio_path"].iloc[0].endswith("broken.wav")


def test_embed_audio_restores_training_mode(tiny_clap, audio_manifest):
    tiny_clap.train()
    embed_audio(tiny_clap, audio_manifest.iloc[:1])
    assert tiny_clap.training


def test_text_embeddings_match_the_model_in_any_batch_size(tiny_clap):
    texts = ["a dog barks", "rain on a roof", "a siren", "", "birds sing at dawn"]
    with torch.inference_mode():
        expected = tiny_clap.encode_text(texts, normalize=True).numpy()
    for batch_size in (1, 2, 256):
        np.testing.assert_allclose(embed_texts(tiny_clap, texts, batch_size), expected, atol=1e-5)
    assert embed_texts(tiny_clap, []).shape == (0, 32)


def test_text_key_is_stable_and_tells_captions_apart():
    assert text_key("a dog barks") == text_key("a dog barks")
    assert text_key("a dog barks") != text_key("a dog barks ")
    assert len(text_key("x")) == 20 and set(text_key("x")) <= set("0123456789abcdef")


def read_folder(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if not path.name.startswith(".")}


def test_embedding_folder_holds_float16_shards_in_manifest_order(checkpoint_dir, manifest_path, tiny_clap,
                                                                  audio_manifest, tmp_path):
    out = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "emb", shard_size=2, batch_size=3,
                         progress=False)
    names = set(read_folder(out))
    assert {"meta.json", "skipped.csv", "part-00000.npy", "part-00000.ids.txt", "part-00000.done",
            "part-00003.done"} <= names and "part-00004.npy" not in names  # 7 unique clips -> 4 shards
    assert np.load(out / "part-00000.npy").dtype == np.float16
    meta = json.loads((out / "meta.json").read_text())
    assert meta["modality"] == "audio" and meta["dimension"] == 32 and meta["num_shards"] == 4
    ids, embeddings = load_embeddings(out)
    in_memory = embed_audio(tiny_clap, audio_manifest)
    assert ids == in_memory.ids
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, in_memory.embeddings, atol=2e-3)  # float16 storage
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["id"]) == ["clip-c", "clip-e"]
    assert (out / "part-00001.ids.txt").read_text().splitlines() == ["clip-d"]  # clip-c skipped


def test_killed_run_resumes_to_identical_files(checkpoint_dir, manifest_path, tmp_path):
    settings = dict(shard_size=2, batch_size=3, progress=False)
    uninterrupted = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "whole", **settings)
    resumed = tmp_path / "resumed"
    embed_manifest(checkpoint_dir, manifest_path, resumed, max_shards=2, **settings)
    with pytest.raises(ClapcurateError, match="unfinished, 2 of 4 shards"):
        load_embeddings(resumed)
    assert not (resumed / "skipped.csv").exists()
    # a kill in the middle of shard 2 leaves a half-written file without a done marker
    (resumed / "part-00002.npy").write_bytes(b"half a file")
    finished_before = (resumed / "part-00000.done").stat().st_mtime_ns
    embed_manifest(checkpoint_dir, manifest_path, resumed, **{**settings, "shard_size": 50})  # folder's layout kept
    assert (resumed / "part-00000.done").stat().st_mtime_ns == finished_before  # not redone
    assert read_folder(resumed) == read_folder(uninterrupted)


def test_finished_folder_is_reused_without_loading_the_model(checkpoint_dir, manifest_path, tmp_path, monkeypatch):
    from clapcurate.model import checkpoints

    folder = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "emb", shard_size=2, progress=False)
    before = read_folder(folder)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a finished folder")
    monkeypatch.setattr(checkpoints, "load_model", no_model)
    assert embed_manifest(checkpoint_dir, manifest_path, folder, shard_size=2, progress=False) == folder
    assert read_folder(folder) == before
    with pytest.raises(AssertionError, match="model was loaded"):  # a new folder still needs it
        embed_manifest(checkpoint_dir, manifest_path, tmp_path / "other", shard_size=2, progress=False)


def test_ranks_write_their_own_shards_with_the_result_of_one_process(checkpoint_dir, manifest_path,
                                                                       tmp_path, monkeypatch):
    settings = dict(shard_size=2, batch_size=3, progress=False)
    single = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "single", **settings)
    ranked = tmp_path / "ranked"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    embed_manifest(checkpoint_dir, manifest_path, ranked, **settings)
    assert sorted(p.name for p in ranked.glob("*.done")) == ["part-00001.done", "part-00003.done"]
    monkeypatch.setenv("RANK", "0")
    embed_manifest(checkpoint_dir, manifest_path, ranked, **settings)
    assert read_folder(ranked) == read_folder(single)


TWO_RANKS = """
import json, sys
from pathlib import Path

import torch.distributed as dist

from clapcurate.embed import embed_manifest

model, manifest, out = sys.argv[1:]
settings = dict(shard_size=2, batch_size=3, progress=False)
dist.init_process_group("gloo")  # only for the barriers of this check; embedding needs none
embed_manifest(model, manifest, out, max_shards=1, **settings)
dist.barrier()
if dist.get_rank() == 0:
    done = sorted(path.name for path in Path(out).glob("*.done"))
    (Path(out).parent / "after_one_shard_each.json").write_text(json.dumps(done))
dist.barrier()
embed_manifest(model, manifest, out, **settings)
dist.destroy_process_group()
"""


def test_two_processes_under_torchrun_write_the_files_of_one_process(checkpoint_dir, manifest_path, tmp_path):
    import os
    import subprocess
    import sys

    import clapcurate

    single = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "single", shard_size=2, batch_size=3,
                            progress=False)
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    source = str(Path(clapcurate.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(checkpoint_dir), str(manifest_path), str(tmp_path / "ranked")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # one shard each: rank 0 shard 0, rank 1 shard 1 (shard i belongs to rank i % 2)
    assert json.loads((tmp_path / "after_one_shard_each.json").read_text()) == ["part-00000.done", "part-00001.done"]
    assert read_folder(tmp_path / "ranked") == read_folder(single)


def test_folder_of_another_model_or_manifest_is_refused(checkpoint_dir, manifest_path, audio_manifest,
                                                         tiny_clap, tmp_path):
    from clapcurate.model.checkpoints import save

    out = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "emb", progress=False)
    with torch.no_grad():
        tiny_clap.audio_projection.linear1.weight.add_(0.01)
    other_model = save(tiny_clap, tmp_path / "other_teacher")
    with pytest.raises(ClapcurateError, match="model_hash.*another output folder|another run.*model_hash"):
        embed_manifest(other_model, manifest_path, out, progress=False)
    other_manifest = write_manifest(audio_manifest.iloc[:3], tmp_path / "other.csv")
    with pytest.raises(ClapcurateError, match="manifest_hash"):
        embed_manifest(checkpoint_dir, other_manifest, out, progress=False)
    with pytest.raises(ClapcurateError, match="modality"):
        embed_manifest(checkpoint_dir, manifest_path, out, modality="text", progress=False)


def test_text_folder_is_keyed_by_caption(checkpoint_dir, manifest_path, audio_manifest, tiny_clap, tmp_path):
    out = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "text", modality="text", shard_size=4,
                         progress=False)
    captions = list(dict.fromkeys(c for c in audio_manifest["caption"] if c))  # unique, in order
    ids, embeddings = load_embeddings(out)
    assert ids == [text_key(c) for c in captions]
    np.testing.assert_allclose(embeddings, embed_texts(tiny_clap, captions), atol=2e-3)


def test_load_embeddings_refuses_a_plain_folder(tmp_path):
    with pytest.raises(ClapcurateError, match="not an embeddings folder"):
        load_embeddings(tmp_path)


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_progress_counts_items_with_the_reused_part_done(checkpoint_dir, manifest_path, tmp_path, monkeypatch,
                                                         modality):
    import contextlib

    from clapcurate import embed

    bars = []

    @contextlib.contextmanager
    def recording_bar(enabled, total, description, completed=0):
        bar = {"total": total, "completed": completed, "advances": []}
        if enabled:
            bars.append(bar)
        yield bar["advances"].append

    monkeypatch.setattr(embed, "_progress_bar", recording_bar)
    settings = dict(shard_size=2, batch_size=3, modality=modality)
    out = embed_manifest(checkpoint_dir, manifest_path, tmp_path / "emb", max_shards=1, **settings)
    embed_manifest(checkpoint_dir, manifest_path, out, **settings)
    ids, _ = load_embeddings(out)
    n_items = len(ids) + len(pd.read_csv(out / "skipped.csv"))
    first, second = bars
    assert first["total"] == second["total"] == n_items
    assert first["completed"] == 0 and sum(first["advances"]) == 2  # one shard of 2 items
    assert second["completed"] == 2 and second["completed"] + sum(second["advances"]) == n_items
    if modality == "audio":
        assert max(second["advances"]) < n_items - 2  # several steps, not one per shard


@pytest.fixture(scope="module")
def two_minute_manifest(tmp_path_factory):
    """A 2-minute 22.05 kHz stereo file of drifting tones and noise between two short clips."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(7)
    rate = 22050
    t = np.arange(120 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * t / 40)) * t)
    stereo = np.stack([tone, 0.1 * rng.standard_normal(len(t))], axis=1).astype(np.float32)
    soundfile.write(folder / "long.wav", stereo, rate, subtype="PCM_16")
    paths = [write_tone(folder / "short0.wav", 0.7, 440), str(folder / "long.wav"),
             write_tone(folder / "short1.wav", 2.5, 880)]
    return pd.DataFrame({"id": ["s0", "long", "s1"], "clip_id": ["s0", "long", "s1"], "audio_path": paths})


@pytest.mark.parametrize("num_workers", [0, 1])
def test_long_clip_embedded_as_a_stream_equals_its_whole_file_embedding(tiny_clap, two_minute_manifest,
                                                                        monkeypatch, num_workers):
    monkeypatch.setattr(audio, "STREAMED_CLIP_SECONDS", math.inf)
    whole = embed_audio(tiny_clap, two_minute_manifest, batch_size=16, num_workers=num_workers)
    monkeypatch.setattr(audio, "STREAMED_CLIP_SECONDS", 60.0)
    streamed_parts = []
    original_stream = audio.stream_windows
    monkeypatch.setattr(audio, "stream_windows", lambda *a, **k: (streamed_parts.append(len(p)) or p
                                                                  for p in original_stream(*a, **k)))
    streamed = embed_audio(tiny_clap, two_minute_manifest, batch_size=16, num_workers=num_workers)

    assert len(streamed_parts) > 1 and max(streamed_parts) < 120  # the long clip came window by window
    assert streamed.ids == whole.ids == ["s0", "long", "s1"]
    # the same windows packed into the same batches: the same numbers, bit for bit
    np.testing.assert_array_equal(streamed.embeddings, whole.embeddings)


def test_streamed_long_clip_is_stored_in_and_read_from_the_feature_cache(tiny_clap, two_minute_manifest,
                                                                         monkeypatch, tmp_path):
    monkeypatch.setattr(audio, "STREAMED_CLIP_SECONDS", math.inf)
    whole = embed_audio(tiny_clap, two_minute_manifest, batch_size=16)
    monkeypatch.setattr(audio, "STREAMED_CLIP_SECONDS", 60.0)
    decoded = embed_audio(tiny_clap, two_minute_manifest, batch_size=16, feature_cache=tmp_path / "cache")
    monkeypatch.setattr(audio, "stream_windows", None)  # from the store: nothing is read from the files
    stored = embed_audio(tiny_clap, two_minute_manifest, batch_size=16, feature_cache=tmp_path / "cache")

    np.testing.assert_array_equal(decoded.embeddings, whole.embeddings)
    np.testing.assert_array_equal(stored.embeddings, whole.embeddings)
