"""Write the embedded world: a captioned corpus (Clotho and AudioCaps layouts), an in-the-wild
pool (AudioSet layout), a labelled set for audio-encoder pretraining (AudioSet balanced-train
layout) and three zero-shot benchmarks (ESC-50, UrbanSound8K, TUT Acoustic
Scenes 2017 layouts), deterministically from a seed. See ``docs/synthetic-world.md``."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ...errors import ClapcurateError
from ...files import check_output_folder, write_text_atomically
from ..manifest import youtube_clip_id
from .captions import write_captions
from .concepts import (CONCEPTS, ESC10_CLASSES, ESC50_CLASSES, ESC50_CONCEPT, SCENES, URBANSOUND8K_CLASSES,
                       URBANSOUND8K_CONCEPT, URBANSOUND8K_SHARE)
from .plans import (PART_CODES, ClipPlan, CorpusCoverage, benchmark_event_plan, corpus_plan, noise_background,
                    pool_plan, scene_backgrounds, scene_plan, with_fault)
from .render import write_clip
from .sounds import SAMPLE_RATE

CLIP_SECONDS = 1.5
URBAN_CLIP_SECONDS = (0.6, 1.5)  # UrbanSound8K slices vary in length
URBAN_BACKGROUND_SCENES = ("city_center", "residential_area", "park")
SIZES = {  # clip counts at scale 1
    "clotho_development": 560, "clotho_validation": 140,
    "audiocaps_train": 640, "audiocaps_val": 80, "audiocaps_test": 80,
    "pool": 16000, "tagged": 4000,
    "esc50_per_class": 40, "urbansound8k_per_class": 230,
    "tut2017_development_per_scene": 96, "tut2017_evaluation_per_scene": 34,
}
TUT_SEGMENTS_PER_RECORDING = 6
FAULTS = ("truncated", "zero_length", "not_audio", "nan", "silent", "silent", "silent")
LOADER_REJECTS = {"truncated": True, "zero_length": True, "not_audio": True, "nan": True, "silent": False}
YOUTUBE_ID_ALPHABET = string.ascii_letters + string.digits + "-_"
OWNED_ENTRIES = ("corpus", "pool", "tagged", "benchmarks", "ground_truth", "world.json")


@dataclass(frozen=True)
class WorldPaths:
    """Where `generate_world` wrote each part, and how many audio files each part holds."""

    root: Path
    clotho: Path
    audiocaps: Path
    pool_segments_csv: Path
    pool_audio: Path
    tagged_segments_csv: Path
    tagged_audio: Path
    esc50: Path
    urbansound8k: Path
    tut2017_development: Path
    tut2017_evaluation: Path
    ground_truth: Path
    world_json: Path
    counts: dict

    def __rich__(self) -> Table:
        table = Table(title=f"embedded world in {self.root}")
        for column in ("part", "layout", "path", "audio files"):
            table.add_column(column)
        rows = (("captioned corpus", "Clotho", self.clotho, self.counts["clotho"]),
                ("captioned corpus", "AudioCaps", self.audiocaps, self.counts["audiocaps"]),
                ("in-the-wild pool", "AudioSet", self.pool_segments_csv, self.counts["pool"]),
                ("labelled set", "AudioSet balanced", self.tagged_segments_csv, self.counts["tagged"]),
                ("benchmark", "ESC-50", self.esc50, self.counts["esc50"]),
                ("benchmark", "UrbanSound8K", self.urbansound8k, self.counts["urbansound8k"]),
                ("benchmark", "TUT17 development", self.tut2017_development, self.counts["tut2017_development"]),
                ("benchmark", "TUT17 evaluation", self.tut2017_evaluation, self.counts["tut2017_evaluation"]),
                ("ground truth", "CSV", self.ground_truth, ""))
        for part, layout, path, count in rows:
            table.add_row(part, layout, str(path.relative_to(self.root)), str(count))
        return table


def scaled(count: int, scale: float) -> int:
    """A count at ``scale``, at least 1."""
    return max(1, int(round(count * scale)))


def part_rng(seed: int, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, PART_CODES[part]])


def clip_seed(seed: int, part: str, index: int) -> tuple:
    return (seed, PART_CODES[part], index)


def youtube_ids(count: int, rng: np.random.Generator) -> list:
    """``count`` distinct 11-character YouTube-style ids."""
    ids: dict = {}
    while len(ids) < count:
        letters = rng.choice(list(YOUTUBE_ID_ALPHABET), size=11)
        ids.setdefault("".join(letters), None)
    return list(ids)


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


# ----------------------------------------------------------------------------- captioned corpus

def plan_corpus(seed: int, scale: float, coverage: CorpusCoverage, segment_ids: list) -> dict:
    """Clotho and AudioCaps clips with captions.

    Returns ``{"clotho": [(plan, split, file_name, captions)], "audiocaps": [(plan, split,
    youtube_id, start_time, captions)]}``; ``segment_ids`` are ``(youtube_id, start_time)``."""
    rng = part_rng(seed, "corpus")
    parts: dict = {"clotho": [], "audiocaps": []}
    index = 0
    for split in ("development", "validation"):
        for _ in range(scaled(SIZES[f"clotho_{split}"], scale)):
            file_name = f"field recording {index:05d}.wav"
            plan = corpus_plan(f"corpus/clotho/{split}/{file_name}", clip_seed(seed, "corpus", index), coverage,
                               CLIP_SECONDS, rng)
            captions = write_captions(plan.events, plan.scene, plan.background_colour, 5, rng)
            parts["clotho"].append((plan, split, file_name, captions))
            index += 1
    segments = iter(segment_ids)
    for split in ("train", "val", "test"):
        for _ in range(scaled(SIZES[f"audiocaps_{split}"], scale)):
            youtube_id, start_time = next(segments)
            plan = corpus_plan(f"corpus/audiocaps/audio/{split}/{youtube_id}_{start_time}.wav",
                               clip_seed(seed, "corpus", index), coverage, CLIP_SECONDS, rng)
            captions = write_captions(plan.events, plan.scene, plan.background_colour, int(rng.integers(1, 3)), rng)
            parts["audiocaps"].append((plan, split, youtube_id, start_time, captions))
            index += 1
    return parts


def write_corpus_metadata(root: Path, corpus: dict, seed: int) -> None:
    clotho = root / "corpus" / "clotho"
    for split in ("development", "validation"):
        rows = [(file_name, *captions) for _, clip_split, file_name, captions in corpus["clotho"] if clip_split == split]
        write_csv(clotho / f"clotho_captions_{split}.csv",
                  ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5"), rows)
    rows = [(split, youtube_id, start_time, caption)
            for _, split, youtube_id, start_time, captions in corpus["audiocaps"] for caption in captions]
    audiocap_ids = np.random.default_rng([seed, PART_CODES["ids"], 1]).choice(10**6, size=len(rows), replace=False)
    for split in ("train", "val", "test"):
        write_csv(root / "corpus" / "audiocaps" / f"{split}.csv", ("audiocap_id", "youtube_id", "start_time", "caption"),
                  [(int(audiocap_id) + 1, *row[1:]) for audiocap_id, row in zip(audiocap_ids, rows) if row[0] == split])


# ----------------------------------------------------------------------------- in-the-wild pool

def concept_mid(index: int) -> str:
    return f"/t/syn{index:04d}"


def scene_mid(index: int) -> str:
    return f"/t/scn{index:04d}"


MIDS = {**{concept.name: concept_mid(i) for i, concept in enumerate(CONCEPTS)},
        **{f"scene:{scene.name}": scene_mid(i) for i, scene in enumerate(SCENES)}}


def plan_pool(seed: int, scale: float, segment_ids: list, audiocaps: list) -> list:
    """``[(plan, youtube_id, start_seconds, in_audiocaps)]``: fresh in-the-wild clips, the planned
    faults, and every AudioCaps clip again under its AudioSet segment (same plan, same bytes)."""
    rng = part_rng(seed, "pool")
    pool = []
    for index, (youtube_id, start) in enumerate(segment_ids):
        plan = pool_plan(f"pool/audio/{youtube_id}_{start}.wav", clip_seed(seed, "pool", index), CLIP_SECONDS, rng)
        pool.append((plan, youtube_id, start, False))
    fault_positions = rng.choice(len(pool), size=min(len(FAULTS), len(pool)), replace=False)
    for position, fault in zip(sorted(fault_positions), FAULTS):
        plan, youtube_id, start, _ = pool[position]
        pool[position] = (with_fault(plan, fault), youtube_id, start, False)
    for plan, _, youtube_id, start_time, _ in audiocaps:
        pool.append((ClipPlan(f"pool/audio/{youtube_id}_{start_time}.wav", plan.seed, plan.events, plan.backgrounds,
                              plan.scene, plan.mixing, plan.seconds), youtube_id, start_time, True))
    return sorted(pool, key=lambda entry: entry[1])


def plan_tagged(seed: int, scale: float, segment_ids: list) -> list:
    """``[(plan, youtube_id, start_seconds, False)]``: labelled in-the-wild clips (the stand-in for
    AudioSet's balanced train set, on which PANNs-style audio encoders are pretrained). Drawn
    like the pool, all concepts evenly, but distinct clips: the pool itself stays unlabelled."""
    rng = part_rng(seed, "tagged")
    return sorted(((pool_plan(f"tagged/audio/{youtube_id}_{start}.wav", clip_seed(seed, "tagged", index),
                              CLIP_SECONDS, rng), youtube_id, start, False)
                   for index, (youtube_id, start) in enumerate(segment_ids)), key=lambda entry: entry[1])


def positive_labels(plan: ClipPlan) -> str:
    names = sorted({concept for concept, _ in plan.events} | ({f"scene:{plan.scene}"} if plan.scene else set()))
    return ",".join(MIDS[name] for name in names)


def write_segments_metadata(folder: Path, segments_name: str, clips: list) -> None:
    """An AudioSet segments CSV (`clips`: ``[(plan, youtube_id, start, ...)]``) and
    `class_labels_indices.csv` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Segments csv created by clapcurate synth (embedded world)",
             f"# num_ytids={len(clips)}, num_segs={len(clips)}, num_unique_labels={len(MIDS)}",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{youtube_id}, {start:.3f}, {start + plan.seconds:.3f}, "{positive_labels(plan)}"'
              for plan, youtube_id, start, *_ in clips]
    (folder / segments_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_csv(folder / "class_labels_indices.csv", ("index", "mid", "display_name"),
              [(i, mid, name.replace("scene:", "").replace("_", " ").capitalize())
               for i, (name, mid) in enumerate(MIDS.items())])


# ----------------------------------------------------------------------------- benchmarks

def plan_esc50(seed: int, scale: float) -> list:
    """``[(plan, fold, target, category, src_file, take)]``: every class the same number of clips."""
    rng = part_rng(seed, "esc50")
    per_class = scaled(SIZES["esc50_per_class"], scale)
    src_files = iter(rng.permutation(np.arange(10000, 300000))[: len(ESC50_CLASSES) * per_class])
    clips = []
    for target, category in enumerate(ESC50_CLASSES):
        src_file, takes, previous_fold = 0, 0, 0
        for k in range(per_class):
            fold = 5 * k // per_class + 1  # equal folds, as in the real set; a source stays in one fold
            if fold != previous_fold or takes == 3 or rng.random() < 0.6:  # a new source, else another take
                src_file, takes, previous_fold = int(next(src_files)), 0, fold
            take = "ABC"[takes]
            takes += 1
            name = f"{fold}-{src_file}-{take}-{target}.wav"
            plan = benchmark_event_plan(f"benchmarks/esc50/audio/{name}", clip_seed(seed, "esc50", len(clips)),
                                        ESC50_CONCEPT[category], noise_background(rng), "foreground", CLIP_SECONDS, rng)
            clips.append((plan, fold, target, category, src_file, take))
    return sorted(clips, key=lambda clip: clip[0].path)


def write_esc50_metadata(root: Path, clips: list) -> None:
    rows = [(Path(plan.path).name, fold, target, category, category in ESC10_CLASSES, src_file, take)
            for plan, fold, target, category, src_file, take in clips]
    write_csv(root / "benchmarks" / "esc50" / "meta" / "esc50.csv",
              ("filename", "fold", "target", "category", "esc10", "src_file", "take"), rows)


def plan_urbansound8k(seed: int, scale: float) -> list:
    """``[(plan, fs_id, start, end, salience, fold, class_id, class_name)]``; 1-3 slices per
    source recording, recordings spread over 10 folds, the real set's class imbalance."""
    rng = part_rng(seed, "urbansound8k")
    fs_ids = iter(rng.permutation(np.arange(1000, 200000)))
    clips = []
    for class_id, class_name in enumerate(URBANSOUND8K_CLASSES):
        remaining = scaled(SIZES["urbansound8k_per_class"] * URBANSOUND8K_SHARE.get(class_name, 1.0), scale)
        while remaining > 0:
            fs_id, fold = int(next(fs_ids)), int(rng.integers(1, 11))
            backgrounds = scene_backgrounds(URBAN_BACKGROUND_SCENES[int(rng.integers(3))], rng)
            offset = float(rng.uniform(0.0, 60.0))
            for slice_index in range(min(int(rng.integers(1, 4)), remaining)):
                seconds = round(float(rng.uniform(*URBAN_CLIP_SECONDS)), 2)
                salience = 1 if rng.random() < 0.6 else 2
                name = f"{fs_id}-{class_id}-0-{slice_index}.wav"
                plan = benchmark_event_plan(f"benchmarks/urbansound8k/audio/fold{fold}/{name}",
                                            clip_seed(seed, "urbansound8k", len(clips)),
                                            URBANSOUND8K_CONCEPT[class_name], backgrounds,
                                            "foreground" if salience == 1 else "background", seconds, rng)
                clips.append((plan, fs_id, round(offset, 6), round(offset + seconds, 6), salience, fold, class_id,
                              class_name))
                offset += seconds + float(rng.uniform(0.5, 5.0))
                remaining -= 1
    return sorted(clips, key=lambda clip: Path(clip[0].path).name)


def write_urbansound8k_metadata(root: Path, clips: list) -> None:
    rows = [(Path(plan.path).name, *fields) for plan, *fields in clips]
    write_csv(root / "benchmarks" / "urbansound8k" / "metadata" / "UrbanSound8K.csv",
              ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"), rows)


def plan_tut2017(seed: int, scale: float) -> dict:
    """``{subset: [(plan, scene, recording_id)]}`` for the development and evaluation sets;
    segments of one recording share its background textures."""
    rng = part_rng(seed, "tut2017")
    subsets: dict = {}
    for subset, prefix in (("development", "a"), ("evaluation", "b")):
        clips, recordings = [], 0
        for scene in SCENES:
            remaining = scaled(SIZES[f"tut2017_{subset}_per_scene"], scale)
            while remaining > 0:
                recordings += 1
                recording_id = f"{prefix}{recordings:03d}"
                backgrounds = scene_backgrounds(scene.name, rng)
                for segment in range(min(TUT_SEGMENTS_PER_RECORDING, remaining)):
                    name = f"{recording_id}_{10 * segment}_{10 * segment + 10}.wav"
                    folder = f"benchmarks/tut2017/TUT-acoustic-scenes-2017-{subset}/audio"
                    index = len(clips) + (0 if subset == "development" else 10**6)
                    plan = scene_plan(f"{folder}/{name}", clip_seed(seed, "tut2017", index), scene.name, backgrounds,
                                      rng, CLIP_SECONDS)
                    clips.append((plan, scene.name, recording_id))
                    remaining -= 1
        subsets[subset] = sorted(clips, key=lambda clip: clip[0].path)
    return subsets


def write_tut2017_metadata(root: Path, subsets: dict) -> None:
    for subset, clips in subsets.items():
        folder = root / "benchmarks" / "tut2017" / f"TUT-acoustic-scenes-2017-{subset}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"audio/{Path(plan.path).name}\t{scene}\t{recording_id}" for plan, scene, recording_id in clips]
        (folder / "meta.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- ground truth, world.json

def write_ground_truth(root: Path, corpus: dict, pool: list, tagged: list) -> None:
    folder = root / "ground_truth"
    header = ("path", "source", "split", "events", "background")
    corpus_rows = [(plan.path, "clotho", split, plan.describe_events(), plan.describe_background())
                   for plan, split, *_ in corpus["clotho"]]
    corpus_rows += [(plan.path, "audiocaps", split, plan.describe_events(), plan.describe_background())
                    for plan, split, *_ in corpus["audiocaps"]]
    write_csv(folder / "corpus.csv", header, corpus_rows)
    write_csv(folder / "pool.csv", ("path", "clip_id", "events", "background", "in_audiocaps", "fault"),
              [(plan.path, youtube_clip_id(youtube_id, start), plan.describe_events(), plan.describe_background(),
                in_audiocaps, plan.fault) for plan, youtube_id, start, in_audiocaps in pool])
    write_csv(folder / "tagged.csv", ("path", "clip_id", "events", "background"),
              [(plan.path, youtube_clip_id(youtube_id, start), plan.describe_events(), plan.describe_background())
               for plan, youtube_id, start, _ in tagged])
    write_csv(folder / "corrupted.csv", ("path", "fault", "loader_rejects"),
              [(plan.path, plan.fault, LOADER_REJECTS[plan.fault]) for plan, *_ in pool if plan.fault])


def world_description(seed: int, scale: float, coverage: CorpusCoverage, counts: dict) -> dict:
    benchmark_labels: dict = {}
    for label, concept in ESC50_CONCEPT.items():
        benchmark_labels.setdefault(concept, []).append(f"esc50:{label}")
    for label, concept in URBANSOUND8K_CONCEPT.items():
        benchmark_labels.setdefault(concept, []).append(f"urbansound8k:{label}")
    return {
        "seed": seed, "scale": scale, "sample_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS,
        "urbansound8k_clip_seconds": list(URBAN_CLIP_SECONDS), "counts": counts,
        "concepts": [{"name": concept.name, "mid": MIDS[concept.name],
                      "variants": [variant.name for variant in concept.variants],
                      "corpus_tier": coverage.tiers[concept.name],
                      "corpus_variants": list(coverage.variants[concept.name]),
                      "benchmark_labels": benchmark_labels.get(concept.name, [])} for concept in CONCEPTS],
        "scenes": [{"name": scene.name, "mid": MIDS[f"scene:{scene.name}"],
                    "backgrounds": [name for name, _, _ in scene.backgrounds], "events": list(scene.events)}
                   for scene in SCENES],
    }


# ----------------------------------------------------------------------------- driver

GENERATING_MARKER = ".generating"  # present while a world is being written; world.json comes last


def prepare_output(root: Path) -> None:
    """Refuse a non-empty folder that is not a world (finished, or interrupted while being
    generated); clear such a world's parts, so that a rerun writes it again from scratch."""
    check_output_folder(root, "world folder")
    if any(root.iterdir()):
        if not ((root / "world.json").is_file() or (root / GENERATING_MARKER).is_file()):
            raise ClapcurateError(f"{root}: folder is not empty and holds no world.json; choose an empty folder")
        for entry in OWNED_ENTRIES:
            target = root / entry
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    (root / GENERATING_MARKER).write_text("a world is being written here; rerun the same command to finish it\n")


def render_all(root: Path, parts: dict, progress: bool, workers: int) -> None:
    """Render every planned clip (``parts``: name -> plans), in ``workers`` processes."""
    tasks = [(str(root), plan) for plans in parts.values() for plan in plans]
    part_of = {plan.path: name for name, plans in parts.items() for plan in plans}
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        bars = {name: bar.add_task(name, total=len(plans)) for name, plans in parts.items()}
        if workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for path in pool.imap_unordered(write_clip, tasks, chunksize=64):
                    bar.advance(bars[part_of[path]])
        else:
            for task in tasks:
                bar.advance(bars[part_of[write_clip(task)]])


def generate_world(out_dir, seed: int = 0, scale: float = 1.0, progress: bool = True,
                   workers: int | None = None) -> WorldPaths:
    """Write the embedded world below ``out_dir`` deterministically from ``seed``.

    ``scale`` multiplies every clip count (at least one clip per class); ``workers`` processes
    render audio (default: up to 2 for large worlds, 1 for small ones; the bytes do not depend
    on it). Returns the paths written and the number of audio files per part."""
    if not scale > 0:
        raise ClapcurateError(f"scale must be positive, got {scale}")
    root = Path(out_dir).resolve()
    prepare_output(root)
    ids_rng = np.random.default_rng([seed, PART_CODES["ids"]])
    n_audiocaps = sum(scaled(SIZES[f"audiocaps_{split}"], scale) for split in ("train", "val", "test"))
    n_pool, n_tagged = scaled(SIZES["pool"], scale), scaled(SIZES["tagged"], scale)
    ids = youtube_ids(n_audiocaps + n_pool + n_tagged, ids_rng)
    starts = (10 * ids_rng.integers(0, 30, size=len(ids))).tolist()
    segment_ids = list(zip(ids, starts))
    tagged = plan_tagged(seed, scale, segment_ids[n_audiocaps + n_pool:])
    coverage = CorpusCoverage.draw(part_rng(seed, "corpus"))
    corpus = plan_corpus(seed, scale, coverage, segment_ids[:n_audiocaps])
    pool = plan_pool(seed, scale, segment_ids[n_audiocaps:n_audiocaps + n_pool], corpus["audiocaps"])
    esc50, urbansound8k, tut2017 = plan_esc50(seed, scale), plan_urbansound8k(seed, scale), plan_tut2017(seed, scale)
    parts = {"corpus (Clotho)": [clip[0] for clip in corpus["clotho"]],
             "corpus (AudioCaps)": [clip[0] for clip in corpus["audiocaps"]],
             "pool (AudioSet)": [clip[0] for clip in pool],
             "labelled (AudioSet)": [clip[0] for clip in tagged],
             "ESC-50": [clip[0] for clip in esc50],
             "UrbanSound8K": [clip[0] for clip in urbansound8k],
             "TUT17": [clip[0] for subset in tut2017.values() for clip in subset]}
    n_clips = sum(len(plans) for plans in parts.values())
    render_all(root, parts, progress, workers or (min(2, os.cpu_count() or 1) if n_clips > 3000 else 1))
    write_corpus_metadata(root, corpus, seed)
    write_segments_metadata(root / "pool", "unbalanced_train_segments.csv", pool)
    write_segments_metadata(root / "tagged", "balanced_train_segments.csv", tagged)
    write_esc50_metadata(root, esc50)
    write_urbansound8k_metadata(root, urbansound8k)
    write_tut2017_metadata(root, tut2017)
    write_ground_truth(root, corpus, pool, tagged)
    counts = {"clotho": len(corpus["clotho"]), "audiocaps": len(corpus["audiocaps"]), "pool": len(pool),
              "pool_faults": len(FAULTS), "tagged": len(tagged), "esc50": len(esc50), "urbansound8k": len(urbansound8k),
              "tut2017_development": len(tut2017["development"]), "tut2017_evaluation": len(tut2017["evaluation"])}
    world_json = root / "world.json"
    # last: a world with world.json is complete
    write_text_atomically(world_json, json.dumps(world_description(seed, scale, coverage, counts), indent=2) + "\n")
    (root / GENERATING_MARKER).unlink()
    benchmarks = root / "benchmarks"
    return WorldPaths(root=root, clotho=root / "corpus" / "clotho", audiocaps=root / "corpus" / "audiocaps",
                      pool_segments_csv=root / "pool" / "unbalanced_train_segments.csv",
                      pool_audio=root / "pool" / "audio",
                      tagged_segments_csv=root / "tagged" / "balanced_train_segments.csv",
                      tagged_audio=root / "tagged" / "audio", esc50=benchmarks / "esc50",
                      urbansound8k=benchmarks / "urbansound8k",
                      tut2017_development=benchmarks / "tut2017" / "TUT-acoustic-scenes-2017-development",
                      tut2017_evaluation=benchmarks / "tut2017" / "TUT-acoustic-scenes-2017-evaluation",
                      ground_truth=root / "ground_truth", world_json=world_json, counts=counts)
