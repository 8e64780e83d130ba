"""The manifest schema, CSV/Parquet round trips, strict CSV reading and the content hash."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from clapcurate.data.manifest import (
    MANIFEST_COLUMNS,
    manifest_hash,
    normalize_manifest,
    read_csv_table,
    read_manifest,
    write_manifest,
)
from clapcurate.errors import ClapcurateError, ManifestError


def write_bytes(path, text: str, newline: str = "\n"):
    """Write `text` with the given line ending, byte for byte."""
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def small_manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["0001", "0002", "NA"],
            "audio_path": ["audio/a.wav", "/abs/b.wav", "audio/a.wav"],
            "caption": ["a dog barks, twice", 'she said "hello"', ""],
            "label": ["NA", "", "null"],
            "similarity": [0.5, 0.1 + 0.2, float("nan")],
            "speaker": ["x", "y", "z"],
        }
    )


# ---------------------------------------------------------------- normalize_manifest


def test_normalize_adds_columns_in_order_and_keeps_extras():
    df = normalize_manifest(small_manifest(), source="pool")
    assert list(df.columns) == [*MANIFEST_COLUMNS, "similarity", "speaker"]
    assert df["clip_id"].tolist() == ["0001", "0002", "NA"]  # defaults to id
    assert df["source"].tolist() == ["pool"] * 3
    assert df["fold"].tolist() == ["", "", ""]
    assert df["speaker"].tolist() == ["x", "y", "z"]


def test_normalize_keeps_given_clip_id_and_source_and_fills_missing_strings():
    df = pd.DataFrame(
        {"id": ["a", "b"], "clip_id": ["clip", None], "source": ["esc50", ""], "fold": ["1", None]}
    )
    out = normalize_manifest(df, source="fallback")
    assert out["clip_id"].tolist() == ["clip", "b"]
    assert out["source"].tolist() == ["esc50", "fallback"]
    assert out["fold"].tolist() == ["1", ""]


def test_normalize_converts_float_columns():
    df = pd.DataFrame({"id": ["a", "b"], "duration": ["1.5", ""], "similarity": [0.25, 1]})
    out = normalize_manifest(df)
    assert out["duration"].iloc[0] == 1.5 and math.isnan(out["duration"].iloc[1])
    assert out["similarity"].dtype == float


def test_normalize_does_not_modify_its_input():
    df = pd.DataFrame({"id": ["a"]})
    normalize_manifest(df, source="x")
    assert list(df.columns) == ["id"]


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"audio_path": ["a.wav"]}), "no 'id' column"),
        (pd.DataFrame({"id": ["a", ""]}), "row 1 has an empty 'id'"),
        (pd.DataFrame({"id": ["a", "b", "a"]}), "repeated, e.g. 'a'"),
        (pd.DataFrame({"id": ["a"], "duration": ["long"]}), "'duration' must hold numbers"),
    ],
)
def test_normalize_rejects_bad_manifests(frame, message):
    with pytest.raises(ManifestError, match=message) as info:
        normalize_manifest(frame, origin="pool.csv")
    assert str(info.value).startswith("pool.csv: ")
    assert isinstance(info.value, ClapcurateError)


# ---------------------------------------------------------------- read / write


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_strings_and_floats(tmp_path, suffix):
    path = write_manifest(small_manifest(), tmp_path / "sub" / f"pool{suffix}")
    back = read_manifest(path)
    expected = normalize_manifest(small_manifest())
    for column in ("id", "caption", "label", "speaker", "clip_id"):
        assert back[column].tolist() == expected[column].tolist(), column
    assert back["similarity"].iloc[1] == 0.1 + 0.2
    assert math.isnan(back["similarity"].iloc[2])
    assert back["audio_path"].tolist() == [
        str(tmp_path / "sub" / "audio" / "a.wav"),
        "/abs/b.wav",
        str(tmp_path / "sub" / "audio" / "a.wav"),
    ]


def test_write_csv_keeps_audio_path_as_given(tmp_path):
    path = write_manifest(small_manifest(), tmp_path / "pool.csv")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert raw["audio_path"].tolist() == ["audio/a.wav", "/abs/b.wav", "audio/a.wav"]
    assert not list(tmp_path.glob(".*partial"))


def test_write_rejects_duplicate_ids_and_leaves_no_file(tmp_path):
    df = pd.DataFrame({"id": ["a", "a"], "audio_path": ["x.wav", "y.wav"]})
    with pytest.raises(ManifestError, match="pool.csv"):
        write_manifest(df, tmp_path / "pool.csv")
    assert not (tmp_path / "pool.csv").exists()


def test_read_manifest_crlf_and_quoted_newlines(tmp_path):
    text = 'id,audio_path,caption\n1,a.wav,"rain, then\nthunder"\n2,b.wav,plain\n'
    path = write_bytes(tmp_path / "m.csv", text, newline="\r\n")
    df = read_manifest(path)
    assert df["caption"].tolist() == ["rain, then\r\nthunder", "plain"]
    assert df["id"].tolist() == ["1", "2"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("m.txt", "id\na\n", "unknown manifest format '.txt'"),
        ("m.csv", None, "manifest file not found"),
        ("m.csv", "id,audio_path\na,x.wav\nb\n", "line 3: expected 2 fields"),
        ("m.csv", "caption\na dog\n", "no 'id' and no 'audio_path' column"),
        ("m.csv", "", "empty file"),
        ("m.parquet", "not parquet", "unreadable Parquet"),
    ],
)
def test_read_manifest_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_ids_are_derived_from_the_paths_when_a_manifest_has_none(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("audio_path,caption\na.wav,a dog\nb.wav,rain\na.wav,a dog barks\n")
    manifest = read_manifest(path)
    assert manifest["id"].tolist() == ["a.wav#1", "b.wav", "a.wav#2"]
    assert manifest["clip_id"].tolist() == ["a.wav", "b.wav", "a.wav"]  # one clip, two captions
    assert manifest["audio_path"].tolist()[1] == str(tmp_path / "b.wav")


# ---------------------------------------------------------------- read_csv_table


def test_csv_table_line_numbers_count_comments_blank_lines_and_multiline_fields(tmp_path):
    text = '# comment\nname,text\n\nx,"two\nlines"\n# another\ny,one\n'
    table = read_csv_table(write_bytes(tmp_path / "t.csv", text, "\r\n"), comment_prefix="#")
    assert table.header == ["name", "text"]
    assert table.lines == [4, 7]
    assert [row for _, row in table.records()][1] == {"name": "y", "text": "one"}


def test_csv_table_error_line_after_multiline_field(tmp_path):
    path = write_bytes(tmp_path / "t.csv", 'a,b\n1,"x\ny"\n2,3,4\n')
    with pytest.raises(ManifestError, match=r"t\.csv, line 4: expected 2 fields"):
        read_csv_table(path)


def test_csv_table_rejects_duplicated_header(tmp_path):
    with pytest.raises(ManifestError, match=r"line 1: duplicated column\(s\) \['a'\]"):
        read_csv_table(write_bytes(tmp_path / "t.csv", "a,b,a\n1,2,3\n"))


def test_csv_table_rejects_non_utf8(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_csv_table(path)


# ---------------------------------------------------------------- manifest_hash


def test_hash_is_stable_and_ignores_column_order():
    df = normalize_manifest(small_manifest())
    assert manifest_hash(df) == manifest_hash(df.copy())
    assert manifest_hash(df) == manifest_hash(df[list(reversed(df.columns))])


def test_hash_depends_on_row_order_and_values():
    df = normalize_manifest(small_manifest())
    reference = manifest_hash(df)
    assert manifest_hash(df.iloc[::-1].reset_index(drop=True)) != reference
    changed = df.copy()
    changed.loc[1, "caption"] = "a cat"
    assert manifest_hash(changed) != reference
    renamed = df.rename(columns={"speaker": "talker"})
    assert manifest_hash(renamed) != reference


def test_hash_survives_a_parquet_round_trip(tmp_path):
    df = normalize_manifest(small_manifest())
    df["audio_path"] = ["/abs/a.wav", "/abs/b.wav", "/abs/c.wav"]
    back = read_manifest(write_manifest(df, tmp_path / "m.parquet"))
    assert manifest_hash(back) == manifest_hash(df)


def test_recording_ids_fall_back_to_the_clip():
    from clapcurate.data.manifest import freesound_recording, recording_ids, youtube_recording

    manifest = pd.DataFrame({"id": ["a#0", "b", "c"], "clip_id": ["a", "b", "c"],
                             "recording_id": ["freesound:1", "", None]})
    assert recording_ids(manifest).tolist() == ["freesound:1", "b", "c"]
    assert recording_ids(manifest).index.tolist() == ["a#0", "b", "c"]  # looked up by the rows' ids
    assert recording_ids(manifest.drop(columns="recording_id")).tolist() == ["a", "b", "c"]
    assert freesound_recording(" 0042 ") == "freesound:42" and freesound_recording("Not found") == ""
    assert youtube_recording("--0PQM4-hqg") == "youtube:--0PQM4-hqg" and youtube_recording("") == ""
