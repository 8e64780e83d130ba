"""Dataset readers against fixtures written in each dataset's exact on-disk format,
and against the real metadata files in ../shared/real-metadata/ when present."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clapcurate.data.manifest import MANIFEST_COLUMNS
from clapcurate.data.readers import (
    read_audiocaps,
    read_audioset,
    read_clotho,
    read_csv_manifest,
    read_dataset,
    read_esc50,
    read_folder,
    read_fsd50k,
    read_macs,
    read_tut2017,
    read_urbansound8k,
)
from clapcurate.errors import ManifestError

REAL_METADATA = Path(__file__).resolve().parents[2] / "shared" / "real-metadata"
# sources shared by the real metadata files (recording ids): YouTube videos of AudioCaps (all
# splits) among the first 200 segments of AudioSet's unbalanced list, Freesound sounds of ESC-50
# among the first 142 rows of FSD50K's ground truth, and Freesound sounds both ESC-50 and
# UrbanSound8K were cut from
AUDIOCAPS_IN_AUDIOSET_HEAD = 10
ESC50_IN_FSD50K_HEADS = 0
ESC50_IN_URBANSOUND8K = 94


def write_file(path: Path, text: str, newline: str = "\n") -> Path:
    """Write `text` with the given line ending, byte for byte, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


# ---------------------------------------------------------------- fixtures in the real formats

ESC50_CSV = """filename,fold,target,category,esc10,src_file,take
1-100032-A-0.wav,1,0,dog,True,100032,A
1-100038-A-14.wav,1,14,chirping_birds,False,100038,A
5-9032-A-0.wav,5,0,dog,True,9032,A
"""

URBANSOUND8K_CSV = """slice_file_name,fsID,start,end,salience,fold,classID,class
100032-3-0-0.wav,100032,0,0.317551,1,5,3,dog_bark
100263-2-0-117.wav,100263,58.5,62.5,1,5,2,children_playing
99812-1-2-0.wav,99812,159.522205,163.522205,2,10,1,car_horn
"""

TUT_DEVELOPMENT_META = """audio/a001_0_10.wav\tresidential_area\ta001
audio/a001_10_20.wav\tresidential_area\ta001
audio/b005_0_10.wav\tcafe/restaurant\tb005
audio/c010_30_40.wav\tcity_center\tc010
"""

TUT_EVALUATION_META = """audio/1.wav\tcafe/restaurant
audio/2.wav\tcity_center
audio/d007_20_30.wav\tpark
"""

CLOTHO_CSV = """file_name,caption_1,caption_2,caption_3,caption_4,caption_5
Distorted AM Radio noise.wav,A muddled noise of broken channel of the TV,A television blares the rhythm of a static TV.,Loud television static dips in and out of focus,The loud buzz of static constant,heavy static and the beginning of a station
 Ambience Birds.wav,Birds chirp in the distance.,"Birds, insects and wind, all at once.",A bird sings,Birds are singing,"Several birds sing, ""loudly"", nearby"
"""

AUDIOCAPS_TRAIN_CSV = """audiocap_id,youtube_id,start_time,caption
91139,r1nicOVtvkQ,130,A woman talks nearby as water pours
11542,3eJ9RynJzP8,80,"The wind is blowing, insects are singing, and rustling occurs"
"""

AUDIOCAPS_VAL_CSV = """audiocap_id,youtube_id,start_time,caption
97151,---1_cCGK4M,0,"rustling occurs, ducks quack and water splashes"
"""

# MACS.yaml as published (Zenodo 5114771): a top-level `files:` list of
# {annotations: [{annotator_id, sentence, tags}], filename}.
MACS_YAML = """files:
- annotations:
  - annotator_id: 133
    sentence: adults talking and footsteps in a big hall
    tags:
    - adults_talking
    - footsteps
  - annotator_id: 52
    sentence: 'people talk, walk and an announcement plays'
    tags:
    - adults_talking
    - announcement_speech
  filename: airport-lisbon-1000-40000-a.wav
- annotations:
  - annotator_id: 7
    sentence: birds singing while children play
    tags: [birds_singing, children_voices]
  filename: park-helsinki-241-7217-a.wav
"""

