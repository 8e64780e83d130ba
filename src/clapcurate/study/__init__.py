"""The paper's study: its config (`study.config`, checked without torch), plan and resumable
stages (`pipeline`), and its report. The names below are imported on first use."""

from ..lazy import lazy_exports

_EXPORTS = {"StudyConfig": "config", "load_study_config": "config", "run_study": "pipeline"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
