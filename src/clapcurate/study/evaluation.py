"""The study's zero-shot evaluations as resumable stages: one model on one benchmark, its
accuracy, per-class accuracy and per-clip outcomes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import Study


# The benchmark clips' log-mels, computed once per front-end and read by every evaluated model.
BENCHMARK_FEATURES = "benchmark_features"


def evaluate(study: Study, kind: str, method: str, seed: int, ckpt: str, bench: str, manifests: dict[str, str],
             stage: str) -> dict:
    """Zero-shot evaluation of the model `ckpt` on `bench` (stage `eval/<stage>/<bench>`): one row
    of results, its per-clip outcomes as a 0/1 string over the benchmark's clips (`correct`) and a
    digest of their ids (`clips`)."""
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
        correct = result.predictions["label"] == result.predictions["predicted"]
        return {"accuracy": result.accuracy, "per_class": result.per_class, "n_clips": result.n_clips,
                "skipped": len(result.skipped), "correct": "".join("1" if c else "0" for c in correct),
                "clips": _digest(result.predictions["id"])}

    record = study.stages.run(f"eval/{stage}/{bench}", run)
    return {"teacher": kind, "method": method, "seed": seed, "benchmark": bench, **record}


def _digest(ids) -> str:
    """A short digest of an ordered list of clip ids (paired comparisons need the same clips)."""
    import hashlib

    return hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()[:16]
