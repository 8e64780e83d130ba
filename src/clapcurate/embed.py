"""Embedding of audio clips and captions with a CLAP model: in memory, and sharded on disk.

Audio is deterministic (zero-shot evaluation relies on it): a clip is cut into the windows of
`audio.inference_windows` (short clips repeat-padded, long clips split), every window is embedded
and L2-normalised, and the clip's embedding is the L2-normalised mean of its windows'. Windows of
consecutive clips are packed into full batches, so the batch size sets only the speed. A file
longer than `audio.STREAMED_CLIP_SECONDS` is read as a stream of the same windows
(`audio.stream_windows`), so no clip's whole waveform is held.

On disk (`embed_manifest`) a folder holds
- `part-00000.npy`: float16 [rows, d], L2-normalised, rows in manifest order of the unique
  `clip_id`s (audio) or of the unique non-empty captions (text);
- `part-00000.ids.txt`: one id per row (the `clip_id`, or `text_key(caption)` for text);
- `part-00000.skipped.csv`: the shard's unreadable clips (`id, audio_path, reason`);
- `part-00000.done`: the shard's marker, written last, with the checksums of its rows and ids; a
  shard without it, or without one of its files, is redone;
- `meta.json`: modality, model hash (`model_hash`), manifest hash, dimension and shard layout; a
  folder made with another model or manifest is refused;
- `skipped.csv`: all unreadable clips, written once every shard is done.
Every file is written beside its final name and renamed into place, so a run killed at any
moment and started again ends with exactly the files of an uninterrupted run. Under torchrun
(`RANK`, `WORLD_SIZE`) shard i is embedded by rank i % WORLD_SIZE, with the same files as one
process.

The model runs where it is (`embed_manifest` places it by its `device` setting,
`clapcurate.device.resolve_device`); `num_workers`, `pin_memory` and `precision` are `auto` by
default: on a GPU several decoding workers, pinned batches and bf16 autocast, on the CPU none of
them (`clapcurate.device.hardware_settings`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import audio
from .audio import AudioFiles, StreamedClip, inference_windows, open_audio
from .data.manifest import manifest_hash
from .data.readers import read_data
from .device import AUTO, HardwareSettings, hardware_settings
from .errors import AudioError, ClapcurateError, ManifestError
from .features import FrontendSettings, store_keys, window_store
from .files import check_checksum, check_output_folder, checksum, write_atomically
from .locks import one_writer

log = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["id", "audio_path", "reason"]
META_FILE = "meta.json"
SKIPPED_FILE = "skipped.csv"
META_FORMAT = 1
Modality = Literal["audio", "text"]


@dataclass
class EmbeddingResult:
    """Embeddings of the readable clips of a manifest, in manifest order of their `clip_id`s."""

    ids: list[str]  # clip_id of each row
    embeddings: np.ndarray  # float32 [N, d], L2-normalised
    skipped: pd.DataFrame  # id (the clip_id), audio_path, reason


# --------------------------------------------------------------------------- in memory


def unique_clips(manifest: pd.DataFrame) -> pd.DataFrame:
    """The first row of each `clip_id`, in manifest order (rows sharing audio share a clip)."""
    return manifest.drop_duplicates("clip_id", keep="first").reset_index(drop=True)


def unique_captions(manifest: pd.DataFrame) -> pd.DataFrame:
    """The first row of each distinct non-empty caption, in manifest order."""
    captioned = manifest[manifest["caption"] != ""]
    return captioned.drop_duplicates("caption", keep="first").reset_index(drop=True)


def text_key(caption: str) -> str:
    """A stable id of a caption's exact text (SHA-256 of its UTF-8 bytes, 20 hex digits)."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:20]


def embedding_rows(keys: Sequence[str], ids: Sequence[str], embeddings: np.ndarray, folder, hint: str) -> np.ndarray:
    """The rows [len(keys), d] of `embeddings` whose `ids` are `keys`, in the order of `keys`;
    `ManifestError` naming the folder, a missing key and `hint` when some are absent."""
    row_of = {key: row for row, key in enumerate(ids)}
    missing = [key for key in keys if key not in row_of]
    if missing:
        raise ManifestError(f"{folder}: no embedding for {len(missing)} of {len(keys)} items "
                              f"(e.g. {missing[0]!r}); {hint}")
    return embeddings[[row_of[key] for key in keys]]


def _keep_items(items: list) -> list:
    """Collate function: the items as they are (clips have different numbers of windows)."""
    return items


