"""Training data: prepared pairs (cached features), the validation split, step-indexed batches.

Every batch is a pure function of (seed, global step): resuming at step s rebuilds exactly the
batches an uninterrupted run would have seen, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.manifest import label_names
from ..errors import ManifestError
from ..features import LogMelCache, TextFeatureCache
from .config import AugmentConfig

log = logging.getLogger("clapcurate.train")


# ------------------------------------------------------------------ prepared pairs
@dataclasses.dataclass
class PairSet:
    """Audio-caption pairs with their features.

    `clip_features[k]` is clip k's log-mel [frames, mel_bins] (float16, read on access from the
    feature cache's shard files); `clip_of_pair[i]` the clip of pair i. `text_features`
    [N, hidden] (cached text-encoder outputs) or None (captions are encoded each step).
    `teacher_audio` / `teacher_text` [N, d]: cached teacher embeddings. `labels` [N, classes]
    (0/1): class labels, for tagging.
    """

    ids: list[str]
    captions: list[str]
    clip_of_pair: np.ndarray
    clip_features: Sequence[np.ndarray]
    text_features: np.ndarray | None = None
    teacher_audio: np.ndarray | None = None
    teacher_text: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def prepare_pairs(
    manifest: pd.DataFrame,
    origin: str,
    logmel_cache: LogMelCache,
    num_workers: int = 0,
    max_missing_fraction: float = 0.5,
    text_cache: TextFeatureCache | None = None,
) -> tuple[PairSet, pd.DataFrame, pd.DataFrame]:
    """Compute or fetch every clip's features: (pairs, the readable rows, the skipped clips).

    Unreadable clips are skipped (returned as a DataFrame audio_path, reason, and logged);
    when more than `max_missing_fraction` of the clips are unreadable, `ManifestError`.
    """
    paths = list(dict.fromkeys(manifest["audio_path"]))
    features, failures = logmel_cache.get_many(paths, num_workers)
    skipped = pd.DataFrame(sorted(failures.items()), columns=["audio_path", "reason"])
    if paths and len(failures) > max_missing_fraction * len(paths):
        example = skipped.iloc[0]
        raise ManifestError(
            f"{origin}: {len(failures)} of {len(paths)} audio files are missing or unreadable "
            f"(e.g. {example.audio_path}: {example.reason}); check the manifest's audio_path column"
        )
    if failures:
        log.warning("%s: skipped %d unreadable audio file(s), e.g. %s", origin, len(failures), skipped.iloc[0].audio_path)
    kept = manifest[~manifest["audio_path"].isin(failures)].reset_index(drop=True)
    if len(kept) == 0:
        raise ManifestError(f"{origin}: no pairs with readable audio")
    clip_paths = list(dict.fromkeys(kept["audio_path"]))
    clip_number = {path: k for k, path in enumerate(clip_paths)}
    position = {path: i for i, path in enumerate(paths)}
    captions = kept["caption"].tolist()
    pairs = PairSet(
        ids=kept["id"].tolist(),
        captions=captions,
        clip_of_pair=np.array([clip_number[p] for p in kept["audio_path"]], dtype=np.int64),
        clip_features=features.take([position[path] for path in clip_paths]),
        text_features=text_cache.features(captions) if text_cache is not None else None,
    )
    return pairs, kept, skipped


def label_matrix(labels: Sequence[str], classes: Sequence[str], origin: str) -> np.ndarray:
    """Comma-separated label strings -> multi-hot rows [N, len(classes)] (uint8).

    A label outside `classes` is a `ManifestError` naming it and the row."""
    column = {name: k for k, name in enumerate(classes)}
    matrix = np.zeros((len(labels), len(classes)), dtype=np.uint8)
    for row, text in enumerate(labels):
        for name in label_names(text):
            if name not in column:
                raise ManifestError(f"{origin}: row {row + 1}: label {name!r} is not among the {len(classes)} classes")
            matrix[row, column[name]] = 1
    return matrix


# ------------------------------------------------------------------ frames and augmentation
def crop_frames(logmel: np.ndarray, n_frames: int, rng: np.random.Generator | None, pad_level: float) -> np.ndarray:
    """An excerpt [n_frames, mel] of a clip's log-mel [frames, mel].

    With `rng`: a random crop of a long clip, a short clip at a random offset in silence
    (`pad_level`). Without: deterministic, the clip's start, short clips repeated to fill.
    """
    length = logmel.shape[0]
    if length >= n_frames:
        start = int(rng.integers(0, length - n_frames + 1)) if rng is not None else 0
        return logmel[start : start + n_frames]
    if rng is None:
        return np.resize(logmel, (n_frames, logmel.shape[1]))
    excerpt = np.full((n_frames, logmel.shape[1]), pad_level, dtype=logmel.dtype)
    offset = int(rng.integers(0, n_frames - length + 1))
    excerpt[offset : offset + length] = logmel
    return excerpt


def _stripe_mask(batch: int, size: int, count: int, max_width: int, rng: np.random.Generator) -> np.ndarray:
    """[batch, size] booleans: `count` random stripes of width 0..max_width per example."""
    if count == 0:
        return np.zeros((batch, size), dtype=bool)
    widths = rng.integers(0, min(max_width, size) + 1, size=(batch, count))  # [B, count]
    starts = (rng.random((batch, count)) * (size - widths + 1)).astype(np.int64)  # [B, count]
    positions = np.arange(size)[None, None, :]  # [1, 1, size]
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])  # [B, count, size]
    return inside.any(axis=1)


def augment_batch(excerpts: np.ndarray, config: AugmentConfig, rng: np.random.Generator,
                  share: slice = slice(None), batch_size: int | None = None) -> np.ndarray:
    """Gain (a dB offset of each log-mel) and SpecAugment time and frequency masks, filled with
    each example's mean level: [B, frames, mel] -> [B, frames, mel] (float32), vectorised.

    `share`, `batch_size`: `excerpts` are the examples `share` of a batch of `batch_size` (one
    process's part of a global batch); the random draws are made for the whole batch, so every
    part is augmented exactly as in the whole batch.
    """
    excerpts = excerpts.astype(np.float32)
    _, frames, mels = excerpts.shape
    batch = batch_size or len(excerpts)
    if config.gain_db > 0:
        excerpts += rng.uniform(-config.gain_db, config.gain_db, size=(batch, 1, 1)).astype(np.float32)[share]
    fill = excerpts.mean(axis=(1, 2), keepdims=True)  # [B, 1, 1]
    masked = (_stripe_mask(batch, frames, config.time_masks, config.time_mask_frames, rng)[share, :, None]
              | _stripe_mask(batch, mels, config.freq_masks, config.freq_mask_bins, rng)[share, None, :])
    return np.where(masked, fill, excerpts)


@dataclasses.dataclass
class BatchMaker:
    """Turns rows of a `PairSet` into a model batch."""

    n_frames: int
    pad_level: float
    augment: AugmentConfig | None = None

    def __call__(self, pairs: PairSet, rows: np.ndarray, rng: np.random.Generator | None,
                 share: slice = slice(None)) -> dict:
        """The batch of `rows`, or only of the examples `share` of them (one process's part of a
        global batch), cropped and augmented exactly as they are in the whole batch."""
        crop_rng = rng if self.augment is not None and self.augment.random_crop else None
        crops = [crop_frames(pairs.clip_features[pairs.clip_of_pair[row]], self.n_frames, crop_rng, self.pad_level)
                 for row in rows]  # every row draws its crop, in order; mostly views
        excerpts = np.stack(crops[share])  # [B, frames, mel]
        if self.augment is not None:
            excerpts = augment_batch(excerpts, self.augment, rng, share, len(rows))
        rows = rows[share]
        batch = {
            "logmel": torch.from_numpy(excerpts.astype(np.float32)).unsqueeze(1),  # [B, 1, frames, mel]
            "clip_index": torch.from_numpy(pairs.clip_of_pair[rows]),
        }
        if pairs.text_features is not None:
            batch["text_features"] = torch.from_numpy(pairs.text_features[rows])  # [B, hidden]
        else:
            batch["captions"] = [pairs.captions[row] for row in rows]
        if pairs.labels is not None:
            batch["labels"] = torch.from_numpy(pairs.labels[rows].astype(np.float32))  # [B, classes]
        if pairs.teacher_audio is not None:
            batch["teacher_audio"] = torch.from_numpy(pairs.teacher_audio[rows])  # [B, d]
            batch["teacher_text"] = torch.from_numpy(pairs.teacher_text[rows])  # [B, d]
        return batch


# ------------------------------------------------------------------ schedules
class EpochOrder:
    """Batches of a seeded random permutation per epoch; the last partial batch is dropped
    (a set smaller than the batch gives one batch of all of it)."""

    def __init__(self, n_items: int, batch_size: int, seed: int):
        self.n_items = n_items
        self.batch_size = min(batch_size, n_items)
        self.seed = seed
        self.steps_per_epoch = n_items // self.batch_size

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_items)

    def rows(self, position: int) -> np.ndarray:
        """Rows of the `position`-th batch of the stream (epochs follow each other)."""
        epoch, within = divmod(position, self.steps_per_epoch)
        return self._permutation(epoch)[within * self.batch_size : (within + 1) * self.batch_size]


class CuratedDraws:
    """Step s draws an Improvement-Set batch when u_s < 1 - replay_prob, else a replay batch,
    u_s ~ U(0, 1) seeded."""

    BLOCK = 4096

    def __init__(self, replay_prob: float, seed: int):
        self.replay_prob = replay_prob
        self.seed = seed
        self._counts_before_block = [0]  # curated steps before block b

    @functools.lru_cache(maxsize=4)
    def _block(self, block: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 3, block]).random(self.BLOCK) < 1.0 - self.replay_prob

    def is_curated(self, step: int) -> bool:
        block, offset = divmod(step, self.BLOCK)
        return bool(self._block(block)[offset])

    def curated_before(self, step: int) -> int:
        """How many of the steps 0 .. step-1 drew an Improvement-Set batch."""
        block, offset = divmod(step, self.BLOCK)
        while len(self._counts_before_block) <= block:
            done = len(self._counts_before_block) - 1
            self._counts_before_block.append(self._counts_before_block[-1] + int(self._block(done).sum()))
        return self._counts_before_block[block] + int(self._block(block)[:offset].sum())


class PairSchedule:
    """Teacher training: batches of one pair set, one epoch = one pass over it."""

    def __init__(self, pairs: PairSet, batch_size: int, seed: int):
        self.pairs = pairs
        self.order = EpochOrder(len(pairs), batch_size, seed)
        self.steps_per_epoch = self.order.steps_per_epoch

    def draw(self, step: int) -> tuple[PairSet, np.ndarray]:
        return self.pairs, self.order.rows(step)


class ReplaySchedule:
    """Student training: at each step the replay set's batch of that step with probability
    `replay_prob` (`replay.replay_prob`), else an Improvement-Set batch. One epoch = one pass over
    the replay set."""

    def __init__(self, curated: PairSet, replay: PairSet, batch_size: int, replay_prob: float, seed: int):
        self.curated, self.replay = curated, replay
        self.curated_order = EpochOrder(len(curated), batch_size, seed + 1)
        self.replay_order = EpochOrder(len(replay), batch_size, seed)
        self.draws = CuratedDraws(replay_prob, seed)
        self.steps_per_epoch = self.replay_order.steps_per_epoch

    def draw(self, step: int) -> tuple[PairSet, np.ndarray]:
        if self.draws.is_curated(step):
            return self.curated, self.curated_order.rows(self.draws.curated_before(step))
        return self.replay, self.replay_order.rows(step)


# ------------------------------------------------------------------ datasets and samplers
def rank_share(batch_size: int, rank: int, world_size: int) -> slice:
    """The examples of a global batch that `rank` of `world_size` processes trains on: contiguous,
    in rank order, sizes differing by at most one."""
    bounds = [batch_size * r // world_size for r in range(world_size + 1)]
    return slice(bounds[rank], bounds[rank + 1])


class StepBatches(torch.utils.data.Dataset):
    """Item s = this rank's share of the global batch of step s: the ranks' shares, concatenated
    in rank order, are exactly the batch one process makes (same rows, crops and augmentation)."""

    def __init__(self, schedule, make_batch: BatchMaker, seed: int, rank: int = 0, world_size: int = 1):
        self.schedule = schedule
        self.make_batch = make_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __getitem__(self, step: int) -> dict:
        pairs, rows = self.schedule.draw(step)
        share = rank_share(len(rows), self.rank, self.world_size)
        # one generator for the whole global batch of the step (its key that of a single process)
        return self.make_batch(pairs, rows, np.random.default_rng([self.seed, 7, step, 0]), share)


class StepSampler(torch.utils.data.Sampler):
    """Yields the global steps left in the current epoch, starting at `current_step()`."""

    def __init__(self, steps_per_epoch: int, current_step: Callable[[], int]):
        self.steps_per_epoch = steps_per_epoch
        self.current_step = current_step

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        start = self.current_step()
        end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        return iter(range(start, end))


class FixedBatches(torch.utils.data.Dataset):
    """Deterministic batches of a pair set in order (validation)."""

    def __init__(self, pairs: PairSet, batch_size: int, make_batch: BatchMaker):
        self.pairs = pairs
        self.batch_rows: Sequence[np.ndarray] = np.array_split(
            np.arange(len(pairs)), max(1, -(-len(pairs) // batch_size))
        )
        self.make_batch = make_batch

    def __len__(self) -> int:
        return len(self.batch_rows)

    def __getitem__(self, index: int) -> dict:
        return self.make_batch(self.pairs, self.batch_rows[index], None)
