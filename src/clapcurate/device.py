"""Where the models run: one `device` setting for every stage, and the settings that follow it.

A device setting is `auto` (the default: this process's GPU when CUDA is available, i.e.
`cuda:LOCAL_RANK` under torchrun, else the CPU), `cpu`, `cuda` or `cuda:N`. `resolve_device` is
the one place that turns a setting into a `torch.device`; every stage (embedding, curation,
evaluation, classification, training) calls it.

Settings that make a GPU run fast (bf16 autocast, channels_last, pinned memory, DataLoader
workers) are `auto` by default and follow the resolved device (`hardware_settings`): on for
CUDA, off on the CPU, so a CPU run computes exactly what a plain float32 run does.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEVICE_SETTINGS = "auto, cpu, cuda or cuda:N"
PRECISIONS = (AUTO, "32", "bf16-mixed")  # float32, or bf16 autocast with float32 weights
MAX_AUTO_WORKERS = 8  # DataLoader workers per process that `num_workers: auto` starts on a GPU
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(setting) -> str:
    """`setting` when it is a device setting; ValueError (a config's message) otherwise."""
    if not isinstance(setting, str) or not _DEVICE_PATTERN.fullmatch(setting):
        raise ValueError(f"device must be {DEVICE_SETTINGS}, got {setting!r}")
    return setting


def check_precision(setting) -> str:
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {setting!r}")
    return setting


def check_auto(key: str, value, kind: type) -> None:
    """ValueError unless `value` is `auto` or of `kind` (ints must be >= 0)."""
    if value == AUTO:
        return
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{key} must be auto or a number >= 0, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ValueError(f"{key} must be auto, true or false, got {value!r}")


def local_rank() -> int:
    """This process's GPU index under torchrun (`LOCAL_RANK`), 0 otherwise."""
    try:
        return int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as exc:
        raise ConfigError(f"LOCAL_RANK must be an integer: {exc}") from exc


def resolve_device(setting: str | torch.device | None = AUTO) -> torch.device:
    """The `torch.device` of a device setting (None is `auto`); a `torch.device` as it is.

    `auto`: `cuda:LOCAL_RANK` when CUDA is available, else `cpu`. An explicit CUDA device that
    this machine does not have is a `ConfigError` naming it.
    """
    import torch  # here: the command line imports this module before it needs torch

    if isinstance(setting, torch.device):
        return setting
    setting = AUTO if setting is None else setting
    try:
        check_device(setting)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if setting == AUTO:
        return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {setting}: no CUDA GPU is visible to this process; use device auto or cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {setting}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return device


@dataclasses.dataclass(frozen=True)
class HardwareSettings:
    """The GPU-path settings of a run, every `auto` resolved for its device."""

    precision: str  # "32", or "bf16-mixed": bf16 autocast (the only one of these that changes numbers)
    channels_last: bool  # the CNN's 4-D tensors in channels-last memory format
    pin_memory: bool  # batches in page-locked memory, copied to the GPU without blocking
    num_workers: int  # DataLoader worker processes

    @property
    def autocast(self) -> bool:
        return self.precision == "bf16-mixed"


def auto_workers(processes: int = 1) -> int:
    """DataLoader workers for each of `processes` processes sharing this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cores // max(1, processes) - 1))


def hardware_settings(device: torch.device | str, precision: str = AUTO, channels_last: bool | str = AUTO,
                      pin_memory: bool | str = AUTO, num_workers: int | str = AUTO,
                      processes: int = 1) -> HardwareSettings:
    """The settings of a run on `device` (a `torch.device` or a device setting): each given value
    as it is, each `auto` on for CUDA and off elsewhere (bf16 autocast, channels_last, pinned
    memory, `auto_workers(processes)` workers; float32 and no workers off CUDA). Pinned memory
    stays off without CUDA even when asked for: it only speeds copies to a GPU."""
    cuda = resolve_device(device).type == "cuda"

    def pick(value, on_cuda, otherwise):
        return (on_cuda if cuda else otherwise) if value == AUTO else value

    return HardwareSettings(precision=pick(check_precision(precision), "bf16-mixed", "32"),
                            channels_last=pick(channels_last, True, False),
                            pin_memory=pick(pin_memory, True, False) and cuda,  # page-locking serves a GPU only
                            num_workers=pick(num_workers, auto_workers(processes) if cuda else 0, 0))
