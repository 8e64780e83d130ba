"""The study's readings of the embedded world's ground truth: how peaked the soft targets are on
the teacher's own clips, and per-class accuracy on classes rare or frequent in the corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .pipeline import Study


def target_peakedness(study: Study, seed: int, ckpt: str, train_manifest: str, embeddings: dict[str, str]) -> dict:
    """`study.targets.target_mass` of the full teacher's audio targets on batches of its own
    training clips (the student config's beta and batch size, the teacher's temperature)."""
    from ..data.manifest import read_manifest
    from ..embed import load_embeddings
    from ..model.checkpoints import load
    from .targets import target_mass

    def run():
        ids, emb = load_embeddings(embeddings["train_audio"])
        path_of = dict(zip(*read_manifest(train_manifest)[["clip_id", "audio_path"]].T.values))
        events = [study.truth().clip_events(path_of[clip]) for clip in ids]
        scale = float(load(ckpt).logit_scale_exp().detach())
        student = study.config.student
        table = target_mass(emb, events, student.loss.beta, scale, student.data.batch_size, seed=seed)
        return {"rows": table.to_dict("records"), "alike_share": table.attrs["alike_share"], "scale": scale}

    return study.stages.run(f"targets/full_s{seed}", run)


def per_class_rows(truth, rows: list[dict]) -> pd.DataFrame:
    """Per-class accuracy of every evaluation, each class marked rare or frequent in the corpus
    (by the world's ground truth `truth`; no rows without one)."""
    columns = ["teacher", "model", "seed", "benchmark", "group", "accuracy"]
    if truth is None:
        return pd.DataFrame(columns=columns)
    groups = {}
    out = []
    for row in rows:
        bench = row["benchmark"]
        if bench not in groups:
            groups[bench] = truth.rare_classes(bench, list(row["per_class"]))
        for label, acc in row["per_class"].items():
            out.append({**{k: row[k] for k in columns[:4]}, "group": groups[bench][label], "accuracy": acc})
    return pd.DataFrame(out, columns=columns)
