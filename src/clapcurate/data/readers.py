"""Readers for the real on-disk layouts of the datasets the study uses.

Each reader returns a normalised manifest (see `manifest.py`) with absolute
`audio_path`. Missing or malformed metadata raises `ManifestError` naming the
file and, where there is one, the line. `read_dataset("kind:path")` picks the
reader from a spec string, as the command line writes it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import yaml

from ..errors import ConfigError, ManifestError
from .manifest import (
    CSV_SUFFIXES, PARQUET_SUFFIXES, freesound_recording, label_names, normalize_manifest, path_ids, read_csv_table,
    read_manifest, read_text, youtube_clip_id, youtube_recording,
)

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
CLOTHO_SPLITS = ("development", "validation", "evaluation")
AUDIOCAPS_SPLITS = ("train", "val", "test")
TUT2017_FOLDERS = {
    "development": "TUT-acoustic-scenes-2017-development",
    "evaluation": "TUT-acoustic-scenes-2017-evaluation",
}
CSV_PATH_COLUMNS = ("audio_path", "path", "file", "filename", "file_name")
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
URBANSOUND8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
AUDIOSET_COLUMNS = ("YTID", "start_seconds", "end_seconds", "positive_labels")
FSD50K_COLUMNS = ("fname", "labels")
FSD50K_SPLITS = {"dev": "FSD50K.dev_audio", "eval": "FSD50K.eval_audio"}
TUT2017_RECORDING = re.compile(r"^([A-Za-z]+\d+)_\d+_\d+$")  # a001_40_50.wav: recording a001, seconds 40-50

PathLike = str | os.PathLike


# ---------------------------------------------------------------- helpers


def _existing_dir(root: PathLike) -> Path:
    root = Path(root).absolute()
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset folder not found")
    return root


def _manifest(records: list[dict[str, Any]], origin: Path, source: str) -> pd.DataFrame:
    """The normalised manifest of `records`; no records at all is an error."""
    if not records:
        raise ManifestError(f"{origin}: no data rows")
    return normalize_manifest(pd.DataFrame.from_records(records), source=source, origin=origin)


def _integer(value: str, column: str, path: Path, line: int) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ManifestError(
            f"{path}, line {line}: column {column!r} must be an integer, got {value!r}"
        ) from None


def _seconds(value: str, column: str, path: Path, line: int) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ManifestError(
            f"{path}, line {line}: column {column!r} must be a number of seconds, got {value!r}"
        )
    return seconds


def _split_files(
    root: Path, splits: Sequence[str] | str | None, known_splits: Sequence[str], file_pattern: str
) -> list[tuple[str, Path]]:
    """(split, metadata file) pairs: the given splits (each file must exist),
    or, when `splits` is None, every known split whose file is present."""
    if splits is None:
        found = [(split, root / file_pattern.format(split)) for split in known_splits]
        present = [(split, path) for split, path in found if path.is_file()]
        if not present:
            raise ManifestError(f"{root}: none of {[path.name for _, path in found]} found")
        return present
    chosen = (splits,) if isinstance(splits, str) else tuple(splits)
    return [(split, root / file_pattern.format(split)) for split in chosen]


# ---------------------------------------------------------------- labelled sets


def read_esc50(root: PathLike) -> pd.DataFrame:
    """ESC-50: `meta/esc50.csv`, audio in `audio/`. label = category; recording_id =
    `freesound:{src_file}` (the Freesound sound the clip was cut from); keeps `esc10` and `target`."""
    root = _existing_dir(root)
    table = read_csv_table(root / "meta" / "esc50.csv", ESC50_COLUMNS)
    records = [
        {
            "id": f"esc50/{row['filename']}",
            "audio_path": str(root / "audio" / row["filename"]),
            "label": row["category"],
            "fold": str(_integer(row["fold"], "fold", table.path, line)),
            "recording_id": freesound_recording(row["src_file"]),
            "esc10": row["esc10"],
            "target": row["target"],
        }
        for line, row in table.records()
    ]
    return _manifest(records, table.path, "esc50")


def read_urbansound8k(root: PathLike) -> pd.DataFrame:
    """UrbanSound8K: `metadata/UrbanSound8K.csv`, audio in `audio/fold{N}/`.
    label = class; recording_id = `freesound:{fsID}`; keeps `fsID`, `salience` and `classID`."""
    root = _existing_dir(root)
    table = read_csv_table(root / "metadata" / "UrbanSound8K.csv", URBANSOUND8K_COLUMNS)
    records = []
    for line, row in table.records():
        fold = _integer(row["fold"], "fold", table.path, line)
        records.append(
            {
                "id": f"urbansound8k/{row['slice_file_name']}",
                "audio_path": str(root / "audio" / f"fold{fold}" / row["slice_file_name"]),
                "label": row["class"],
                "fold": str(fold),
                "recording_id": freesound_recording(row["fsID"]),
                "fsID": row["fsID"],
                "salience": row["salience"],
                "classID": row["classID"],
            }
        )
    return _manifest(records, table.path, "urbansound8k")


def _tut2017_split(folder_name: str) -> str:
    name = folder_name.lower()
    return next((split for split in TUT2017_FOLDERS if split in name), "")


def _tut2017_recording(given: str, relative_path: str) -> str:
    """`tut2017:{recording}`: the recording column of `meta.txt`, else the file name's prefix
    (`a001_40_50.wav` -> a001); "" when neither names one."""
    match = TUT2017_RECORDING.match(Path(relative_path).stem)
    recording = given or (match.group(1) if match else "")
    return f"tut2017:{recording}" if recording else ""


def _tut2017_records(folder: Path, split: str) -> list[dict[str, str]]:
    """Rows of one TUT folder's `meta.txt`: `audio/<file>.wav<TAB><scene>[<TAB><recording>]`."""
    meta = folder / "meta.txt"
    records = []
    for line, text in enumerate(io.StringIO(read_text(meta), newline=None), start=1):
        if not text.strip():
            continue
        fields = [field.strip() for field in text.strip().split("\t")]
        if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
            raise ManifestError(
                f"{meta}, line {line}: expected 'audio/<file>.wav<TAB><scene label>"
                f"[<TAB><recording id>]', got {text.strip()!r}"
            )
        relative_path, scene = fields[0], fields[1]
        records.append(
            {
                "id": "/".join(part for part in ("tut2017", split, relative_path) if part),
                "audio_path": str(folder / relative_path),
                "label": scene,
                "split": split,
                "recording_id": _tut2017_recording(fields[2] if len(fields) == 3 else "", relative_path),
            }
        )
    if not records:
        raise ManifestError(f"{meta}: no data rows")
    return records


