"""One writer per output: a command holds a file lock (`filelock`) on the folder it writes (a
study's out_root, an embeddings folder, a curated folder, a fit's run folder) while it writes it.
A second run on the same folder is refused in one line naming the holder (pid, host, command),
or waits for it to finish when the command was given `--wait` (`waiting(True)`).

The lock is the operating system's (`flock`): it goes with its holder, however that process
ends, so a killed run never leaves a folder locked. Beside the lock file, `.lock.holder.json`
names the holder for the refusal's message. Within one process the locks are re-entrant (a study
holds its out_root while its stages lock their own folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import ClapcurateError
from .files import check_output_folder, write_text_atomically

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder.json"
_HELD: dict[Path, FileLock] = {}  # this process's locks by folder (re-entrant)
_WAIT = [False]


class OutputBusyError(ClapcurateError):
    """Another run is writing the output folder."""


def waiting(wait: bool) -> None:
    """Whether a busy output makes later `one_writer` calls wait for it (True) or refuse (False)."""
    _WAIT[0] = wait


def holder(folder: str | os.PathLike) -> str:
    """The run holding `folder`'s lock, in words (as its holder recorded it)."""
    try:
        record = json.loads((Path(folder) / HOLDER_FILE).read_text())
        return f"pid {record['pid']} on {record['host']}: {record['command']}"
    except (OSError, ValueError, KeyError):
        return "a run that has not named itself yet"


@contextlib.contextmanager
def one_writer(folder: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold the lock of `folder` (created, and checked writable, first) while the block runs;
    `OutputBusyError` naming the holder when another process holds it, unless `waiting(True)`."""
    folder = check_output_folder(folder, what)
    key = folder.resolve()
    lock = _HELD.get(key) or FileLock(folder / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not _WAIT[0]:
            raise OutputBusyError(f"{folder}: the {what} is being written by another run ({holder(folder)}); "
                                  "let it finish, or rerun with --wait to wait for it") from None
        print(f"waiting for {holder(folder)} to finish writing {folder}", file=sys.stderr, flush=True)
        lock.acquire()
    outermost = key not in _HELD
    _HELD[key] = lock
    try:
        if outermost:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_text_atomically(folder / HOLDER_FILE, json.dumps(record) + "\n")
        yield folder
    finally:
        if outermost:
            (folder / HOLDER_FILE).unlink(missing_ok=True)
            del _HELD[key]
        lock.release()
