"""Teacher and student training (Lightning): `fit_teacher`, `fit_student` and their configs."""

from .config import (
    AugmentConfig, DataConfig, LossConfig, OptimConfig, ReplayConfig, StudentConfig, TeacherConfig,
    TeacherDataConfig, TextTrainConfig, TrainerConfig, load_student_config, load_teacher_config,
)
from .fit import fit_student, fit_teacher
from .module import ClapModule, TrainingDivergedError, gather_rows, global_batch_loss

__all__ = [
    "AugmentConfig", "ClapModule", "DataConfig", "LossConfig", "OptimConfig", "ReplayConfig", "StudentConfig",
    "TeacherConfig", "TeacherDataConfig", "TextTrainConfig", "TrainerConfig", "TrainingDivergedError",
    "fit_student", "fit_teacher", "gather_rows", "global_batch_loss", "load_student_config",
    "load_teacher_config",
]