def read_tut2017(root: PathLike) -> pd.DataFrame:
    """TUT Acoustic Scenes 2017: a development or evaluation folder holding
    `meta.txt` and `audio/`, or a parent folder holding the
    `TUT-acoustic-scenes-2017-{development,evaluation}` folders (each one
    present is read; split = development / evaluation). label = the scene; recording_id =
    `tut2017:{recording}` (the segments of one recording share it)."""
    root = _existing_dir(root)
    if (root / "meta.txt").is_file():
        folders = [(_tut2017_split(root.name), root)]
    else:
        folders = [(split, root / name) for split, name in TUT2017_FOLDERS.items() if (root / name).is_dir()]
        if not folders:
            raise ManifestError(
                f"{root}: no meta.txt here and no {list(TUT2017_FOLDERS.values())} folder below"
            )
    records = [record for split, folder in folders for record in _tut2017_records(folder, split)]
    return _manifest(records, root, "tut2017")


# ---------------------------------------------------------------- captioned sets


def read_clotho(root: PathLike, splits: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Clotho: `clotho_captions_{split}.csv` (file_name, caption_1..5), audio in
    `{split}/` beside them. One row per non-empty caption: id
    `clotho/{split}/{file}#{k}`, clip_id `clotho/{split}/{file}`; recording_id =
    `freesound:{sound_id}` where `clotho_metadata_{split}.csv` beside the captions gives the
    clip's Freesound `sound_id`. `splits=None` reads every split whose CSV is present."""
    root = _existing_dir(root)
    records = []
    for split, csv_path in _split_files(root, splits, CLOTHO_SPLITS, "clotho_captions_{}.csv"):
        sound_ids = _clotho_sound_ids(root / f"clotho_metadata_{split}.csv")
        table = read_csv_table(csv_path, ("file_name",))
        caption_columns = [column for column in table.header if column.startswith("caption_")]
        if not caption_columns:
            raise ManifestError(f"{csv_path}, line 1: no caption_N column; the header has {table.header}")
        for _, row in table.records():
            clip_id = f"clotho/{split}/{row['file_name']}"
            audio_path = str(root / split / row["file_name"])
            for column in caption_columns:
                caption = row[column].strip()
                if caption:
                    records.append(
                        {
                            "id": f"{clip_id}#{column.removeprefix('caption_')}",
                            "clip_id": clip_id,
                            "audio_path": audio_path,
                            "caption": caption,
                            "split": split,
                            "recording_id": freesound_recording(sound_ids.get(row["file_name"], "")),
                        }
                    )
    return _manifest(records, root, "clotho")


def _clotho_sound_ids(path: Path) -> dict[str, str]:
    """{file_name: Freesound sound_id} from a Clotho metadata CSV; {} when there is none."""
    if not path.is_file():
        return {}
    table = read_csv_table(path, ("file_name", "sound_id"))
    return {row["file_name"]: row["sound_id"] for _, row in table.records()}


def read_audiocaps(root: PathLike, splits: Sequence[str] | str | None = None) -> pd.DataFrame:
    """AudioCaps (v1 or 2.0): `{split}.csv` (audiocap_id, youtube_id,
    start_time, caption), audio at `audio/{split}/{youtube_id}_{start_time}.wav`.
    id `audiocaps/{audiocap_id}`, clip_id `yt:{youtube_id}_{int(start_time)}`, recording_id
    `youtube:{youtube_id}`. `splits=None` reads every split whose CSV is present."""
    root = _existing_dir(root)
    records = []
    for split, csv_path in _split_files(root, splits, AUDIOCAPS_SPLITS, "{}.csv"):
        table = read_csv_table(csv_path, AUDIOCAPS_COLUMNS)
        for line, row in table.records():
            start = _seconds(row["start_time"], "start_time", csv_path, line)
            records.append(
                {
                    "id": f"audiocaps/{row['audiocap_id']}",
                    "clip_id": youtube_clip_id(row["youtube_id"], start),
                    "audio_path": str(root / "audio" / split / f"{row['youtube_id']}_{row['start_time']}.wav"),
                    "caption": row["caption"].strip(),
                    "split": split,
                    "recording_id": youtube_recording(row["youtube_id"]),
                    "audiocap_id": row["audiocap_id"],
                    "youtube_id": row["youtube_id"],
                    "start_time": row["start_time"],
                }
            )
    return _manifest(records, root, "audiocaps")


_LINE_KEY = "__line__"


class _LineNumberLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """A safe YAML loader whose mappings carry the 1-based line they start on
    under the key `_LINE_KEY`, so structural errors can name the line."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping[_LINE_KEY] = node.start_mark.line + 1
        return mapping


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.load(read_text(path), Loader=_LineNumberLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise ManifestError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from exc


def _mapping_items(value: Any, path: Path, line: int, what: str) -> list[dict]:
    """`value` checked to be a list of mappings (`what` names it in errors)."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ManifestError(f"{path}, line {line}: {what} must be a list of mappings")
    return value


def read_macs(root: PathLike) -> pd.DataFrame:
    """MACS: `MACS.yaml` (a top-level `files:` list; each item has `filename`
    and `annotations:`, each annotation `annotator_id`, `sentence`, `tags`),
    audio in `audio/`. One row per annotation: id `macs/{file}#{k}` (k counts
    the file's annotations from 1), clip_id `macs/{file}`, caption = sentence;
    keeps `annotator_id` and `tags` (joined by ",")."""
    root = _existing_dir(root)
    yaml_path = root / "MACS.yaml"
    document = _load_yaml(yaml_path)
    if not isinstance(document, dict) or "files" not in document:
        raise ManifestError(f"{yaml_path}, line 1: expected a top-level 'files:' list")
    files = _mapping_items(document["files"], yaml_path, document[_LINE_KEY], "'files'")
    records = []
    for item in files:
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename:
            raise ManifestError(f"{yaml_path}, line {item[_LINE_KEY]}: a 'files' item has no 'filename'")
        annotations = _mapping_items(item.get("annotations"), yaml_path, item[_LINE_KEY], f"{filename}: 'annotations'")
        clip_id = f"macs/{filename}"
        for k, annotation in enumerate(annotations, start=1):
            sentence = annotation.get("sentence")
            if not isinstance(sentence, str) or not sentence.strip():
                raise ManifestError(f"{yaml_path}, line {annotation[_LINE_KEY]}: annotation without a 'sentence'")
            records.append(
                {
                    "id": f"{clip_id}#{k}",
                    "clip_id": clip_id,
                    "audio_path": str(root / "audio" / filename),
                    "caption": sentence.strip(),
                    "annotator_id": str(annotation.get("annotator_id", "")),
                    "tags": ",".join(str(tag) for tag in annotation.get("tags") or ()),
                }
            )
    return _manifest(records, yaml_path, "macs")


def read_fsd50k(root: PathLike) -> pd.DataFrame:
    """FSD50K: `FSD50K.ground_truth/{dev,eval}.csv` (fname, labels, mids[, split]), audio in
    `FSD50K.dev_audio/` and `FSD50K.eval_audio/` (`{fname}.wav`); each ground-truth file present
    is read. id `fsd50k/{fname}`, label = the labels (comma-separated), split = the dev file's
    `split` column (train / val) or `eval`; recording_id = `freesound:{fname}` (FSD50K names each
    clip by its Freesound id)."""
    root = _existing_dir(root)
    truth = root / "FSD50K.ground_truth"
    present = [(part, truth / f"{part}.csv") for part in FSD50K_SPLITS if (truth / f"{part}.csv").is_file()]
    if not present:
        raise ManifestError(f"{truth}: none of {[f'{part}.csv' for part in FSD50K_SPLITS]} found")
    records = []
    for part, csv_path in present:
        table = read_csv_table(csv_path, FSD50K_COLUMNS)
        for _, row in table.records():
            records.append(
                {
                    "id": f"fsd50k/{row['fname']}",
                    "audio_path": str(root / FSD50K_SPLITS[part] / f"{row['fname']}.wav"),
                    "label": ",".join(label_names(row["labels"])),
                    "split": row.get("split") or part,
                    "recording_id": freesound_recording(row["fname"]),
                    "mids": row.get("mids", ""),
                }
            )
    return _manifest(records, truth, "fsd50k")


# ---------------------------------------------------------------- generic inputs and pools


def read_csv_manifest(path: PathLike) -> pd.DataFrame:
    """A generic CSV: a path column (the first of `audio_path`, `path`, `file`,
    `filename`, `file_name`) plus `caption` and/or `label`; other columns are
    kept. Relative paths resolve against the CSV's folder. Without an `id`
    column, id = the path as written (`{path}#{k}` when a path has several
    rows: `manifest.path_ids`); clip_id defaults to the path as written, source
    to the CSV's stem."""
    path = Path(path).absolute()
    table = read_csv_table(path)
    path_column = next((column for column in CSV_PATH_COLUMNS if column in table.header), None)
    if path_column is None:
        raise ManifestError(f"{path}, line 1: no audio path column; expected one of {list(CSV_PATH_COLUMNS)}")
    if "caption" not in table.header and "label" not in table.header:
        raise ManifestError(f"{path}, line 1: expected a 'caption' and/or a 'label' column")
    default_ids = path_ids([fields[table.header.index(path_column)] for fields in table.rows])
    records = []
    for (line, row), default_id in zip(table.records(), default_ids):
        written = row.pop(path_column)
        if not written:
            raise ManifestError(f"{path}, line {line}: empty {path_column!r}")
        row["id"] = row.get("id") or default_id
        row["clip_id"] = row.get("clip_id") or written
        row["audio_path"] = str(path.parent / written)
        records.append(row)
    return _manifest(records, path, path.stem)


def _audio_file_names(audio_dir: Path) -> set[str]:
    """The names in `audio_dir`, listed once (a stat per segment is slow on big pools)."""
    if not audio_dir.is_dir():
        raise ManifestError(f"{audio_dir}: audio folder not found")
    return set(os.listdir(audio_dir))


def read_audioset(csv_path: PathLike, audio_dir: PathLike | None = None) -> pd.DataFrame:
    """An AudioSet segments CSV (`#` comment lines, then `YTID, start_seconds,
    end_seconds, "positive_labels"`), audio at `{audio_dir}/{YTID}_{int(start)}.wav`
    (`audio_dir` defaults to `audio/` beside the CSV).

    id = clip_id = `yt:{YTID}_{int(start)}`; recording_id = `youtube:{YTID}`; label = the positive
    label mids joined by ",". Segments whose audio file is missing are dropped; their
    count is logged and kept in `df.attrs["missing"]`."""
    csv_path = Path(csv_path).absolute()
    audio_dir = csv_path.parent / "audio" if audio_dir is None else Path(audio_dir).absolute()
    present = _audio_file_names(audio_dir)
    table = read_csv_table(csv_path, fieldnames=AUDIOSET_COLUMNS, comment_prefix="#", skipinitialspace=True)
    records = []
    for line, row in table.records():
        start = _seconds(row["start_seconds"], "start_seconds", csv_path, line)
        _seconds(row["end_seconds"], "end_seconds", csv_path, line)
        file_name = f"{row['YTID']}_{int(start)}.wav"
        if file_name in present:
            records.append(
                {
                    "id": youtube_clip_id(row["YTID"], start),
                    "audio_path": str(audio_dir / file_name),
                    "label": ",".join(label_names(row["positive_labels"])),
                    "recording_id": youtube_recording(row["YTID"]),
                    "start_seconds": row["start_seconds"],
                    "end_seconds": row["end_seconds"],
                }
            )
    missing = len(table.rows) - len(records)
    if missing:
        logger.warning(
            "%s: %d of %d segments have no audio file in %s and were dropped",
            csv_path, missing, len(table.rows), audio_dir,
        )
    if not records:
        raise ManifestError(f"{csv_path}: none of the {len(table.rows)} segments has an audio file in {audio_dir}")
    manifest = _manifest(records, csv_path, "audioset")
    manifest.attrs["missing"] = missing
    return manifest


def _is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def read_folder(root: PathLike) -> pd.DataFrame:
    """Every audio file below `root` (by extension, hidden files skipped),
    sorted, as an unlabelled pool: id = clip_id = the relative path,
    source = the folder's name."""
    root = _existing_dir(root)
    relative_paths = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if _is_audio_file(path))
    if not relative_paths:
        raise ManifestError(f"{root}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) below this folder")
    records = [{"id": relative, "audio_path": str(root / relative)} for relative in relative_paths]
    return _manifest(records, root, root.name)


