"""How the study runs one fit: in its own process, or, when the fit's trainer asks for several
processes (`trainer.devices` x `trainer.num_nodes`, Lightning DDP), as the `clapcurate` command
of that fit in a child process. Lightning starts the other ranks by running that command again,
so they run the fit alone, while the study's own process runs every other stage exactly once."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from ..config import to_dict
from ..errors import ClapcurateError
from ..train.config import StudentConfig, TaggerConfig, TeacherConfig

COMMANDS = {TaggerConfig: "pretrain-audio", TeacherConfig: "fit-teacher", StudentConfig: "fit-student"}
STAGE_CONFIG = "stage_config.yaml"  # in the run folder: the config the child process fitted


def run_fit(config: TaggerConfig | TeacherConfig | StudentConfig, feature_cache: Path) -> Path:
    """Fit `config` and return its run folder. In a child process when it needs several
    processes; `feature_cache` is then its `data.feature_cache` unless one is given (the log-mels
    of a child live on disk, computed once for all fits and ranks)."""
    from .. import train

    if config.trainer.processes() == 1:
        fit = {TaggerConfig: train.fit_tagger, TeacherConfig: train.fit_teacher, StudentConfig: train.fit_student}
        return Path(fit[type(config)](config))
    if config.data.feature_cache is None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, feature_cache=str(feature_cache)))
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STAGE_CONFIG).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    command = COMMANDS[type(config)]
    returncode = subprocess.call([sys.executable, "-m", "clapcurate.cli", command, "--config",
                                  str(run_dir / STAGE_CONFIG)])
    if returncode != 0:
        raise ClapcurateError(f"{run_dir}: `clapcurate {command}` on {config.trainer.processes() or 'several'} "
                              f"processes failed (exit status {returncode}; its messages are above)")
    return run_dir