def _inference_context(model, autocast: bool) -> contextlib.ExitStack:
    """`torch.inference_mode`, plus bfloat16 autocast on the model's device with `autocast`."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    if autocast:
        stack.enter_context(torch.autocast(model.device.type, dtype=torch.bfloat16))
    return stack


def inference_settings(model, num_workers: int | str = AUTO, pin_memory: bool | str = AUTO,
                       precision: str = AUTO) -> HardwareSettings:
    """The embedding settings for where `model` is, each `auto` resolved for its device."""
    return hardware_settings(model.device, precision, pin_memory=pin_memory, num_workers=num_workers)


def _to_model(windows: np.ndarray, model, pin_memory: bool) -> torch.Tensor:
    """A batch of windows as a tensor on the model's device (through pinned memory with `pin_memory`)."""
    batch = torch.from_numpy(windows)
    if pin_memory:
        batch = batch.pin_memory()
    return batch.to(model.device, non_blocking=pin_memory)


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, description: str, completed: int = 0) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a rich progress bar of `total` items, `completed` of them done
    before (reused), when `enabled`; one line instead of a bar when all of them are."""
    if not enabled or completed >= total:
        if enabled:
            from rich.console import Console

            Console().print(f"{description}: all {total} reused", highlight=False)
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task(description, total=total, completed=completed)
        yield lambda n: progress.advance(task, n)


def _window_batches(loader: DataLoader, batch_size: int, skipped: list[tuple[int, str]],
                    stream: Callable[[StreamedClip], Iterator[np.ndarray]] | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Pack the windows of consecutive clips into batches of `batch_size` (the last may be short).

    Yields (windows [B, clip_samples], owner clip index of each window [B], clips loaded so
    far); unreadable clips are appended to `skipped` as (clip index, reason). An item's windows
    are an array, or come part by part (from `stream(clip)` for a `StreamedClip`, or an iterator
    of parts), each packed as it comes, so that a batch or two of them are held at a time.
    """
    pending, owners, clips_loaded = [], [], 0
    for items in loader:
        for index, windows in items:
            clips_loaded += 1
            if isinstance(windows, AudioError):
                skipped.append((index, windows.reason))
                continue
            parts = ([windows] if isinstance(windows, np.ndarray) else
                     stream(windows) if isinstance(windows, StreamedClip) else windows)
            for part in parts:
                pending.append(part)
                owners.append(np.full(len(part), index, dtype=np.int64))
                while sum(len(w) for w in pending) >= batch_size:
                    part_windows, owner = np.concatenate(pending), np.concatenate(owners)
                    yield part_windows[:batch_size], owner[:batch_size], clips_loaded
                    pending, owners = [part_windows[batch_size:]], [owner[batch_size:]]
    if sum(len(w) for w in pending):
        yield np.concatenate(pending), np.concatenate(owners), clips_loaded


def _runs(owner: np.ndarray) -> np.ndarray:
    """Start of each run of equal consecutive owners, [runs]."""
    return np.r_[0, np.flatnonzero(np.diff(owner)) + 1]


def _add_to_clips(window_sums: np.ndarray, owner: np.ndarray, window_embeddings: np.ndarray) -> None:
    """Add each window's embedding [B, d] to its clip's row of `window_sums` [N, d].

    A clip's windows are consecutive in a batch, so each run of equal owners is summed in order
    (deterministic) and added to its clip's row once.
    """
    run_starts = _runs(owner)
    window_sums[owner[run_starts]] += np.add.reduceat(window_embeddings, run_starts, axis=0)


class _StoredLogMels:
    """Writes each clip's window log-mels to a feature store as the batches pass, in parts
    (`StoreWriter.add_rows`): a clip's windows are consecutive (possibly across batches), so a
    clip is complete when the next one starts."""

    def __init__(self, writer, keys: Sequence[bytes | None]):
        self.writer, self.keys = writer, keys
        self.owner = -1

    def add(self, logmel: np.ndarray, owner: np.ndarray) -> None:
        """logmel [B, frames, mel_bins] of windows whose clips are `owner` [B]."""
        starts = _runs(owner)
        for start, end in zip(starts, np.r_[starts[1:], len(owner)]):
            if owner[start] != self.owner:
                self.flush()
                self.owner = int(owner[start])
            if self.keys[self.owner] is not None:
                self.writer.add_rows(self.keys[self.owner], logmel[start:end].reshape(-1, logmel.shape[-1]))

    def flush(self) -> None:
        self.writer.end_entry()