AUDIOSET_CSV = """# Segments csv created Sun Mar  5 10:56:58 2017
# num_ytids=3, num_segs=3, num_unique_labels=4, num_positive_labels=5
# YTID, start_seconds, end_seconds, positive_labels
---1_cCGK4M, 0.000, 10.000, "/m/01g50p,/m/0284vy3"
--0PQM4-hqg, 30.000, 40.000, "/m/0jbk"
--0bntG9i7E, 30.500, 40.500, "/m/04rlf,/m/09x0r"
"""


@pytest.fixture
def esc50_root(tmp_path):
    write_file(tmp_path / "ESC-50" / "meta" / "esc50.csv", ESC50_CSV)
    return tmp_path / "ESC-50"


@pytest.fixture
def tut_parent(tmp_path):
    write_file(tmp_path / "TUT-acoustic-scenes-2017-development" / "meta.txt", TUT_DEVELOPMENT_META, "\r\n")
    write_file(tmp_path / "TUT-acoustic-scenes-2017-evaluation" / "meta.txt", TUT_EVALUATION_META)
    return tmp_path


@pytest.fixture
def audioset_csv(tmp_path):
    csv_path = write_file(tmp_path / "unbalanced_train_segments.csv", AUDIOSET_CSV)
    touch(tmp_path / "audio" / "---1_cCGK4M_0.wav")
    touch(tmp_path / "audio" / "--0bntG9i7E_30.wav")
    return csv_path


def assert_manifest(df, n_rows, source):
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert len(df) == n_rows
    assert df["id"].is_unique
    assert set(df["source"]) == {source}
    assert all(Path(path).is_absolute() for path in df["audio_path"])


# ---------------------------------------------------------------- ESC-50


def test_esc50(esc50_root):
    df = read_esc50(esc50_root)
    assert_manifest(df, 3, "esc50")
    first = df.iloc[0]
    assert first["id"] == first["clip_id"] == "esc50/1-100032-A-0.wav"
    assert first["audio_path"] == str(esc50_root / "audio" / "1-100032-A-0.wav")
    assert df["label"].tolist() == ["dog", "chirping_birds", "dog"]
    assert df["fold"].tolist() == ["1", "1", "5"]
    assert df["split"].tolist() == ["", "", ""]
    assert df["esc10"].tolist() == ["True", "False", "True"]
    assert df["recording_id"].tolist() == ["freesound:100032", "freesound:100038", "freesound:9032"]


def test_esc50_non_integer_fold_names_file_and_line(esc50_root):
    write_file(esc50_root / "meta" / "esc50.csv", ESC50_CSV.replace("5-9032-A-0.wav,5,", "5-9032-A-0.wav,five,"))
    with pytest.raises(ManifestError, match=r"esc50\.csv, line 4: column 'fold' must be an integer, got 'five'"):
        read_esc50(esc50_root)


def test_esc50_row_with_a_missing_column(esc50_root):
    write_file(esc50_root / "meta" / "esc50.csv", ESC50_CSV.replace(",100038,A\n", ",100038\n"))
    with pytest.raises(ManifestError, match=r"esc50\.csv, line 3: expected 7 fields"):
        read_esc50(esc50_root)


def test_esc50_header_without_category(esc50_root):
    write_file(esc50_root / "meta" / "esc50.csv", ESC50_CSV.replace("category", "class"))
    with pytest.raises(ManifestError, match=r"line 1: missing column\(s\) \['category'\]"):
        read_esc50(esc50_root)


def test_esc50_missing_metadata_file(tmp_path):
    (tmp_path / "ESC-50").mkdir()
    with pytest.raises(ManifestError, match=r"meta/esc50\.csv: file not found"):
        read_esc50(tmp_path / "ESC-50")


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(ManifestError, match="dataset folder not found"):
        read_esc50(tmp_path / "nowhere")


# ---------------------------------------------------------------- UrbanSound8K


