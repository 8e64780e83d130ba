"""`clapcurate inspect`: formats, rates, channels, durations, problem files and duplicate content
of generated files in several formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import soundfile

from clapcurate.cli import main
from clapcurate.content import duplicate_groups, inspect_files


def tone(seconds: float, rate: int, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * frequency * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_folder(folder):
    folder.mkdir()
    soundfile.write(folder / "a.wav", tone(1.0, 16000), 16000, subtype="PCM_16")
    samples, rate = soundfile.read(folder / "a.wav", dtype="int16")
    soundfile.write(folder / "a_again.flac", samples, rate, subtype="PCM_16")  # a lossless re-encoding
    soundfile.write(folder / "b.ogg", tone(0.5, 44100, 2, 660.0), 44100, format="OGG", subtype="VORBIS")
    soundfile.write(folder / "c.flac", tone(2.0, 22050, 1, 220.0), 22050)
    (folder / "c_copy.flac").write_bytes((folder / "c.flac").read_bytes())
    soundfile.write(folder / "click.wav", np.full(32, 0.5, np.float32), 16000)  # 2 ms
    soundfile.write(folder / "quiet.wav", np.zeros(8000, np.float32), 16000)
    (folder / "broken.mp3").write_bytes(b"ID3 not really an mp3")
    return folder


def test_inspect_files_reports_each_file_and_groups_duplicate_content(tmp_path):
    folder = write_folder(tmp_path / "mixed")
    table = inspect_files(sorted(str(path) for path in folder.iterdir()))
    table = table.set_index(pd.Index([path.rsplit("/", 1)[1] for path in table["audio_path"]], name="name"))
    assert table.loc["b.ogg", ["format", "subtype", "sample_rate", "channels"]].tolist() == ["OGG", "VORBIS", 44100, 2]
    assert table.loc["c.flac", "duration"] == 2.0 and table.loc["a.wav", "peak"] > 0.29
    assert table["problem"].to_dict() == {"a.wav": "", "a_again.flac": "", "b.ogg": "", "broken.mp3": "unreadable",
                                          "c.flac": "", "c_copy.flac": "", "click.wav": "near-empty",
                                          "quiet.wav": "silent"}
    assert table.loc["click.wav", "reason"] == "2.0 ms of audio (under 50 ms)"
    groups = table.groupby("duplicate_group").groups
    assert sorted(map(sorted, (list(v) for k, v in groups.items() if k))) == [["a.wav", "a_again.flac"],
                                                                             ["c.flac", "c_copy.flac"]]
    assert sorted(map(sorted, duplicate_groups(table["audio_path"]))) == sorted(
        sorted(str(folder / name) for name in pair) for pair in (["a.wav", "a_again.flac"], ["c.flac", "c_copy.flac"]))


def test_inspect_command_prints_tables_and_writes_the_csv(tmp_path, capsys):
    folder = write_folder(tmp_path / "mixed")
    main(["inspect", f"folder:{folder}", "--csv", str(tmp_path / "inspect.csv")])
    out = " ".join(capsys.readouterr().out.split())
    assert "OGG / VORBIS" in out and "44100" in out and "3 problem file(s)" in out
    assert "8 files of folder:" in out and "1 unreadable, 1 near-empty, 1 silent" in out
    assert "4 files in 2 group(s) of duplicate content" in out
    written = pd.read_csv(tmp_path / "inspect.csv", keep_default_na=False)
    assert len(written) == 8 and set(written.columns) >= {"audio_path", "format", "sample_rate", "channels",
                                                          "duration", "problem", "content", "duplicate_group"}