CACHED_CLIPS_PER_ITEM = 64  # clips read from a feature store per step of the batch packing
CACHED_WINDOWS_PER_READ = 16  # a long clip's stored windows are read this many at a time


def _stored_windows(store, clips: pd.DataFrame, keys: Sequence[bytes | None], model) -> Iterator[list] | None:
    """The clips' window log-mels from `store`, in the shape `_window_batches` takes (lists of
    (clip index, the parts [w, frames, mel_bins] of its windows, read `CACHED_WINDOWS_PER_READ` at
    a time, or `AudioError`)); None when a readable clip is not stored (the audio is then decoded afresh). A clip that is not stored and cannot be read
    is skipped with the reason decoding gives."""
    found = store.locate(keys)
    frames = FrontendSettings.of(model.config.audio).frames(model.clip_samples)
    if (found.rows[found.present] % frames).any():
        return None
    errors = {}
    for index in np.flatnonzero(~found.present):
        try:
            open_audio(clips["audio_path"][index], model.sample_rate, audio.STREAMED_CLIP_SECONDS)
        except AudioError as error:
            errors[index] = error
            continue
        return None

    def items() -> Iterator[list]:
        for start in range(0, len(clips), CACHED_CLIPS_PER_ITEM):
            yield [(i, errors[i] if i in errors else
                    (part.reshape(-1, frames, store.width) for part in found.parts(i, frames * CACHED_WINDOWS_PER_READ)))
                   for i in range(start, min(start + CACHED_CLIPS_PER_ITEM, len(clips)))]

    return items()


def embed_audio(model, manifest: pd.DataFrame, batch_size: int = 64, num_workers: int | str = AUTO,
                progress: bool | str = False, advance: Callable[[int], None] | None = None,
                feature_cache: str | os.PathLike | None = None, pin_memory: bool | str = AUTO,
                precision: str = AUTO) -> EmbeddingResult:
    """Embed the audio of every unique `clip_id` of `manifest` (decoded in DataLoader workers).

    Progress in clips: a bar of its own with `progress` (a string names the dataset on the bar),
    or `advance(n)` called as clips finish.
    `num_workers`, `pin_memory`, `precision` (`32` or `bf16-mixed`): `auto` follows the model's
    device (`inference_settings`).

    Each clip's windows are embedded and L2-normalised; the clip's embedding is the normalised
    mean of them. Unreadable clips are skipped and listed in `result.skipped`. The same files give
    the same numbers: exactly for the same settings, within float tolerance for any batch size
    or number of workers.

    With `feature_cache` (a folder), the log-mels of every clip's windows, the encoder's input,
    are kept there under the model's front-end identity (`features.window_store`) and read by
    every later call whose model has the same front-end: when every readable clip is stored, no
    audio is decoded and, for the same batch size, the embeddings are bit for bit those of
    decoding (the same float32 log-mels enter the encoder in the same batches). Otherwise the
    audio is decoded as without a cache, and the clips are stored.

    A file longer than `audio.STREAMED_CLIP_SECONDS` is not decoded whole: its windows are read
    as a stream (`audio.stream_windows`, the same windows) and embedded batch by batch into the
    clip's running sum, so memory does not grow with its length (a `feature_cache` writes and
    reads its log-mels in parts too).
    """
    settings = inference_settings(model, num_workers, pin_memory, precision)
    clips = unique_clips(manifest)
    store = window_store(model, feature_cache) if feature_cache is not None else None
    keys = store_keys(clips["audio_path"])[0] if store is not None else []
    items = _stored_windows(store, clips, keys, model) if store is not None else None
    writer, stream = contextlib.nullcontext(), None
    if items is None:
        fill = model.config.audio.short_clip_fill
        dataset = AudioFiles(clips["audio_path"], model.sample_rate,
                             functools.partial(inference_windows, n_samples=model.clip_samples,
                                               short_clip_fill=fill),  # [W, clip_samples]
                             streamed_after=audio.STREAMED_CLIP_SECONDS)
        stream = functools.partial(audio.stream_windows, sample_rate=model.sample_rate,
                                   n_samples=model.clip_samples, short_clip_fill=fill)
        items = DataLoader(dataset, batch_size=batch_size, num_workers=settings.num_workers, collate_fn=_keep_items)
        if store is not None:
            writer = store.writer()
    window_sums = np.zeros((len(clips), model.config.d_proj), dtype=np.float32)  # [N, d]
    skipped: list[tuple[int, str]] = []
    with _eval_mode(model), _inference_context(model, settings.autocast), writer as writer, \
            _progress_bar(bool(progress) and advance is None, len(clips),
                          f"embedding {progress}" if isinstance(progress, str) else "embedding audio clips") as own_bar:
        advance = advance or own_bar
        to_store = _StoredLogMels(writer, keys) if writer is not None else None
        clips_done = 0
        for windows, owner, clips_loaded in _window_batches(items, batch_size, skipped, stream):
            if windows.ndim == 2:  # waveforms [B, clip_samples]
                logmel = model.audio_logmel(_to_model(windows, model, settings.pin_memory))  # [B, 1, frames, mel_bins]
                if to_store is not None:
                    to_store.add(logmel[:, 0].float().cpu().numpy(), owner)
            else:  # stored log-mels [B, frames, mel_bins]
                logmel = _to_model(windows, model, settings.pin_memory)[:, None]
            window_embeddings = model.encode_logmel(logmel, normalize=True)  # [B, d]
            _add_to_clips(window_sums, owner, window_embeddings.float().cpu().numpy())
            advance(clips_loaded - clips_done)
            clips_done = clips_loaded
        if to_store is not None:
            to_store.flush()
        advance(len(clips) - clips_done)
    if store is not None:
        store.close()
    readable = np.ones(len(clips), dtype=bool)
    readable[[index for index, _ in skipped]] = False
    overflowed = readable & ~np.isfinite(window_sums).all(axis=1)  # finite audio the model cannot represent
    skipped += [(int(index), "non-finite embedding (the audio overflows the model)") for index in np.flatnonzero(overflowed)]
    readable &= ~overflowed
    # the mean's direction is the sum's: normalising the sum is normalising the mean
    embeddings = F.normalize(torch.from_numpy(window_sums[readable]), dim=1)  # [N_readable, d]
    skipped_rows = pd.DataFrame(
        [(clips["clip_id"][i], clips["audio_path"][i], reason) for i, reason in sorted(skipped)],
        columns=SKIPPED_COLUMNS,
    )
    return EmbeddingResult(list(clips["clip_id"][readable]), embeddings.numpy(), skipped_rows)