def test_urbansound8k_crlf(tmp_path):
    write_file(tmp_path / "metadata" / "UrbanSound8K.csv", URBANSOUND8K_CSV, "\r\n")
    df = read_urbansound8k(tmp_path)
    assert_manifest(df, 3, "urbansound8k")
    assert df["label"].tolist() == ["dog_bark", "children_playing", "car_horn"]
    assert df["fold"].tolist() == ["5", "5", "10"]
    assert df["audio_path"].iloc[2] == str(tmp_path / "audio" / "fold10" / "99812-1-2-0.wav")
    assert df["fsID"].tolist() == ["100032", "100263", "99812"]
    assert df["recording_id"].tolist() == ["freesound:100032", "freesound:100263", "freesound:99812"]
    assert df["salience"].tolist() == ["1", "1", "2"]


def test_urbansound8k_non_integer_fold(tmp_path):
    write_file(tmp_path / "metadata" / "UrbanSound8K.csv", URBANSOUND8K_CSV.replace(",1,5,2,", ",1,5.5,2,"))
    with pytest.raises(ManifestError, match=r"UrbanSound8K\.csv, line 3: column 'fold'"):
        read_urbansound8k(tmp_path)


# ---------------------------------------------------------------- TUT Acoustic Scenes 2017


def test_tut2017_parent_reads_development_and_evaluation(tut_parent):
    df = read_tut2017(tut_parent)
    assert_manifest(df, 7, "tut2017")
    assert df["split"].tolist() == ["development"] * 4 + ["evaluation"] * 3
    assert df["id"].iloc[0] == "tut2017/development/audio/a001_0_10.wav"
    assert df["id"].iloc[4] == "tut2017/evaluation/audio/1.wav"
    assert df["audio_path"].iloc[4] == str(tut_parent / "TUT-acoustic-scenes-2017-evaluation" / "audio" / "1.wav")
    assert df["label"].tolist()[2:] == ["cafe/restaurant", "city_center", "cafe/restaurant", "city_center", "park"]
    # the recording column, else the file name's prefix; a numbered file names none
    assert df["recording_id"].tolist() == ["tut2017:a001", "tut2017:a001", "tut2017:b005", "tut2017:c010", "", "",
                                           "tut2017:d007"]


def test_tut2017_single_folder(tut_parent):
    df = read_tut2017(tut_parent / "TUT-acoustic-scenes-2017-development")
    assert len(df) == 4 and set(df["split"]) == {"development"}
    assert df["audio_path"].iloc[0] == str(tut_parent / "TUT-acoustic-scenes-2017-development" / "audio" / "a001_0_10.wav")


def test_tut2017_malformed_line(tut_parent):
    meta = tut_parent / "TUT-acoustic-scenes-2017-evaluation" / "meta.txt"
    write_file(meta, TUT_EVALUATION_META + "audio/3.wav beach\n")
    with pytest.raises(ManifestError, match=r"meta\.txt, line 4: expected 'audio/<file>\.wav<TAB>"):
        read_tut2017(tut_parent)


def test_tut2017_evaluation_folder_without_meta(tut_parent):
    (tut_parent / "TUT-acoustic-scenes-2017-evaluation" / "meta.txt").unlink()
    with pytest.raises(ManifestError, match=r"evaluation/meta\.txt: file not found"):
        read_tut2017(tut_parent)


def test_tut2017_folder_without_metadata(tmp_path):
    with pytest.raises(ManifestError, match="no meta.txt here"):
        read_tut2017(tmp_path)


# ---------------------------------------------------------------- Clotho


def test_clotho_one_row_per_caption_with_quoted_commas(tmp_path):
    write_file(tmp_path / "clotho_captions_development.csv", CLOTHO_CSV, "\r\n")
    df = read_clotho(tmp_path)
    assert_manifest(df, 10, "clotho")
    assert df["id"].iloc[0] == "clotho/development/Distorted AM Radio noise.wav#1"
    assert df["clip_id"].nunique() == 2
    birds = df[df["clip_id"] == "clotho/development/ Ambience Birds.wav"]
    assert birds["caption"].tolist() == [
        "Birds chirp in the distance.",
        "Birds, insects and wind, all at once.",
        "A bird sings",
        "Birds are singing",
        'Several birds sing, "loudly", nearby',
    ]
    assert birds["id"].iloc[4] == "clotho/development/ Ambience Birds.wav#5"
    assert set(birds["audio_path"]) == {str(tmp_path / "development" / " Ambience Birds.wav")}
    assert set(df["split"]) == {"development"}


