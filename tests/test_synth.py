"""The embedded synthetic world: determinism, real layouts, separation of parts, corrupted files."""

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clapcurate.audio import load_audio
from clapcurate.data.readers import read_audiocaps, read_audioset, read_clotho, read_esc50, read_tut2017, \
    read_urbansound8k
from clapcurate.data.synth import generate_world
from clapcurate.data.synth.concepts import CONCEPTS, CONCEPTS_BY_NAME, ESC50_CONCEPT, URBANSOUND8K_CONCEPT
from clapcurate.data.synth.render import concept_layers
from clapcurate.data.synth.sounds import SAMPLE_RATE, render_event
from clapcurate.errors import AudioError, ClapcurateError

SCALE = 0.02
REAL_METADATA = Path(__file__).resolve().parents[2] / "shared" / "real-metadata"
TUT_SCENES = {"beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home",
              "library", "metro_station", "office", "park", "residential_area", "train", "tram"}


def file_hashes(root: Path, under: str = "") -> dict:
    """relative path -> sha256 of every file below ``root / under``."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((root / under).rglob("*")) if path.is_file()}


def read_rows(path: Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world") / "seed0", seed=0, scale=SCALE, progress=False)


def test_same_seed_writes_identical_bytes_with_any_number_of_workers(world, tmp_path):
    again = generate_world(tmp_path / "again", seed=0, scale=SCALE, progress=False, workers=2)
    assert file_hashes(again.root) == file_hashes(world.root)


def test_different_seed_writes_a_different_world(world, tmp_path):
    other = generate_world(tmp_path / "other", seed=1, scale=SCALE, progress=False)
    corpus_audio = set(file_hashes(world.root, "corpus").values())
    other_corpus_audio = set(file_hashes(other.root, "corpus").values())
    assert not corpus_audio & other_corpus_audio
    assert (world.root / "benchmarks/esc50/meta/esc50.csv").read_bytes() != \
        (other.root / "benchmarks/esc50/meta/esc50.csv").read_bytes()


def test_corpus_reads_back_through_the_clotho_and_audiocaps_readers(world):
    clotho = read_clotho(world.clotho)
    assert clotho["clip_id"].nunique() == world.counts["clotho"]
    assert (clotho.groupby("clip_id").size() == 5).all()
    assert set(clotho["split"]) == {"development", "validation"}
    assert clotho.groupby("clip_id")["caption"].nunique().min() >= 4
    audiocaps = read_audiocaps(world.audiocaps)
    assert audiocaps["clip_id"].nunique() == world.counts["audiocaps"]
    assert set(audiocaps.groupby("clip_id").size()) <= {1, 2}
    assert set(audiocaps["split"]) == {"train", "val", "test"}
    for manifest in (clotho, audiocaps):
        assert all(Path(path).is_file() for path in manifest["audio_path"])
        assert (manifest["caption"].str.len() > 5).all()
    youtube_ids = audiocaps["youtube_id"].unique()
    assert all(len(ytid) == 11 and set(ytid) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") for ytid in youtube_ids)


def test_pool_reads_back_and_holds_every_audiocaps_segment_with_the_same_audio(world):
    pool = read_audioset(world.pool_segments_csv)
    assert len(pool) == world.counts["pool"]
    audiocaps = read_audiocaps(world.audiocaps).drop_duplicates("clip_id").set_index("clip_id")
    shared = pool[pool["id"].isin(audiocaps.index)]
    assert len(shared) == len(audiocaps)
    for clip_id, pool_path in zip(shared["id"], shared["audio_path"]):
        assert Path(pool_path).read_bytes() == Path(audiocaps.loc[clip_id, "audio_path"]).read_bytes()
    known_mids = {row["mid"] for row in read_rows(world.root / "pool" / "class_labels_indices.csv")}
    assert {mid for labels in pool["label"] for mid in labels.split(",")} <= known_mids
    assert set(shared["recording_id"]) == set(audiocaps["recording_id"])  # the same YouTube videos
    header = world.pool_segments_csv.read_text().splitlines()[:4]
    assert [line.startswith("#") for line in header] == [True, True, True, False]


def test_labelled_set_reads_back_with_its_labels_and_shares_no_clip_with_the_pool(world):
    tagged = read_audioset(world.tagged_segments_csv)
    assert len(tagged) == world.counts["tagged"] > 0
    known_mids = {row["mid"] for row in read_rows(world.root / "tagged" / "class_labels_indices.csv")}
    assert all(labels for labels in tagged["label"])
    assert {mid for labels in tagged["label"] for mid in labels.split(",")} <= known_mids
    # the labels are the ground truth's events (and scene) of each clip
    mids = json.loads(world.world_json.read_text())
    mid_of = {c["name"]: c["mid"] for c in mids["concepts"]} | {f"scene:{s['name']}": s["mid"] for s in mids["scenes"]}
    truth = {row["clip_id"]: row for row in read_rows(world.ground_truth / "tagged.csv")}
    for clip_id, labels in zip(tagged["id"], tagged["label"]):
        row = truth[clip_id]
        names = {event.split("/")[0] for event in row["events"].split(";")}
        names |= {row["background"]} if row["background"].startswith("scene:") else set()
        assert set(labels.split(",")) == {mid_of[name] for name in names}
    pool = read_audioset(world.pool_segments_csv)
    assert not set(tagged["id"]) & set(pool["id"])
    audio = {part: {h for path, h in file_hashes(world.root, part).items() if path.endswith(".wav")}
             for part in ("tagged", "pool")}
    assert audio["tagged"] and not audio["tagged"] & audio["pool"]


def test_benchmarks_read_back_with_their_classes_and_folds(world):
    esc50 = read_esc50(world.esc50)
    assert len(esc50) == world.counts["esc50"]
    assert set(esc50["label"]) == set(ESC50_CONCEPT) and len(set(esc50["label"])) == 50
    assert esc50.groupby("label").size().nunique() == 1
    assert set(esc50.loc[esc50["esc10"] == "True", "label"]) == {
        "dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick",
        "helicopter", "chainsaw"}
    assert set(esc50["fold"]) <= {"1", "2", "3", "4", "5"}
    esc50_rows = read_rows(world.esc50 / "meta" / "esc50.csv")
    folds_per_source = Counter(src for src, _ in {(row["src_file"], row["fold"]) for row in esc50_rows})
    assert max(folds_per_source.values()) == 1
    urban = read_urbansound8k(world.urbansound8k)
    assert len(urban) == world.counts["urbansound8k"]
    assert set(urban["label"]) == set(URBANSOUND8K_CONCEPT)
    assert set(urban["fold"].astype(int)) <= set(range(1, 11))
    assert urban.groupby("fsID")["fold"].nunique().max() == 1
    tut = read_tut2017(world.root / "benchmarks" / "tut2017")
    assert len(tut) == world.counts["tut2017_development"] + world.counts["tut2017_evaluation"]
    for split in ("development", "evaluation"):
        assert set(tut.loc[tut["split"] == split, "label"]) == TUT_SCENES
    for manifest in (esc50, urban, tut):
        assert all(Path(path).is_file() for path in manifest["audio_path"])
    # recording ids through the readers: clips cut from one source share it
    assert esc50["recording_id"].tolist() == [f"freesound:{row['src_file']}" for row in esc50_rows]
    assert (urban["recording_id"] == "freesound:" + urban["fsID"]).all()
    assert tut["recording_id"].str.match(r"^tut2017:[ab]\d{3}$").all()
    assert tut.groupby("recording_id")["label"].nunique().max() == 1


@pytest.mark.skipif(not REAL_METADATA.is_dir(), reason="real metadata folder absent")
def test_benchmark_class_ids_match_the_real_datasets(world):
    def classes(path, columns):
        return {tuple(row[c] for c in columns) for row in read_rows(path)}

    assert classes(world.esc50 / "meta/esc50.csv", ("target", "category", "esc10")) == \
        classes(REAL_METADATA / "esc50/esc50.csv", ("target", "category", "esc10"))
    assert classes(world.urbansound8k / "metadata/UrbanSound8K.csv", ("classID", "class")) == \
        classes(REAL_METADATA / "urbansound8k/UrbanSound8K.csv", ("classID", "class"))


def test_urbansound8k_slices_last_as_their_metadata_says(world):
    urban = read_urbansound8k(world.urbansound8k)
    rows = {row["slice_file_name"]: row for row in read_rows(world.urbansound8k / "metadata/UrbanSound8K.csv")}
    for path in urban["audio_path"][:10]:
        row = rows[Path(path).name]
        seconds = len(load_audio(path, SAMPLE_RATE)) / SAMPLE_RATE
        assert seconds == pytest.approx(float(row["end"]) - float(row["start"]), abs=1e-3)


def test_no_benchmark_clip_appears_in_corpus_or_pool(world):
    training_side = {h for part in ("corpus", "pool", "tagged") for h in file_hashes(world.root, part).values()}
    benchmark_audio = {h for path, h in file_hashes(world.root, "benchmarks").items() if path.endswith(".wav")}
    assert benchmark_audio and not benchmark_audio & training_side


def test_corrupted_files_are_present_and_rejected_by_the_loader(world):
    rows = read_rows(world.ground_truth / "corrupted.csv")
    assert {row["fault"] for row in rows} == {"truncated", "zero_length", "not_audio", "nan", "silent"}
    pool_paths = set(read_audioset(world.pool_segments_csv)["audio_path"])
    for row in rows:
        path = world.root / row["path"]
        assert str(path) in pool_paths
        if row["loader_rejects"] == "True":
            with pytest.raises(AudioError):
                load_audio(path, SAMPLE_RATE)
        else:
            assert not np.any(load_audio(path, SAMPLE_RATE))


def test_regular_clips_load_as_finite_non_silent_audio(world):
    faulty = {world.root / row["path"] for row in read_rows(world.ground_truth / "corrupted.csv")}
    paths = [p for p in sorted((world.root / "pool" / "audio").iterdir()) if p not in faulty][:20]
    for path in paths + sorted((world.esc50 / "audio").iterdir())[:10]:
        wave = load_audio(path, SAMPLE_RATE)
        assert np.isfinite(wave).all() and 1e-3 < np.abs(wave).max() <= 1.0
        assert len(wave) == int(1.5 * SAMPLE_RATE)


def test_concepts_have_variants_and_cover_every_benchmark_class():
    assert len(CONCEPTS) >= 40
    assert all(3 <= len(concept.variants) <= 5 for concept in CONCEPTS)
    assert set(ESC50_CONCEPT.values()) | set(URBANSOUND8K_CONCEPT.values()) <= set(CONCEPTS_BY_NAME)


@pytest.mark.parametrize("n_max", [1, 70, 800, 24000])
def test_every_concept_variant_renders_finite_audio_within_any_length(n_max):
    rng = np.random.default_rng(n_max)
    for concept in CONCEPTS:
        for variant in concept.variants:
            event = render_event(concept_layers(concept.name, variant.name), n_max, rng)
            assert 0 < len(event) <= n_max and np.isfinite(event).all()
            if n_max == 24000:
                assert np.sqrt(np.mean(event ** 2)) == pytest.approx(0.1, rel=1e-3), (concept.name, variant.name)


def test_corpus_covers_rare_concepts_by_few_variants_and_the_pool_covers_all(world):
    description = json.loads(world.world_json.read_text())
    corpus_variants = {c["name"]: set(c["corpus_variants"]) for c in description["concepts"]}
    tiers = Counter(c["corpus_tier"] for c in description["concepts"])
    assert set(tiers) == {"common", "medium", "rare"}
    assert all(len(c["corpus_variants"]) <= 2 for c in description["concepts"] if c["corpus_tier"] == "rare")
    corpus_events = [event.split("/") for row in read_rows(world.ground_truth / "corpus.csv")
                     for event in row["events"].split(";")]
    assert all(variant in corpus_variants[concept] for concept, variant in corpus_events)
    pool_concepts = {event.split("/")[0] for row in read_rows(world.ground_truth / "pool.csv")
                     if row["events"] for event in row["events"].split(";")}
    assert pool_concepts == set(CONCEPTS_BY_NAME)


def test_captions_never_spell_a_benchmark_label(world):
    captions = " ".join(read_clotho(world.clotho)["caption"]) + " ".join(read_audiocaps(world.audiocaps)["caption"])
    spelled_labels = [label for label in [*ESC50_CONCEPT, *URBANSOUND8K_CONCEPT, *TUT_SCENES]
                      if "_" in label or "/" in label]
    assert spelled_labels and not [label for label in spelled_labels if label in captions]


def test_refuses_a_non_empty_folder_that_is_not_a_world(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ClapcurateError, match="not empty"):
        generate_world(tmp_path, seed=0, scale=SCALE, progress=False)
    with pytest.raises(ClapcurateError, match="scale"):
        generate_world(tmp_path / "new", seed=0, scale=0, progress=False)