def embed_texts(model, texts: Sequence[str], batch_size: int = 256,
                advance: Callable[[int], None] | None = None, precision: str = AUTO) -> np.ndarray:
    """L2-normalised text embeddings [N, d] (float32) of `texts`, in order; `advance(n)` is
    called as texts finish. `precision: auto` is bf16 autocast on a GPU, float32 elsewhere."""
    texts = list(texts)
    parts = [np.zeros((0, model.config.d_proj), dtype=np.float32)]
    with _eval_mode(model), _inference_context(model, inference_settings(model, precision=precision).autocast):
        for start in range(0, len(texts), batch_size):
            batch = model.encode_text(texts[start:start + batch_size], normalize=True)  # [B, d]
            parts.append(batch.float().cpu().numpy())
            if advance is not None:
                advance(len(batch))
    return np.concatenate(parts)


# --------------------------------------------------------------------------- on disk


def _shard_stem(index: int) -> str:
    return f"part-{index:05d}"


def _shard_paths(out_dir: Path, index: int) -> dict[str, Path]:
    stem = _shard_stem(index)
    return {
        "embeddings": out_dir / f"{stem}.npy",
        "ids": out_dir / f"{stem}.ids.txt",
        "skipped": out_dir / f"{stem}.skipped.csv",
        "done": out_dir / f"{stem}.done",
    }


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them in the environment; (0, 1) otherwise."""
    try:
        rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as exc:
        raise ClapcurateError(f"RANK and WORLD_SIZE must be integers: {exc}") from exc
    if not 0 <= rank < world_size:
        raise ClapcurateError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    return rank, world_size


def _items_to_embed(manifest: pd.DataFrame, modality: Modality, manifest_path) -> pd.DataFrame:
    """The rows to embed with their on-disk `key`: unique clips (audio) or unique captions (text)."""
    if modality == "audio":
        items = unique_clips(manifest)
        items["key"] = items["clip_id"]
        bad = items["key"].str.contains("\n")
        if bad.any():
            raise ClapcurateError(f"{manifest_path}: clip_id {items['key'][bad].iloc[0]!r} holds a line break")
    elif modality == "text":
        items = unique_captions(manifest)
        items["key"] = [text_key(caption) for caption in items["caption"]]
    else:
        raise ClapcurateError(f"modality must be 'audio' or 'text', got {modality!r}")
    return items


def _read_meta(out_dir: Path) -> dict | None:
    path = out_dir / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ClapcurateError(f"{path}: not valid JSON ({exc}); delete the folder to start over") from exc


def _claim_folder(out_dir: Path, meta: dict) -> None:
    """Write `meta.json`, or check that the existing one describes the same embedding run."""
    existing = _read_meta(out_dir)
    if existing is None:
        write_atomically(out_dir / META_FILE, lambda f: f.write(json.dumps(meta, indent=2) + "\n"))
        return
    differences = [f"{key}: folder has {existing.get(key)!r}, this run {value!r}"
                   for key, value in meta.items() if existing.get(key) != value]
    if differences:
        raise ClapcurateError(
            f"{out_dir / META_FILE}: this folder holds embeddings of another run ("
            + "; ".join(differences)
            + "). Use another output folder, or delete this one to start over."
        )


def _embed_shard(model, items: pd.DataFrame, modality: Modality, batch_size: int, settings: HardwareSettings,
                 advance: Callable[[int], None]) -> tuple[list[str], np.ndarray, pd.DataFrame]:
    """(keys, embeddings [n, d] float32, skipped rows) of one shard's items; `advance(n)` as
    items finish."""
    if modality == "text":
        embeddings = embed_texts(model, items["caption"], batch_size, advance, settings.precision)
        return list(items["key"]), embeddings, pd.DataFrame(columns=SKIPPED_COLUMNS)
    result = embed_audio(model, items, batch_size, settings.num_workers, advance=advance,
                         pin_memory=settings.pin_memory, precision=settings.precision)
    return result.ids, result.embeddings, result.skipped


def _write_shard(out_dir: Path, index: int, keys: list[str], embeddings: np.ndarray,
                 skipped: pd.DataFrame) -> None:
    """Write a shard's files, its done marker last."""
    paths = _shard_paths(out_dir, index)
    stored = io.BytesIO()
    np.save(stored, embeddings.astype(np.float16))
    ids = "".join(f"{key}\n" for key in keys).encode("utf-8")
    write_atomically(paths["embeddings"], lambda f: f.write(stored.getbuffer()), "wb")
    write_atomically(paths["ids"], lambda f: f.write(ids), "wb")
    write_atomically(paths["skipped"], lambda f: skipped.to_csv(f, index=False, lineterminator="\n"))
    marker = {"rows": len(keys), "skipped": len(skipped),
              "checksums": {"embeddings": checksum(stored.getbuffer()), "ids": checksum(ids)}}
    write_atomically(paths["done"], lambda f: f.write(json.dumps(marker) + "\n"))