def test_clotho_splits_and_empty_captions(tmp_path):
    write_file(tmp_path / "clotho_captions_development.csv", CLOTHO_CSV)
    write_file(tmp_path / "clotho_captions_evaluation.csv", "file_name,caption_1,caption_2\nx.wav,a cat,\n")
    both = read_clotho(tmp_path)
    assert both["split"].value_counts().to_dict() == {"development": 10, "evaluation": 1}
    only = read_clotho(tmp_path, splits=["evaluation"])
    assert only["id"].tolist() == ["clotho/evaluation/x.wav#1"]
    with pytest.raises(ManifestError, match=r"clotho_captions_validation\.csv: file not found"):
        read_clotho(tmp_path, splits="validation")


def test_clotho_recording_ids_from_its_metadata(tmp_path):
    write_file(tmp_path / "clotho_captions_development.csv", CLOTHO_CSV)
    assert set(read_clotho(tmp_path)["recording_id"]) == {""}  # no metadata: each clip its own recording
    write_file(tmp_path / "clotho_metadata_development.csv",
               "file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license\n"
               "Distorted AM Radio noise.wav,radio;noise,154452,https://freesound.org/people/x/sounds/154452,"
               "\"[0, 1]\",x,CC BY\n Ambience Birds.wav,birds,Not found,,,,\n")
    df = read_clotho(tmp_path)
    recordings = dict(zip(df["clip_id"], df["recording_id"]))
    assert recordings == {"clotho/development/Distorted AM Radio noise.wav": "freesound:154452",
                          "clotho/development/ Ambience Birds.wav": ""}


def test_clotho_unterminated_quote_row_is_an_error(tmp_path):
    broken = CLOTHO_CSV.replace('"Birds, insects and wind, all at once."', '"Birds, insects and wind')
    write_file(tmp_path / "clotho_captions_development.csv", broken)
    with pytest.raises(ManifestError, match=r"clotho_captions_development\.csv, line 3"):
        read_clotho(tmp_path)


def test_clotho_folder_without_captions(tmp_path):
    with pytest.raises(ManifestError, match="none of"):
        read_clotho(tmp_path)


# ---------------------------------------------------------------- AudioCaps


def test_audiocaps(tmp_path):
    write_file(tmp_path / "train.csv", AUDIOCAPS_TRAIN_CSV, "\r\n")
    write_file(tmp_path / "val.csv", AUDIOCAPS_VAL_CSV)
    df = read_audiocaps(tmp_path)
    assert_manifest(df, 3, "audiocaps")
    first = df.iloc[0]
    assert first["id"] == "audiocaps/91139"
    assert first["clip_id"] == "yt:r1nicOVtvkQ_130"
    assert first["audio_path"] == str(tmp_path / "audio" / "train" / "r1nicOVtvkQ_130.wav")
    assert df["caption"].iloc[1] == "The wind is blowing, insects are singing, and rustling occurs"
    assert df["split"].tolist() == ["train", "train", "val"]
    assert read_audiocaps(tmp_path, splits=["val"])["id"].tolist() == ["audiocaps/97151"]
    assert first["recording_id"] == "youtube:r1nicOVtvkQ"


def test_audiocaps_bad_start_time(tmp_path):
    write_file(tmp_path / "train.csv", AUDIOCAPS_TRAIN_CSV.replace(",80,", ",eighty,"))
    with pytest.raises(ManifestError, match=r"train\.csv, line 3: column 'start_time'"):
        read_audiocaps(tmp_path)


def test_audiocaps_and_audioset_rows_of_one_segment_share_clip_id(tmp_path, audioset_csv):
    write_file(tmp_path / "audiocaps" / "val.csv", AUDIOCAPS_VAL_CSV)
    captions = read_audiocaps(tmp_path / "audiocaps")
    pool = read_audioset(audioset_csv)
    assert set(captions["clip_id"]) & set(pool["clip_id"]) == {"yt:---1_cCGK4M_0"}


# ---------------------------------------------------------------- MACS


