"""Curation of Improvement-Sets with a teacher CLAP (paper Sec. 2.2): `curate.methods` (DU, DS,
ADS as functions on embeddings and manifests), `curate.leakage` (the teacher's training clips and
the target benchmark's audio kept out of the pool) and `curate.stage` (the `clapcurate curate`
stage: configs, embeddings on disk, output files).
The exact blocked similarity search they use is `clapcurate.search`."""

from ..content import content_duplicates
from .leakage import refuse_benchmark_audio, shared_source_mask, training_clip_mask
from .methods import ImprovementSet, curate_ads, curate_ds, curate_du, threshold_from
from .summary import TeacherReference, curation_warnings, false_discovery_precision, summary_text
from .stage import (HISTOGRAM_DATA_FILE, HISTOGRAM_FILE, STATS_FILE, CurationConfig, improvement_set_stats,
                    load_curation_config, plot_similarity_histogram, read_histogram, run_curation,
                    write_improvement_set)

__all__ = [
    "CurationConfig", "HISTOGRAM_DATA_FILE", "content_duplicates", "HISTOGRAM_FILE", "ImprovementSet", "STATS_FILE", "curate_ads",
    "curate_ds", "curate_du", "improvement_set_stats", "load_curation_config", "plot_similarity_histogram",
    "read_histogram", "refuse_benchmark_audio", "run_curation", "shared_source_mask", "threshold_from",
    "training_clip_mask", "write_improvement_set", "TeacherReference", "curation_warnings",
    "false_discovery_precision", "summary_text",
]