def _unfinished_shards(out_dir: Path, num_shards: int) -> list[int]:
    """The shards without their done marker or one of the files it stands for (those are redone)."""
    return [i for i in range(num_shards) if not all(path.is_file() for path in _shard_paths(out_dir, i).values())]


def _write_skipped_list(out_dir: Path, num_shards: int) -> None:
    """`skipped.csv`: the shards' skipped clips, in shard order."""
    parts = [pd.read_csv(_shard_paths(out_dir, i)["skipped"], dtype=str, keep_default_na=False)
             for i in range(num_shards)]
    skipped = pd.concat([pd.DataFrame(columns=SKIPPED_COLUMNS), *parts], ignore_index=True)
    write_atomically(out_dir / SKIPPED_FILE, lambda f: skipped.to_csv(f, index=False, lineterminator="\n"))


def embed_manifest(model, data, out_dir, modality: Modality = "audio", batch_size: int = 64,
                   shard_size: int = 10_000, num_workers: int | str = AUTO, progress: bool = True,
                   max_shards: int | None = None, device: str | torch.device | None = AUTO,
                   text_encoder: str | None = None, pin_memory: bool | str = AUTO,
                   precision: str = AUTO) -> Path:
    """Embed the unique clips (audio) or unique captions (text) of `data` into `out_dir` shards.

    `model` is what `load_model` takes (a checkpoint folder or a published weights file, with
    `text_encoder` where the file needs one); `data` a manifest file, a `kind:path` dataset spec
    (`read_data`) or a manifest table. `meta.json` records `model_hash(model, text_encoder)` and
    the manifest's hash, so a spec and the manifest written from it resume the same folder.
    Resumable: finished shards (those with a done marker) are skipped; an existing folder keeps
    its own `shard_size`. `max_shards` stops after embedding that many shards in this call (the
    rest on a later call). Under torchrun each rank embeds the shards i with
    i % WORLD_SIZE == RANK. The model is loaded on `device` (a device setting, see
    `clapcurate.device`); `num_workers`, `pin_memory`, `precision` as `embed_audio` takes them.
    Returns `out_dir`.
    """
    from .device import resolve_device
    from .model.checkpoints import load_model, model_hash, require_model_path

    if shard_size < 1 or batch_size < 1:
        raise ClapcurateError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")
    require_model_path(model)
    manifest, origin = (data, "manifest") if isinstance(data, pd.DataFrame) else (read_data(data), data)
    items = _items_to_embed(manifest, modality, origin)
    if len(items) == 0:
        raise ManifestError(f"{origin}: nothing to embed (no {'clips' if modality == 'audio' else 'captions'})")
    if modality == "audio" and not (items["audio_path"] != "").any():
        raise ManifestError(f"{origin}: no audio_path values (expected a column audio_path)")
    rank, world_size = _distributed_rank()
    # under torchrun the ranks share the folder, the first holding its lock; taken once the inputs are checked
    with one_writer(out_dir, "embeddings folder") if rank == 0 else contextlib.nullcontext(
            check_output_folder(out_dir, "embeddings folder")) as out_dir:
        existing = _read_meta(out_dir)
        if existing is not None and existing.get("shard_size") != shard_size:
            log.info("%s: continuing with the folder's shard_size %s", out_dir, existing.get("shard_size"))
            shard_size = int(existing.get("shard_size", shard_size))
        num_shards = (len(items) + shard_size - 1) // shard_size
        meta = {"format": META_FORMAT, "modality": modality, "model_hash": model_hash(model, text_encoder),
                "manifest_hash": manifest_hash(manifest), "num_items": len(items),
                "shard_size": shard_size, "num_shards": num_shards}
        if existing is not None:  # refuse a foreign folder before loading the model
            _claim_folder(out_dir, {**meta, "dimension": existing.get("dimension")})
        my_shards = [i for i in range(num_shards) if i % world_size == rank]
        unfinished = set(_unfinished_shards(out_dir, num_shards))
        total, reused = _progress_counts(len(items), shard_size, my_shards, unfinished)
        mine = [i for i in my_shards if i in unfinished]
        if existing is None or existing.get("dimension") is None or mine[:max_shards]:
            # loaded only to embed: a finished folder's meta.json names the model and its dimension
            model = load_model(model, text_encoder, device=resolve_device(device))
            _claim_folder(out_dir, {**meta, "dimension": model.config.d_proj})
            settings = inference_settings(model, num_workers, pin_memory, precision)
        what = "audio clips" if modality == "audio" else "captions"
        with _progress_bar(progress, total, f"embedding {what} ({out_dir.name})", reused) as advance:
            for index in mine[:max_shards]:
                shard_items = items.iloc[index * shard_size:(index + 1) * shard_size]
                _write_shard(out_dir, index, *_embed_shard(model, shard_items, modality, batch_size, settings, advance))
        if not _unfinished_shards(out_dir, num_shards):
            _write_skipped_list(out_dir, num_shards)
            rows, skipped = embedding_counts(out_dir)
            if skipped and mine:  # said once, by the call that finished the folder
                log.warning("%s: %d of %d %s skipped (unreadable or non-finite); the list is %s", out_dir, skipped,
                            rows + skipped, "clips" if modality == "audio" else "captions", out_dir / SKIPPED_FILE)
            if rows == 0:
                raise ManifestError(f"{origin}: none of the {skipped} clips could be embedded "
                                    f"(the list and the reasons are in {out_dir / SKIPPED_FILE})")
        return out_dir