def test_macs(tmp_path):
    write_file(tmp_path / "MACS.yaml", MACS_YAML)
    df = read_macs(tmp_path)
    assert_manifest(df, 3, "macs")
    assert df["id"].tolist() == [
        "macs/airport-lisbon-1000-40000-a.wav#1",
        "macs/airport-lisbon-1000-40000-a.wav#2",
        "macs/park-helsinki-241-7217-a.wav#1",
    ]
    assert df["clip_id"].iloc[1] == "macs/airport-lisbon-1000-40000-a.wav"
    assert df["caption"].iloc[1] == "people talk, walk and an announcement plays"
    assert df["annotator_id"].tolist() == ["133", "52", "7"]
    assert df["tags"].iloc[2] == "birds_singing,children_voices"
    assert df["audio_path"].iloc[2] == str(tmp_path / "audio" / "park-helsinki-241-7217-a.wav")


@pytest.mark.parametrize(
    "text, message",
    [
        ("entries:\n- filename: a.wav\n", r"line 1: expected a top-level 'files:' list"),
        (MACS_YAML.replace("    sentence: birds singing while children play\n", ""), r"line 15: annotation without a 'sentence'"),
        (MACS_YAML.replace("  filename: park-helsinki-241-7217-a.wav\n", ""), r"line 14: a 'files' item has no 'filename'"),
        ("files:\n- filename: a.wav\n  annotations: none\n", r"line 2: a\.wav: 'annotations' must be a list"),
        ("files: [\n", r"line \d+: invalid YAML"),
    ],
)
def test_macs_malformed(tmp_path, text, message):
    write_file(tmp_path / "MACS.yaml", text)
    with pytest.raises(ManifestError, match=r"MACS\.yaml, " + message):
        read_macs(tmp_path)


# ---------------------------------------------------------------- AudioSet


def test_audioset_drops_segments_without_audio(audioset_csv, caplog):
    with caplog.at_level(logging.WARNING):
        df = read_audioset(audioset_csv)
    assert_manifest(df, 2, "audioset")
    assert df["id"].tolist() == df["clip_id"].tolist() == ["yt:---1_cCGK4M_0", "yt:--0bntG9i7E_30"]
    assert df["label"].tolist() == ["/m/01g50p,/m/0284vy3", "/m/04rlf,/m/09x0r"]
    assert df["recording_id"].tolist() == ["youtube:---1_cCGK4M", "youtube:--0bntG9i7E"]
    assert df["audio_path"].iloc[1] == str(audioset_csv.parent / "audio" / "--0bntG9i7E_30.wav")
    assert df.attrs["missing"] == 1
    assert "1 of 3 segments have no audio file" in caplog.text


def test_audioset_explicit_audio_dir(audioset_csv, tmp_path):
    touch(tmp_path / "elsewhere" / "--0PQM4-hqg_30.wav")
    df = read_audioset(audioset_csv, tmp_path / "elsewhere")
    assert df["id"].tolist() == ["yt:--0PQM4-hqg_30"]
    assert df.attrs["missing"] == 2


def test_audioset_bad_start_names_the_line(audioset_csv):
    write_file(audioset_csv, AUDIOSET_CSV.replace("--0PQM4-hqg, 30.000", "--0PQM4-hqg, soon"))
    with pytest.raises(ManifestError, match=r"line 5: column 'start_seconds'"):
        read_audioset(audioset_csv)


def test_audioset_without_any_audio(tmp_path):
    csv_path = write_file(tmp_path / "segments.csv", AUDIOSET_CSV)
    (tmp_path / "audio").mkdir()
    with pytest.raises(ManifestError, match="none of the 3 segments"):
        read_audioset(csv_path)
    with pytest.raises(ManifestError, match="audio folder not found"):
        read_audioset(csv_path, tmp_path / "absent")


# ---------------------------------------------------------------- FSD50K


