"""Reading PyTorch checkpoint files safely and loading weights strictly (every key and shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from clapcurate.errors import ClapcurateError

MAX_KEYS_LISTED = 10


def _numpy_array_globals() -> list:
    """What unpickling numpy arrays and scalars needs, under numpy 2 and numpy 1 names."""
    array_reconstructor = np.ndarray(0).__reduce__()[0]
    scalar_reconstructor = np.float64(0).__reduce__()[0]
    dtype_classes = [type(np.dtype(code)) for code in np.typecodes["All"]]
    return [
        np.ndarray,
        np.dtype,
        *dtype_classes,
        array_reconstructor,
        scalar_reconstructor,
        (array_reconstructor, "numpy.core.multiarray._reconstruct"),
        (scalar_reconstructor, "numpy.core.multiarray.scalar"),
    ]


def read_torch_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict in a PANNs checkpoint file: `torch.load(path)['model']` or a bare one.

    PANNs' training script also stores its sampler state (numpy arrays) next to the weights;
    numpy array reconstruction is allowed, arbitrary pickled code is not.
    """
    if not path.is_file():
        raise ClapcurateError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ClapcurateError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        return checkpoint["model"]
    if isinstance(checkpoint, Mapping):
        return checkpoint
    raise ClapcurateError(f"{path}: expected a state dict or a dict with key 'model'")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    more = len(keys) - MAX_KEYS_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load `state` into `module`, every key and shape matching; otherwise a `ClapcurateError`
    `"{what}: missing keys: ...; unexpected keys: ...; shape mismatches (checkpoint vs model): ..."`."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (checkpoint vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise ClapcurateError(f"{what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
