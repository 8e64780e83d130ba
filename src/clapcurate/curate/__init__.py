"""Curation of Improvement-Sets with a teacher CLAP (paper Sec. 2.2): `curate.methods` (DU, DS,
ADS as functions on embeddings and manifests), `curate.leakage` (the teacher's training clips and
the target benchmark's audio kept out of the pool), `curate.config` (what the stage reads,
validated without torch) and `curate.stage` (the `clapcurate curate` stage: embeddings on disk,
output files). The exact blocked similarity search they use is `clapcurate.search`.

The names below are imported on first use, so that reading a curation config does not import torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {  # name: the module holding it, relative to this package
    "CurationConfig": "config",
    "load_curation_config": "config",
    "content_duplicates": ".content",
    "refuse_benchmark_audio": "leakage",
    "shared_source_mask": "leakage",
    "TeacherReference": "summary",
    "curation_warnings": "summary",
    "false_discovery_precision": "summary",
    "summary_text": "summary",
    "training_clip_mask": "leakage",
    "ImprovementSet": "methods",
    "curate_ads": "methods",
    "curate_ds": "methods",
    "curate_du": "methods",
    "threshold_from": "methods",
    "HISTOGRAM_DATA_FILE": "stage",
    "HISTOGRAM_FILE": "stage",
    "STATS_FILE": "stage",
    "improvement_set_stats": "stage",
    "plot_similarity_histogram": "stage",
    "read_histogram": "stage",
    "run_curation": "stage",
    "write_improvement_set": "stage",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