def test_fsd50k_dev_and_eval(tmp_path):
    write_file(tmp_path / "FSD50K.ground_truth" / "dev.csv",
               'fname,labels,mids,split\n64760,"Electric_guitar,Guitar","/m/02sgy,/m/0342h",train\n'
               '16399,Bark,/m/05tny_,val\n')
    write_file(tmp_path / "FSD50K.ground_truth" / "eval.csv", "fname,labels,mids\n37199,Bark,/m/05tny_\n")
    df = read_dataset(f"fsd50k:{tmp_path}")
    assert_manifest(df, 3, "fsd50k")
    assert df["id"].tolist() == ["fsd50k/64760", "fsd50k/16399", "fsd50k/37199"]
    assert df["split"].tolist() == ["train", "val", "eval"]
    assert df["label"].iloc[0] == "Electric_guitar,Guitar"
    assert df["audio_path"].iloc[2] == str(tmp_path / "FSD50K.eval_audio" / "37199.wav")
    assert df["recording_id"].tolist() == ["freesound:64760", "freesound:16399", "freesound:37199"]
    with pytest.raises(ManifestError, match=r"FSD50K\.ground_truth: none of"):
        read_fsd50k(tmp_path / "FSD50K.ground_truth")


# ---------------------------------------------------------------- generic CSV and folders


@pytest.mark.parametrize("path_column", ["audio_path", "path", "file", "filename", "file_name"])
def test_csv_manifest_path_columns(tmp_path, path_column):
    csv_path = write_file(
        tmp_path / "mine.csv",
        f'{path_column},caption,speaker\nclips/a.wav,"a dog, barking",x\n/data/b.wav,rain,y\nclips/a.wav,a dog,z\n',
    )
    df = read_csv_manifest(csv_path)
    assert_manifest(df, 3, "mine")
    assert df["audio_path"].tolist() == [str(tmp_path / "clips" / "a.wav"), "/data/b.wav", str(tmp_path / "clips" / "a.wav")]
    assert df["id"].tolist() == ["clips/a.wav#1", "/data/b.wav", "clips/a.wav#2"]
    assert df["clip_id"].tolist() == ["clips/a.wav", "/data/b.wav", "clips/a.wav"]
    assert df["caption"].iloc[0] == "a dog, barking"
    assert df["speaker"].tolist() == ["x", "y", "z"]


def test_csv_manifest_keeps_given_ids_and_labels(tmp_path):
    csv_path = write_file(tmp_path / "l.csv", "id,path,label,similarity\n0001,a.wav,NA,0.75\n")
    df = read_csv_manifest(csv_path)
    assert df["id"].tolist() == ["0001"] and df["label"].tolist() == ["NA"]
    assert df["similarity"].tolist() == [0.75]


@pytest.mark.parametrize(
    "text, message",
    [
        ("where,caption\na.wav,x\n", "line 1: no audio path column"),
        ("path,speaker\na.wav,x\n", "line 1: expected a 'caption' and/or a 'label' column"),
        ("path,label\na.wav,dog\n,cat\n", "line 3: empty 'path'"),
    ],
)
def test_csv_manifest_errors(tmp_path, text, message):
    with pytest.raises(ManifestError, match=message):
        read_csv_manifest(write_file(tmp_path / "bad.csv", text))


def test_folder_pool(tmp_path):
    pool = tmp_path / "pool"
    for name in ["b/2.wav", "a.FLAC", "b/1.mp3", "c/d/3.ogg", "notes.txt", "b/._2.wav", ".hidden.wav"]:
        touch(pool / name)
    df = read_folder(pool)
    assert_manifest(df, 4, "pool")
    assert df["id"].tolist() == ["a.FLAC", "b/1.mp3", "b/2.wav", "c/d/3.ogg"]
    assert df["clip_id"].tolist() == df["id"].tolist()
    assert df["audio_path"].iloc[3] == str(pool / "c" / "d" / "3.ogg")
    assert set(df["caption"]) == set(df["label"]) == {""}


def test_folder_without_audio(tmp_path):
    touch(tmp_path / "readme.txt")
    with pytest.raises(ManifestError, match="no audio files"):
        read_folder(tmp_path)


# ---------------------------------------------------------------- read_dataset


