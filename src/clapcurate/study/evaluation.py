"""The study's zero-shot evaluations as resumable stages: one model on one benchmark, its
accuracy, per-class accuracy and per-clip predictions (`predictions/<stage>/<benchmark>.csv`), and
the checkpoint evaluated (which `clapcurate.export` reads to give a student's gains in its model card)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import Study

# The benchmark clips' log-mels, computed once per front-end and read by every evaluated model.
BENCHMARK_FEATURES = "benchmark_features"
PREDICTIONS_DIR = "predictions"  # each evaluation's per-clip predictions: clip_id, label, predicted


def evaluate(study: Study, kind: str, name: str, identity: dict, seed: int, ckpt: str, bench: str,
             manifests: dict[str, str], stage: str) -> dict:
    """Zero-shot evaluation of the model `ckpt` (named `name`, of `identity`: `plan.identity`) on
    `bench` (stage `eval/<stage>/<bench>`): one row of results, with the path of its per-clip
    predictions."""
    from .. import zeroshot
    from ..data.manifest import read_manifest
    from ..device import resolve_device
    from ..model.checkpoints import load
    from ..tasks import read_task

    def run():
        model = load(ckpt, device=resolve_device(study.config.device))
        task = read_task(study.data.tasks()[bench], read_manifest(manifests[bench]))  # its prompts and words
        result = zeroshot.evaluate(model, task.manifest, labels=task.labels, batch_size=study.config.eval_batch_size,
                                   num_workers=study.config.num_workers, feature_cache=study.out / BENCHMARK_FEATURES,
                                   template=task.spec.template, words=task.words)
        path = study.out / PREDICTIONS_DIR / stage / f"{bench}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        result.predictions.rename(columns={"id": "clip_id"})[["clip_id", "label", "predicted"]].to_csv(path, index=False)
        return {"accuracy": result.accuracy, "per_class": result.per_class, "clips": result.n_clips,
                "correct": int((result.predictions["label"] == result.predictions["predicted"]).sum()),
                "skipped": len(result.skipped), "predictions": str(path.relative_to(study.out))}

    record = study.stages.run(f"eval/{stage}/{bench}", run)
    return {"teacher": kind, "model": name, **identity, "seed": seed, "benchmark": bench, **record,
            "checkpoint": checkpoint_entry(study.out, ckpt)}


def checkpoint_entry(out: Path, ckpt: str) -> str:
    """The evaluated checkpoint folder as results.csv names it: relative to the study folder `out`
    when inside it (the study can move), else absolute (a given teacher)."""
    path = Path(ckpt).resolve()
    return path.relative_to(out).as_posix() if path.is_relative_to(out) else str(path)
