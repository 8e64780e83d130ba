"""The paper's study: pipeline (resumable stages) and report."""

from .pipeline import StudyConfig, load_study_config, run_study

__all__ = ["StudyConfig", "load_study_config", "run_study"]