def test_read_dataset_kinds_and_aliases(tmp_path, esc50_root, tut_parent, audioset_csv):
    write_file(tmp_path / "us" / "metadata" / "UrbanSound8K.csv", URBANSOUND8K_CSV)
    write_file(tmp_path / "clotho" / "clotho_captions_development.csv", CLOTHO_CSV)
    write_file(tmp_path / "ac" / "train.csv", AUDIOCAPS_TRAIN_CSV)
    write_file(tmp_path / "macs" / "MACS.yaml", MACS_YAML)
    write_file(tmp_path / "m.csv", "path,label\na.wav,dog\n")
    touch(tmp_path / "other" / "--0PQM4-hqg_30.wav")
    expected = {
        f"esc50:{esc50_root}": ("esc50", 3),
        f"urbansound8k:{tmp_path / 'us'}": ("urbansound8k", 3),
        f"US8K:{tmp_path / 'us'}": ("urbansound8k", 3),
        f"tut2017:{tut_parent}": ("tut2017", 7),
        f"tut17:{tut_parent}": ("tut2017", 7),
        f"clotho:{tmp_path / 'clotho'}": ("clotho", 10),
        f"audiocaps:{tmp_path / 'ac'}": ("audiocaps", 2),
        f"macs:{tmp_path / 'macs'}": ("macs", 3),
        f"csv:{tmp_path / 'm.csv'}": ("m", 1),
        f"audioset:{audioset_csv}": ("audioset", 2),
        f"audioset:{audioset_csv},{tmp_path / 'other'}": ("audioset", 1),
        f"folder:{tmp_path / 'other'}": ("other", 1),
    }
    for spec, (source, n_rows) in expected.items():
        df = read_dataset(spec)
        assert (set(df["source"]), len(df)) == ({source}, n_rows), spec


@pytest.mark.parametrize("spec", ["esc-50:/data", "/data/ESC-50", "fsd50:/data"])
def test_read_dataset_unknown_kind_lists_the_known_ones(spec):
    with pytest.raises(ManifestError, match="esc50, urbansound8k, tut2017, clotho, audiocaps, fsd50k, macs, csv, "
                                            "audioset, folder"):
        read_dataset(spec)


def test_read_dataset_without_path():
    with pytest.raises(ManifestError, match="no path after 'esc50'"):
        read_dataset("esc50:")


# ---------------------------------------------------------------- real metadata files


def real_file(*parts: str) -> Path:
    path = REAL_METADATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real metadata {path} not present")
    return path


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


def test_real_esc50(tmp_path):
    link(real_file("esc50", "esc50.csv"), tmp_path / "meta" / "esc50.csv")
    df = read_esc50(tmp_path)
    assert len(df) == 2000
    assert df["label"].nunique() == 50
    assert sorted(df["fold"].unique()) == ["1", "2", "3", "4", "5"]
    assert (df["esc10"] == "True").sum() == 400


def test_real_urbansound8k(tmp_path):
    link(real_file("urbansound8k", "UrbanSound8K.csv"), tmp_path / "metadata" / "UrbanSound8K.csv")
    df = read_urbansound8k(tmp_path)
    assert len(df) == 8732
    assert df["label"].nunique() == 10
    assert df["fold"].nunique() == 10
    assert df["fold"].value_counts()["1"] == 873
    assert all(Path(path).parent.name == f"fold{fold}" for path, fold in zip(df["audio_path"], df["fold"]))


def test_real_clotho_development(tmp_path):
    link(real_file("clotho", "clotho_captions_development.csv"), tmp_path / "clotho_captions_development.csv")
    df = read_clotho(tmp_path)
    assert len(df) == 19195
    assert df["clip_id"].nunique() == 3839
    assert "clotho/development/ Ambience Birds.wav" in set(df["clip_id"])
    whales = df[df["clip_id"] == "clotho/development/03 Whales Slowing Down.wav"]["caption"].tolist()
    assert whales[1].startswith("The vocalization of several whales, along with the clicking")


def test_real_audiocaps(tmp_path):
    for split in ("train", "val", "test"):
        link(real_file("audiocaps", f"{split}.csv"), tmp_path / "v1" / f"{split}.csv")
    df = read_audiocaps(tmp_path / "v1")
    assert df["split"].value_counts().to_dict() == {"train": 49838, "test": 4875, "val": 2475}
    assert df["clip_id"].str.match(r"^yt:.{11}_\d+$").all()
    assert df["clip_id"][df["split"] == "val"].nunique() == 495


