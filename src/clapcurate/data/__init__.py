"""Manifests and dataset readers: every dataset, pool and Improvement-Set as one table shape."""

from .manifest import (
    FLOAT_COLUMNS,
    MANIFEST_COLUMNS,
    manifest_hash,
    normalize_manifest,
    read_manifest,
    write_manifest,
)
from .readers import (
    AUDIO_EXTENSIONS,
    DATASET_READERS,
    read_audiocaps,
    read_audioset,
    read_clotho,
    read_csv_manifest,
    read_dataset,
    read_esc50,
    read_folder,
    read_macs,
    read_tut2017,
    read_urbansound8k,
    youtube_clip_id,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "DATASET_READERS",
    "FLOAT_COLUMNS",
    "MANIFEST_COLUMNS",
    "manifest_hash",
    "normalize_manifest",
    "read_audiocaps",
    "read_audioset",
    "read_clotho",
    "read_csv_manifest",
    "read_dataset",
    "read_esc50",
    "read_folder",
    "read_macs",
    "read_manifest",
    "read_tut2017",
    "read_urbansound8k",
    "write_manifest",
    "youtube_clip_id",
]
