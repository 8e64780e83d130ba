"""What a fit shows on the screen: a progress bar of steps, warnings about too few pairs, and
none of Lightning's messages that say nothing about a clapcurate run."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Iterator

from lightning.pytorch.callbacks.progress import ProgressBar

log = logging.getLogger("clapcurate.train")

# Lightning's messages that are irrelevant to our fits, and why:
IRRELEVANT_LIGHTNING_MESSAGES = (
    # the run folder holds our files beside metrics.csv; a stale metrics.csv is removed first
    r"Experiment logs directory .* exists and is not empty",
    # frozen encoders and frozen BatchNorm statistics are in eval mode on purpose
    r"Found \d+ module\(s\) in eval mode",
    # resume.ckpt holds the loops' and callbacks' state, so it is not a weights-only file
    r".*`weights_only`",
    # a deprecation inside Lightning itself (torch's pytree)
    r".*LeafSpec",
    # an advertisement
    r".*Tip: For seamless cloud logging",
    # our epochs are step-indexed schedules; metrics are logged every n optimizer steps across
    # epochs, so an epoch shorter than the interval loses no row of metrics.csv
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # under DDP every process validates on all validation pairs: its metrics are the run's
    r"It is recommended to use `self.log\('.*', \.\.\., sync_dist=True\)`",
    # the accelerators of the machine: the fit's own device setting says where it runs
    r"(?:GPU|TPU|HPU) available: |LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES",
)
_IRRELEVANT = re.compile("|".join(f"(?:{pattern})" for pattern in IRRELEVANT_LIGHTNING_MESSAGES))
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector",
                      "lightning.fabric.utilities.rank_zero")


class _DropIrrelevant(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _IRRELEVANT.match(record.getMessage())


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within: Lightning's `IRRELEVANT_LIGHTNING_MESSAGES` are neither warned nor logged; every
    other warning and message passes. Every fit runs inside it."""
    drop = _DropIrrelevant()
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    with warnings.catch_warnings():
        for pattern in IRRELEVANT_LIGHTNING_MESSAGES:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.addFilter(drop)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeFilter(drop)


class StepProgressBar(ProgressBar):
    """One bar of optimizer steps out of the run's total (`max_steps`, or `max_epochs` times the
    steps per epoch), resumed runs starting at their step, and the latest losses beside it.

    Lightning's own bars count batches per epoch and show "Epoch 13/-2" when only `max_steps`
    is set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._progress = None
        self._task = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @staticmethod
    def total_steps(trainer) -> int | None:
        """The run's configured number of optimizer steps (None when unbounded)."""
        if trainer.max_steps > 0:
            return trainer.max_steps
        total = trainer.estimated_stepping_batches
        return int(total) if total != float("inf") else None

    def _description(self, trainer) -> str:
        metrics = {key: value for key, value in self.get_metrics(trainer, trainer.lightning_module).items()
                   if key != "v_num"}
        losses = " ".join(f"{key} {float(value):.3f}" for key, value in metrics.items()
                          if isinstance(value, (int, float)))
        return f"training steps {losses}".rstrip()

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn())
        self._progress.start()
        self._task = self._progress.add_task("training steps", total=self.total_steps(trainer),
                                             completed=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step, description=self._description(trainer))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.global_step)
            self._progress.stop()
            self._progress = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def print(self, *args, **kwargs) -> None:
        if self._progress is not None:
            self._progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)


def warn_if_few_pairs(run_dir, counts: dict[str, int], minimums: dict[str, int]) -> list[str]:
    """Log one warning naming each count below its minimum (`minimums`: count name -> least
    number of pairs for results that mean much); returns the warnings' texts."""
    messages = [f"{name.replace('_', ' ')}: {counts[name]} (fewer than {least})"
                for name, least in minimums.items() if least > 0 and counts.get(name, 0) < least]
    if messages:
        log.warning("%s: few pairs, results may mean little: %s (data.min_pairs_warning and "
                    "data.min_val_pairs_warning set the thresholds)", run_dir, "; ".join(messages))
    return messages
