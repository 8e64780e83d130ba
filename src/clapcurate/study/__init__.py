"""The paper's study: its config, plan and resumable stages (`pipeline`), and its report."""

from .config import StudyConfig, load_study_config
from .pipeline import run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