def _progress_counts(num_items: int, shard_size: int, shards: Sequence[int], unfinished: set[int]) -> tuple[int, int]:
    """(items in `shards`, items in those of them already done): the progress bar's total and
    its reused part."""
    sizes = {i: min(shard_size, num_items - i * shard_size) for i in shards}
    return sum(sizes.values()), sum(size for i, size in sizes.items() if i not in unfinished)


def embedding_counts(out_dir) -> tuple[int, int]:
    """(embedded rows, skipped items) of the finished shards of an embeddings folder."""
    meta = _read_meta(Path(out_dir)) or {"num_shards": 0}
    markers = [_shard_paths(Path(out_dir), i)["done"] for i in range(meta["num_shards"])]
    counts = [json.loads(marker.read_text()) for marker in markers if marker.is_file()]
    return sum(c["rows"] for c in counts), sum(c["skipped"] for c in counts)


def load_embeddings(out_dir, dtype=np.float32) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings [N, d]) of a finished embeddings folder, rows in manifest order.

    Refuses a folder that is not one, or whose shards are not all done. `dtype=np.float16`
    keeps the stored precision at half the memory.
    """
    out_dir = Path(out_dir)
    meta = _read_meta(out_dir)
    if meta is None:
        raise ClapcurateError(f"{out_dir}: not an embeddings folder (no {META_FILE})")
    unfinished = _unfinished_shards(out_dir, meta["num_shards"])
    if unfinished:
        raise ClapcurateError(
            f"{out_dir}: unfinished, {len(unfinished)} of {meta['num_shards']} shards not done "
            f"(first: {_shard_stem(unfinished[0])}); run the embedding again to finish it"
        )
    markers = [json.loads(_shard_paths(out_dir, index)["done"].read_text()) for index in range(meta["num_shards"])]
    ids: list[str] = []
    embeddings = np.empty((sum(marker["rows"] for marker in markers), meta["dimension"]), dtype)
    for index, marker in enumerate(markers):
        paths = _shard_paths(out_dir, index)
        checksums = marker.get("checksums", {})
        redo = f"delete {paths['done'].name} and run the embedding again to redo the shard"
        shard_ids, stored = paths["ids"].read_bytes(), paths["embeddings"].read_bytes()
        check_checksum(paths["ids"], shard_ids, checksums.get("ids"), redo)
        check_checksum(paths["embeddings"], stored, checksums.get("embeddings"), redo)
        shard_ids = shard_ids.decode("utf-8").splitlines()
        rows = _npy_rows(stored, paths["embeddings"])
        if not len(shard_ids) == len(rows) == marker["rows"]:
            raise ClapcurateError(f"{paths['ids']}: {len(shard_ids)} ids for {len(rows)} rows "
                                  f"({marker['rows']} in {paths['done'].name})")
        _check_rows_into(rows, embeddings[len(ids):len(ids) + len(rows)], paths["embeddings"], shard_ids, redo)
        ids += shard_ids
    return ids, embeddings


def _npy_rows(data: bytes, path: Path) -> np.ndarray:
    """The array a `.npy` file's bytes hold, as a read-only view of them (no copy)."""
    header = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(header)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(header)
        return np.frombuffer(data, dtype, count=int(np.prod(shape)), offset=header.tell()).reshape(
            shape, order="F" if fortran_order else "C")
    except ValueError as exc:
        raise ClapcurateError(f"{path}: not a readable .npy array ({exc})") from exc