def read_class_folders(root: PathLike) -> pd.DataFrame:
    """A labelled set laid out one folder per class: `root/<class>/**/<audio file>`. label = the
    class folder's name, id = clip_id = the path relative to `root`, source = `root`'s name.
    Audio files directly in `root` (outside a class folder) are an error."""
    root = _existing_dir(root)
    loose = sorted(path.name for path in root.iterdir() if _is_audio_file(path))
    if loose:
        raise ManifestError(f"{root}: audio files outside a class folder (e.g. {loose[0]}); a folder-per-class "
                            "set holds one subfolder per class, each with that class's audio files")
    records = [
        {"id": relative, "audio_path": str(root / relative), "label": relative.split("/", 1)[0]}
        for relative in sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if _is_audio_file(path))
    ]
    if not records:
        raise ManifestError(f"{root}: no class folders with audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}); "
                            "a folder-per-class set is ROOT/<class>/<audio files>")
    return _manifest(records, root, root.name)


# ---------------------------------------------------------------- dataset specs


def _read_audioset_spec(location: str) -> pd.DataFrame:
    csv_path, _, audio_dir = location.partition(",")
    return read_audioset(csv_path, audio_dir or None)


DATASET_READERS: dict[str, Callable[[str], pd.DataFrame]] = {
    "esc50": read_esc50,
    "urbansound8k": read_urbansound8k,
    "tut2017": read_tut2017,
    "clotho": read_clotho,
    "audiocaps": read_audiocaps,
    "fsd50k": read_fsd50k,
    "macs": read_macs,
    "csv": read_csv_manifest,
    "audioset": _read_audioset_spec,
    "folder": read_folder,
    "classes": read_class_folders,
}
DATASET_ALIASES = {"us8k": "urbansound8k", "tut17": "tut2017"}
DATASET_LAYOUTS = {  # what each kind expects at its path, as error messages say it
    "esc50": "a folder holding meta/esc50.csv and audio/ (ESC-50's own layout)",
    "urbansound8k": "a folder holding metadata/UrbanSound8K.csv and audio/fold1..fold10/",
    "tut2017": "a TUT folder holding meta.txt and audio/, or the folder above TUT-acoustic-scenes-2017-*",
    "clotho": "a folder holding clotho_captions_{split}.csv and a {split}/ folder of audio",
    "audiocaps": "a folder holding {split}.csv and audio/{split}/",
    "macs": "a folder holding MACS.yaml and audio/",
    "csv": "a CSV file with an audio path column and a caption and/or label column",
    "audioset": "an AudioSet segments CSV [,its audio folder]",
    "folder": "a folder of audio files (any depth)",
    "classes": "a folder with one subfolder per class, each holding that class's audio files",
}


