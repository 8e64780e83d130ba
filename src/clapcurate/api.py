"""clapcurate from Python (a notebook, a script): objects in, objects out.

    from clapcurate import api
    teacher = api.load("laion/clap-htsat-unfused")      # any model --model takes, or a CLAP
    audio = api.embed_audio(teacher, [wave1, wave2])    # [N, d] numpy, L2-normalised
    du = api.curate("du", teacher, train="train.csv", pool="pool.csv", keep_fraction=0.01)
    student = api.fit_student(teacher, du, replay="train.csv", out_dir="runs/student",
                              trainer=dict(max_steps=1000))
    api.evaluate(student, "esc50:data/ESC-50").accuracy
    api.export(student, "exported/")                    # back in the teacher's form

Data arguments take a manifest DataFrame, a manifest file or a dataset spec (`kind:path`);
an Improvement-Set argument also takes the `ImprovementSet` that `curate` returns. The commands
of the CLI run the same functions underneath (`embed`, `curate.methods`, `train.fit`,
`zeroshot`, `export`). `student` builds the LightningModule and DataModule for a `Trainer` of
one's own; `fit_student` trains them with clapcurate's and returns the student.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .audio import inference_windows
from .curate.methods import ImprovementSet
from .errors import ClapcurateError
from .model.clap import CLAP

Data = pd.DataFrame | str | os.PathLike


def load(model: CLAP | str | os.PathLike, text_encoder: str | None = None, device: str = "cpu") -> CLAP:
    """The model `model` names (anything `--model` takes: a checkpoint folder, a transformers
    `ClapModel` folder, an MS CLAP or LAION-CLAP weights file), in eval mode; a `CLAP` as it is."""
    from .model.checkpoints import load_model

    return model if isinstance(model, CLAP) else load_model(model, text_encoder, device=device)


def manifest(data: Data) -> pd.DataFrame:
    """A manifest DataFrame (normalised) of a DataFrame, a manifest file or a dataset spec."""
    from .data.manifest import normalize_manifest
    from .data.readers import read_data

    if isinstance(data, ImprovementSet):
        return data.rows
    if isinstance(data, pd.DataFrame):
        return normalize_manifest(data)
    return read_data(data)


def embed_audio(model: CLAP, audio: Sequence[np.ndarray] | Data, batch_size: int = 64) -> np.ndarray:
    """L2-normalised audio embeddings [N, d]: of N mono waveforms at `model.sample_rate` (each the
    normalised mean of its windows' embeddings, as every command embeds a clip), or of a
    manifest's unique clips in manifest order (unreadable ones left out, as `embed` does)."""
    from .embed import embed_audio as embed_manifest_audio

    model = load(model)
    if isinstance(audio, (pd.DataFrame, str, os.PathLike)):
        return embed_manifest_audio(model, manifest(audio), batch_size=batch_size).embeddings
    embeddings = []
    with torch.no_grad():
        for wave in audio:
            windows = inference_windows(np.asarray(wave, dtype=np.float32), model.clip_samples,
                                        model.config.audio.short_clip_fill)
            mean = model.encode_audio(torch.from_numpy(windows)).mean(dim=0)
            embeddings.append(torch.nn.functional.normalize(mean, dim=-1).cpu().numpy())
    return np.stack(embeddings) if embeddings else np.zeros((0, model.config.d_proj), dtype=np.float32)


def embed_text(model: CLAP, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised text embeddings [N, d] of `texts`, in order."""
    from .embed import embed_texts

    return embed_texts(load(model), list(texts))


def curate(method: str, teacher: CLAP, train: Data, pool: Data | None = None, labels: Sequence[str] | None = None,
           ds: ImprovementSet | Data | None = None, sigma: float | None = None, keep_fraction: float | None = None,
           max_captions_per_clip: int | None = None) -> ImprovementSet:
    """An Improvement-Set by `method` ("du", "ds" or "ads") with the teacher's embeddings:
    DU pairs the `pool`'s clips (those the teacher's `train` pairs do not hold) with `train`'s
    captions, DS keeps the `train` pairs whose caption is close to a prompt of `labels`, ADS pairs
    the DS set's captions (`ds`, or DS of `labels` computed here) with the pool's clips. `sigma`
    or `keep_fraction` sets the threshold (default: the method's sigma)."""
    from .curate.leakage import training_clip_mask
    from .curate.methods import curate_ads, curate_ds, curate_du
    from .embed import embed_audio as embed_manifest_audio
    from .embed import unique_captions, unique_clips
    from .prompts import prompts

    teacher, train = load(teacher), manifest(train)
    if method not in ("du", "ds", "ads"):
        raise ClapcurateError(f"curation method {method!r}: choose du, ds or ads")
    threshold = dict(sigma=sigma, keep_fraction=keep_fraction)
    if method == "ds" or (method == "ads" and ds is None):
        if not labels:
            raise ClapcurateError(f"{method.upper()} curation needs the benchmark's class labels (labels=[...])")
        captioned = train[train["caption"] != ""].reset_index(drop=True)
        ds_set = curate_ds(captioned, embed_text(teacher, captioned["caption"]),
                           embed_text(teacher, prompts(labels)), list(labels),
                           **(threshold if method == "ds" else {}))
        if method == "ds":
            return ds_set
        ds = ds_set
    if pool is None:
        raise ClapcurateError(f"{method.upper()} curation needs a pool of clips (pool=...)")
    pool = manifest(pool)
    result = embed_manifest_audio(teacher, pool)
    clips = unique_clips(pool).set_index("clip_id").loc[result.ids].reset_index()
    fresh = ~training_clip_mask(clips, train)
    pool_embeddings, pool_clips = result.embeddings[fresh], clips[fresh].reset_index(drop=True)
    search = dict(threshold, max_captions_per_clip=max_captions_per_clip)
    if method == "du":
        captions = unique_captions(train)
        return curate_du(pool_embeddings, pool_clips, embed_text(teacher, captions["caption"]), captions, **search)
    captions = manifest(ds)
    return curate_ads(captions, embed_text(teacher, captions["caption"]), pool_embeddings, pool_clips, **search)


def _student_config(teacher, improvement_set, replay: Data, out_dir, settings: dict):
    """The `StudentConfig` of the arguments, objects written to `out_dir/inputs/` where the
    fit reads files (a `CLAP` as a checkpoint folder, a DataFrame or ImprovementSet as a manifest)."""
    from .config import from_dict
    from .data.manifest import write_manifest
    from .model.checkpoints import save
    from .train.config import StudentConfig, placed

    inputs = Path(out_dir) / "inputs"
    if isinstance(teacher, CLAP):
        teacher = save(teacher, inputs / "teacher")
    files = {}
    for key, data in (("improvement_set", improvement_set), ("replay_manifest", replay)):
        files[key] = write_manifest(manifest(data), inputs / f"{key}.csv") \
            if isinstance(data, (pd.DataFrame, ImprovementSet)) else data
    values = {"teacher": str(teacher), **{key: str(value) for key, value in files.items()},
              "out_dir": str(out_dir), **settings}
    return placed(from_dict(StudentConfig, values))


def student(teacher, improvement_set, replay: Data, out_dir, **settings):
    """(LightningModule, DataModule) of the student of `teacher` on `improvement_set` with
    `replay`, for `Trainer(...).fit(module, datamodule=datamodule)`; `settings` are the student
    config's keys (e.g. `loss=dict(kind="soft_label")`, `data=dict(batch_size=32)`). The student
    being trained is `module.model` (save it with `clapcurate.model.save`)."""
    from .train.fit import build_student, check_student_inputs

    config = _student_config(teacher, improvement_set, replay, out_dir, settings)
    module, datamodule, _, _ = build_student(config, *check_student_inputs(config))
    return module, datamodule


def fit_student(teacher, improvement_set, replay: Data, out_dir, **settings) -> CLAP:
    """Train the student as `clapcurate fit-student` does (run folder `out_dir`) and return it
    (`out_dir/last`); `settings` as for `student`."""
    from .model.checkpoints import load
    from .train.fit import fit_student as fit

    return load(fit(_student_config(teacher, improvement_set, replay, out_dir, settings)) / "last")


def evaluate(model, data: Data, labels: Sequence[str] | None = None):
    """Zero-shot classification of a labelled manifest (`zeroshot.ZeroShotResult`: accuracy,
    per-class accuracy, confusion, predictions)."""
    from .zeroshot import evaluate as zero_shot

    return zero_shot(load(model), manifest(data), list(labels) if labels else None)


def export(model, out, format: str | None = None):
    """Write the model (a `CLAP`, or what `load` takes) as `format` ("hf", "msclap", "laion";
    default: its teacher's form) to the folder `out` with a model card (`export.Exported`)."""
    from .export import export as write

    if isinstance(model, CLAP):
        return write(None, out, format, model=model)
    return write(model, out, format)
