"""Training (Lightning): `fit_teacher`, `fit_student`, `fit_tagger` (audio-encoder pretraining)
and their configs."""

from .config import (
    AugmentConfig, DataConfig, LossConfig, OptimConfig, ReplayConfig, StudentConfig, TaggerConfig,
    TaggerDataConfig, TeacherConfig, TeacherDataConfig, TextTrainConfig, TrainerConfig, load_student_config,
    load_tagger_config, load_teacher_config,
)
from .fit import fit_student, fit_tagger, fit_teacher
from .module import ClapModule, TaggerModule, TrainingDivergedError, gather_rows, global_batch_loss

__all__ = [
    "AugmentConfig", "ClapModule", "DataConfig", "LossConfig", "OptimConfig", "ReplayConfig", "StudentConfig",
    "TaggerConfig", "TaggerDataConfig", "TaggerModule", "TeacherConfig", "TeacherDataConfig", "TextTrainConfig",
    "TrainerConfig", "TrainingDivergedError", "fit_student", "fit_tagger", "fit_teacher", "gather_rows",
    "global_batch_loss", "load_student_config", "load_tagger_config", "load_teacher_config",
]
