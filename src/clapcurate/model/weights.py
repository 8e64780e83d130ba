"""Reading PyTorch checkpoint files safely, loading weights strictly (every key and shape), and
the content hash and origin of a model part's weights."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Literal, Mapping

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


def tensors_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of `state`'s tensors, in sorted name order:
    equal for equal weights however they are stored or where they came from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        digest.update(f"{name}\0{dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def check_stored_parts(stored: Mapping[str, Mapping[str, torch.Tensor]], records: Mapping[str, Mapping],
                       path: str | Path) -> None:
    """Check each part stored in a checkpoint's weights file `path` (a `weights.json` record with a
    `sha256` and no `source`) against that sha256 (`tensors_hash`): `ClapcurateError` naming the
    file and the part when the bytes changed since they were saved."""
    for part, record in records.items():
        if "source" in record or "sha256" not in record or part not in stored:
            continue
        digest = tensors_hash(stored[part])
        if digest != record["sha256"]:
            raise ClapcurateError(f"{path}: corrupt: the stored {part} weights hash to sha256 {digest[:16]}..., "
                                  f"weights.json records {record['sha256'][:16]}...; restore the file from a copy "
                                  "or train it again")


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a model part's weights came from, and their `tensors_hash`.

    `kind`: "pretrained", a text encoder's Hugging Face folder or name (`name` as configured,
    e.g. "minilm", `path` as resolved then); "checkpoint", a checkpoint folder of ours holding the
    part; "panns", a PANNs weights file loaded into the configured audio encoder, which keeps its
    own front-end (a teacher's `init_audio_encoder`).
    """

    kind: Literal["pretrained", "checkpoint", "panns"]
    path: str
    sha256: str
    name: str = ""

    @classmethod
    def of(cls, module: torch.nn.Module, kind: str, path: str | Path, name: str = "") -> "WeightsSource":
        """The source of `module`'s current weights (hashed now)."""
        return cls(kind=kind, path=str(path), sha256=tensors_hash(module.state_dict()), name=name)