def _known_kinds() -> Iterable[str]:
    yield from DATASET_READERS
    yield from (f"{alias} (= {kind})" for alias, kind in DATASET_ALIASES.items())


def read_dataset(spec: str) -> pd.DataFrame:
    """Read a dataset from a `"kind:path"` spec, e.g. `"esc50:data/ESC-50"`,
    `"us8k:data/UrbanSound8K"`, `"audioset:segments.csv[,audio_dir]"`."""
    kind, separator, location = spec.partition(":")
    kind = kind.strip().lower()
    kind = DATASET_ALIASES.get(kind, kind)
    if not separator or kind not in DATASET_READERS:
        raise ManifestError(
            f"dataset {spec!r}: expected KIND:PATH with KIND one of {', '.join(_known_kinds())}"
        )
    if not location.strip():
        raise ManifestError(f"dataset {spec!r}: no path after {kind!r}")
    return DATASET_READERS[kind](location.strip())


# ---------------------------------------------------------------- one vocabulary: a spec or a manifest

MANIFEST_SUFFIXES = (*CSV_SUFFIXES, *PARQUET_SUFFIXES)


def dataset_kind(text: str) -> str | None:
    """The reader kind of a `kind:path` spec (aliases resolved), or None when `text` is not one."""
    kind, separator, _ = text.partition(":")
    kind = DATASET_ALIASES.get(kind.strip().lower(), kind.strip().lower())
    return kind if separator and kind in DATASET_READERS else None


