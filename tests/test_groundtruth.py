"""The embedded world's ground truth as the study's report reads it: curated-set precision."""

import json

import pandas as pd
import pytest

from clapcurate.data.manifest import write_manifest
from clapcurate.study.groundtruth import WorldTruth


@pytest.fixture
def tiny_world(tmp_path):
    truth = tmp_path / "world" / "ground_truth"
    truth.mkdir(parents=True)
    pd.DataFrame({"path": ["corpus/a.wav", "corpus/b.wav", "corpus/c.wav"], "source": "clotho", "split": "development",
                  "events": ["dog/small", "dog/small;rain/light", "talking/voice"],
                  "background": ["noise:pink", "noise:brown", "scene:bus"]}).to_csv(truth / "corpus.csv", index=False)
    pd.DataFrame({"path": ["pool/p1.wav", "pool/p2.wav", "pool/p3.wav"], "clip_id": ["p1", "p2", "p3"],
                  "events": ["dog/growl;cat/kitten", "talking/crowd", "talking/voice"],
                  "background": ["noise:white", "scene:park", "scene:bus"], "in_audiocaps": False,
                  "fault": ""}).to_csv(truth / "pool.csv", index=False)
    (tmp_path / "world" / "world.json").write_text(json.dumps({
        "concepts": [{"name": "dog", "benchmark_labels": ["esc50:dog", "urbansound8k:dog_bark"]},
                     {"name": "rain", "benchmark_labels": ["esc50:rain"]}],
        "scenes": [{"name": "bus"}, {"name": "park"}]}))
    train = pd.DataFrame({"id": ["a#1", "b#1", "c#1", "c#2"], "clip_id": ["a", "b", "c", "c"],
                          "audio_path": [str(tmp_path / "world" / f"corpus/{x}.wav") for x in "abcc"],
                          "caption": ["A dog barks", "A dog barks in the rain", "People talk", "People talk on a bus"]})
    write_manifest(train, tmp_path / "train.csv")
    return tmp_path


def pool_pairs(root, rows):
    """Curated pool pairs (source caption id, pool clip) as curation writes them."""
    captions = pd.read_csv(root / "train.csv").set_index("id")["caption"]
    frame = pd.DataFrame({"id": [f"du:{i}" for i in range(len(rows))], "clip_id": [pool for _, pool in rows],
                          "audio_path": [str(root / "world" / f"pool/{pool}.wav") for _, pool in rows],
                          "caption": [captions[source] for source, _ in rows], "method": "du",
                          "source_id": [source for source, _ in rows], "best_label": ""})
    return write_manifest(frame, root / "du.csv")


@pytest.mark.parametrize("source, pool, right", [
    ("a#1", "p1", True),    # the pool clip holds the dog (and more): right
    ("b#1", "p1", False),   # the caption names rain, the pool clip has none
    ("c#1", "p3", True),    # talking, place not named
    ("c#1", "p2", True),    # the place is not named: talking in a park is still right
    ("c#2", "p3", True),    # talking on a bus, in a bus
    ("c#2", "p2", False),   # talking on a bus named, the pool clip is in a park
])
def test_pool_pair_is_right_when_the_clip_holds_everything_its_caption_names(tiny_world, source, pool, right):
    truth = WorldTruth(tiny_world / "world")
    assert truth.precision(pool_pairs(tiny_world, [(source, pool)]), tiny_world / "train.csv", None) == float(right)


def test_precision_is_the_share_of_right_pairs_and_ds_pairs_follow_their_class(tiny_world):
    truth = WorldTruth(tiny_world / "world")
    mixed = pool_pairs(tiny_world, [("a#1", "p1"), ("b#1", "p1"), ("c#2", "p2"), ("c#2", "p3")])
    assert truth.precision(mixed, tiny_world / "train.csv", None) == 0.5
    ds = pd.DataFrame({"id": ["ds:1", "ds:2", "ds:3"], "clip_id": ["a", "b", "c"],
                       "audio_path": [str(tiny_world / "world" / f"corpus/{x}.wav") for x in "abc"],
                       "caption": "x", "method": "ds", "source_id": "", "best_label": ["dog_bark", "dog_bark", "dog_bark"]})
    assert truth.precision(write_manifest(ds, tiny_world / "ds.csv"), tiny_world / "train.csv", "urbansound8k") == \
        pytest.approx(2 / 3)
    assert truth.corpus_frequency("esc50", ["dog", "rain"]) == {"dog": 2, "rain": 1}