def test_real_audiocaps_v2(tmp_path):
    for split in ("val", "test"):
        link(real_file("audiocaps", "v2.0", f"{split}.csv"), tmp_path / f"{split}.csv")
    df = read_audiocaps(tmp_path)
    assert df["split"].value_counts().to_dict() == {"test": 4875, "val": 2475}


def test_real_audioset_head(tmp_path):
    csv_path = real_file("audioset", "unbalanced_train_segments.head.csv")
    every_segment = read_audioset(csv_path, _audio_dir_with_all_segments(csv_path, tmp_path / "all"))
    assert len(every_segment) == 200 and every_segment.attrs["missing"] == 0
    assert every_segment["id"].iloc[0] == "yt:---1_cCGK4M_0"
    assert every_segment["label"].iloc[0] == "/m/01g50p,/m/0284vy3,/m/06d_3,/m/07jdr,/m/07rwm0c"
    half = tmp_path / "half"
    for path in sorted((tmp_path / "all").iterdir())[::2]:
        touch(half / path.name)
    assert read_audioset(csv_path, half).attrs["missing"] == 100


def _audio_dir_with_all_segments(csv_path: Path, audio_dir: Path) -> Path:
    """Touch `{YTID}_{int(start)}.wav` for every segment line of the real CSV."""
    for line in csv_path.read_text().splitlines():
        if line and not line.startswith("#"):
            youtube_id, start = (field.strip() for field in line.split(",")[:2])
            touch(audio_dir / f"{youtube_id}_{int(float(start))}.wav")
    return audio_dir


# ---------------------------------------------------------------- sources shared between real datasets


def shared_recordings(a, b) -> set:
    return (set(a["recording_id"]) & set(b["recording_id"])) - {""}


@pytest.fixture
def real_fsd50k(tmp_path):
    for part in ("dev", "eval"):
        link(real_file("fsd50k", f"{part}.head.csv"), tmp_path / "fsd50k" / "FSD50K.ground_truth" / f"{part}.csv")
    return read_fsd50k(tmp_path / "fsd50k")


def test_real_recording_ids_and_source_overlaps(tmp_path, real_fsd50k):
    """Recording ids of the real metadata, and the sources the datasets share (counts in the
    closing note: AudioCaps against the AudioSet head, ESC-50 against the FSD50K heads)."""
    for split in ("train", "val", "test"):
        link(real_file("audiocaps", f"{split}.csv"), tmp_path / "audiocaps" / f"{split}.csv")
    audiocaps = read_audiocaps(tmp_path / "audiocaps")
    csv_path = real_file("audioset", "unbalanced_train_segments.head.csv")
    audioset = read_audioset(csv_path, _audio_dir_with_all_segments(csv_path, tmp_path / "audioset"))
    link(real_file("esc50", "esc50.csv"), tmp_path / "esc50" / "meta" / "esc50.csv")
    esc50 = read_esc50(tmp_path / "esc50")
    link(real_file("urbansound8k", "UrbanSound8K.csv"), tmp_path / "us8k" / "metadata" / "UrbanSound8K.csv")
    us8k = read_urbansound8k(tmp_path / "us8k")
    assert esc50["recording_id"].str.match(r"^freesound:\d+$").all()
    assert esc50["recording_id"].nunique() == 1524  # ESC-50's 2,000 clips come from 1,524 Freesound sounds
    assert us8k["recording_id"].nunique() == 1297  # UrbanSound8K's 8,732 slices from 1,297 sounds
    assert audiocaps["recording_id"].str.match(r"^youtube:.{11}$").all()
    assert len(real_fsd50k) == 142 and real_fsd50k["recording_id"].nunique() == 142
    assert len(shared_recordings(audiocaps, audioset)) == AUDIOCAPS_IN_AUDIOSET_HEAD
    assert len(shared_recordings(esc50, real_fsd50k)) == ESC50_IN_FSD50K_HEADS
    assert len(shared_recordings(esc50, us8k)) == ESC50_IN_URBANSOUND8K