def _spec_paths(spec: str) -> list[Path]:
    """The paths a spec names (`audioset:` may name a CSV and an audio folder)."""
    kind = dataset_kind(spec)
    location = spec.partition(":")[2].strip()
    parts = location.split(",", 1) if kind == "audioset" else [location]
    return [Path(part.strip()) for part in parts if part.strip()]


def is_dataset_spec(spec_or_path: str | os.PathLike) -> bool:
    """Whether `spec_or_path` is a `kind:path` dataset spec rather than a manifest file (an
    existing file of that name is taken as a manifest)."""
    text = str(spec_or_path)
    return dataset_kind(text) is not None and not Path(text).is_file()


def check_data(spec_or_path: str | os.PathLike, key: str) -> None:
    """Fail now, with one line naming the config key or option `key`, when what
    `spec_or_path` names does not exist: a manifest file (.csv, .parquet), or the paths of a
    `kind:path` dataset spec. Nothing is read; `read_data` reads it later."""
    text = str(spec_or_path).strip()
    if not text:
        raise ConfigError(f"{key}: no data given (a manifest file or a dataset spec KIND:PATH)")
    if is_dataset_spec(text):
        paths = _spec_paths(text)
        if not paths:
            raise ConfigError(f"{key}: {text}: no path after the kind")
        missing = [path for path in paths if not path.exists()]
        if missing:
            kind = dataset_kind(text)
            raise ConfigError(f"{key}: {missing[0]} does not exist (from the dataset spec {text}; "
                              f"{kind}: expects {DATASET_LAYOUTS[kind]})")
        return
    path = Path(text)
    if path.is_dir():
        raise ConfigError(f"{key}: {text} is a folder; name a dataset in it as KIND:PATH "
                          f"(e.g. folder:{text} for every audio file below it)")
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise ConfigError(f"{key}: {text} {what} (expected a manifest file "
                          f"({', '.join(MANIFEST_SUFFIXES)}) or a dataset spec KIND:PATH, "
                          f"KIND one of {', '.join(DATASET_READERS)})")
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ConfigError(f"{key}: {text} is not a manifest ({', '.join(MANIFEST_SUFFIXES)}); "
                          f"a dataset is named KIND:PATH, KIND one of {', '.join(DATASET_READERS)}")


def read_data(spec_or_path: str | os.PathLike) -> pd.DataFrame:
    """The one reader of data behind every command and config key that takes data: a manifest
    file (`.csv`, `.parquet`; `read_manifest`) or a `kind:path` dataset spec (`read_dataset`).
    A manifest written from a spec (`clapcurate manifest`) reads back equal to the spec's, so
    both give the same `manifest_hash`."""
    text = str(spec_or_path).strip()
    if is_dataset_spec(text):
        return read_dataset(text)
    path = Path(text)
    if not path.is_file() and path.suffix.lower() not in MANIFEST_SUFFIXES:
        raise ManifestError(f"{text}: not found; expected a manifest file ({', '.join(MANIFEST_SUFFIXES)}) "
                            f"or a dataset spec KIND:PATH, KIND one of {', '.join(_known_kinds())}")
    return read_manifest(path)
