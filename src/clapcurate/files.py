"""Writing outputs so that an interruption never leaves half of one: every file goes through a
partial file renamed into place, every folder through a partial folder swapped into place; a
reader sees the old complete output or the new complete output, never a mixture."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable


def write_atomically(path: str | os.PathLike, write: Callable[[object], None], mode: str = "w") -> Path:
    """Write `path` with `write(handle)` through a partial file renamed into place."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, mode, encoding=None if "b" in mode else "utf-8") as handle:
            write(handle)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda handle: handle.write(text))


def partial_folder(target: str | os.PathLike) -> Path:
    """A fresh, empty sibling folder to build `target` in (then `publish_folder`)."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def publish_folder(partial: Path, target: str | os.PathLike) -> Path:
    """Swap the finished `partial` folder into place as `target` (replacing an older one)."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