UNIT_NORM_TOLERANCE = 1e-2  # float16 storage keeps the norm of a unit row within ~1e-3 of 1
_CHECK_ROWS = 1024  # rows converted at a time while their norms are taken


def _check_rows_into(stored: np.ndarray, rows: np.ndarray, path: Path, ids: Sequence[str], redo: str) -> None:
    """Copy a stored shard's rows into `rows` (of its own dtype), each checked finite and of unit
    norm on the way (the similarities are cosines), a block at a time while it is in the cache.
    `ClapcurateError` naming the file, the first bad row and its id otherwise."""
    norms = np.empty(len(stored), np.float32)
    for start in range(0, len(stored), _CHECK_ROWS):
        end = min(start + _CHECK_ROWS, len(stored))
        rows[start:end] = stored[start:end]
        block = rows[start:end] if rows.dtype == np.float32 else stored[start:end].astype(np.float32)
        norms[start:end] = np.sqrt(np.einsum("ij,ij->i", block, block))
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE))  # NaN and Inf norms fail too
    if len(bad):
        row = int(bad[0])
        what = "not finite" if not np.isfinite(stored[row]).all() else f"of norm {norms[row]:.4f}, not 1"
        raise ClapcurateError(f"{path}: row {row} (id {ids[row]!r}) is {what}"
                              + (f" ({len(bad)} bad rows)" if len(bad) > 1 else "") + f"; {redo}")
