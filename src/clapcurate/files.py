"""Writing outputs so that an interruption never leaves half of one: every file goes through a
partial file renamed into place, every folder through a partial folder swapped into place; a
reader sees the old complete output or the new complete output, never a mixture."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import zlib
from pathlib import Path
from typing import Callable

from .errors import ClapcurateError


def checksum(data: bytes | memoryview) -> str:
    """CRC-32 of `data`, 8 hex digits: recorded when a file is written and compared when it is read,
    it catches bytes changed on disk since (cheaply: the bytes are read anyway)."""
    return f"{zlib.crc32(data):08x}"


def check_checksum(path: str | os.PathLike, data: bytes | memoryview, recorded: str | None, what: str) -> None:
    """`ClapcurateError` naming `path` when `data` (its bytes) do not have the `recorded` checksum."""
    if recorded is not None and checksum(data) != recorded:
        raise ClapcurateError(f"{path}: corrupt: its bytes changed since it was written (checksum {checksum(data)}, "
                              f"recorded {recorded}); {what}")


FULL_DISK_FREE_BYTES = 16 * 2**20  # a failed write with less free space than this is taken for a full disk


def _disk_full(error: BaseException, path: Path) -> bool:
    """Whether `error`, raised while writing `path`, came from a full disk: said by its errno or its
    message (safetensors: "No space left on device (os error 28)"), or, for writers that say
    neither (torch.save: "unexpected pos ..."), by the free space left beside `path`."""
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error) or "os error 28" in str(error):
        return True
    folder = next((parent for parent in (path, *path.parents) if parent.is_dir()), None)
    return folder is not None and shutil.disk_usage(folder).free < FULL_DISK_FREE_BYTES


@contextlib.contextmanager
def naming_failed_writes(path: str | os.PathLike):
    """Errors of writing `path` name it: an `OSError` without a file name gets `path`, and a full
    disk reported in a library's own error type (safetensors, torch) becomes an `OSError`
    (ENOSPC) naming `path`; the command line prints either as one line."""
    path = Path(path)
    try:
        yield
    except OSError as exc:
        if exc.filename or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except Exception as exc:
        if not _disk_full(exc, path):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc


def write_atomically(path: str | os.PathLike, write: Callable[[object], None], mode: str = "w") -> Path:
    """Write `path` with `write(handle)` through a partial file renamed into place (an error names `path`)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with naming_failed_writes(path), open(partial, mode, encoding=None if "b" in mode else "utf-8") as handle:
            write(handle)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    return write_atomically(path, lambda handle: handle.write(text))


def create_text_atomically(path: str | os.PathLike, text: str) -> bool:
    """Create `path` holding `text` unless it exists; True when this call created it.

    The partial file is hard-linked into place, which fails when the name exists: of writers
    racing for one name exactly one creates it, whole, and the others leave it untouched.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: check, then rename (a narrow race)
            if path.exists():
                return False
            os.replace(partial, path)
        return True
    finally:
        partial.unlink(missing_ok=True)


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


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `path` if needed and make sure files can be written in it, before any work starts;
    `ClapcurateError` naming the folder otherwise (an existing file, /proc, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ClapcurateError(f"{path}: the {what} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ClapcurateError(f"{path}: cannot write the {what} ({exc.strerror or exc})") from exc
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Make sure `path` can be written (its folder is created if needed), before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise ClapcurateError(f"{path}: the {what} is a folder")
    check_output_folder(path.parent if str(path.parent) else Path("."), f"folder of the {what}")
    return path
