"""Training (Lightning): `fit_teacher`, `fit_student`, `fit_tagger` (audio-encoder pretraining)
and their configs. The names below are imported on first use: a config is read and checked
without torch (`train.config`)."""

from ..lazy import lazy_exports

_EXPORTS = {
    **{name: "config" for name in (
        "AugmentConfig", "DataConfig", "LossConfig", "OptimConfig", "ReplayConfig", "StudentConfig", "TaggerConfig",
        "TaggerDataConfig", "TeacherConfig", "TeacherDataConfig", "TextTrainConfig", "TrainerConfig",
        "load_student_config", "load_tagger_config", "load_teacher_config")},
    **{name: "fit" for name in ("fit_student", "fit_tagger", "fit_teacher")},
    **{name: "module" for name in ("ClapModule", "TaggerModule", "TrainingDivergedError", "gather_rows",
                                   "global_batch_loss")},
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
