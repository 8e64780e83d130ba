"""Feature arrays on disk: append-only shard files, an SQLite index, positioned reads.

A store folder holds arrays [rows, width] of one dtype, each under a key (bytes, e.g. a file's
digest):
- `shard-*.bin`: arrays stored one after another, row-major, with nothing in between;
- `index.sqlite`: the tables `meta` (format, width, dtype), `shards` (id, file name, rows) and
  `entries` (key -> shard, first row, rows, CRC-32 of the array's bytes).

Writing (`FeatureStore.writer`) appends arrays to a hidden partial file. A shard is finished when
it holds `shard_bytes` bytes or `shard_arrays` arrays, or when the writer closes: the file is cut
to the arrays it recorded, renamed into place, and only then are its entries committed, in one
transaction. While it writes a partial file, the writer holds that file's lock (`filelock`, gone
with its process however it ends). A process killed while writing therefore leaves its finished
shards (reused by the next reader) and a partial file that no entry names and no process holds
(removed by the next writer); a shard file whose size is not the one its entries were committed
with (truncated, replaced) counts as absent, its arrays as missing. A read never sees part of an
array, and a read whose bytes do not have the CRC-32 recorded when they were written (bytes changed
on disk) is refused, naming the shard file. Several processes may write one store at once (DDP ranks, parallel runs): each writes its
own shard files, and an entry written twice keeps the later copy (the same values).

Reading (`locate`, then an item of what it returns) copies each array out of its shard file with
one positioned read (`os.preadv`) into a new array (a long array may be read in parts,
`StoredArrays.parts`, and written in parts, `StoreWriter.add_rows`): nothing of a shard stays in the process, the kernel's page
cache keeps the hot pages. (Memory maps were measured first: a read fault maps a whole page-cache
folio, 2 MiB on current Linux, and the process's resident memory then grows with the shards it
touched, see benchmarks/feature_cache.py.) The index is queried in SQLite (its own bounded page
cache) and never loaded whole; at most `MAX_OPEN_SHARDS` shard files are open at a time. Memory is
therefore flat in the number of stored arrays; what grows is only the caller's `StoredArrays`, 20
bytes per located array.
"""

from __future__ import annotations

import collections
import itertools
import os
import socket
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from filelock import FileLock, Timeout

from .errors import ClapcurateError

FORMAT = 2  # 2: entries hold a CRC-32
INDEX_FILE = "index.sqlite"
DEFAULT_SHARD_BYTES = 256 * 2**20
DEFAULT_SHARD_ARRAYS = 16384  # bounds the entries a writer holds before committing them
MAX_OPEN_SHARDS = 64
# SQLite's page cache of the index: its interior pages (~0.2 MiB for 10^6 entries) fit, the leaves
# a lookup needs come from the kernel's page cache
INDEX_CACHE_KIB = 512
_QUERY_KEYS = 500  # keys per SELECT ... IN (...)
_HOST = socket.gethostname().replace("-", "_").replace(".", "_")
_SHARD_NUMBERS = itertools.count()


def _lock_path(partial: Path) -> Path:
    """The lock its writer holds while writing the partial shard file `partial`."""
    return partial.with_name(f".lock{partial.name}")


class StoredArrays(Sequence):
    """Where arrays lie in a store: item i is array i, read on access (a new array each time),
    `KeyError` for one the store does not hold (`present` says which it holds)."""

    def __init__(self, store: "FeatureStore", shard: np.ndarray, offset: np.ndarray, rows: np.ndarray,
                 crc: np.ndarray):
        self.store = store
        # [N] int32 (-1: absent), int64, int32, uint32
        self.shard, self.offset, self.rows, self.crc = shard, offset, rows, crc

    @classmethod
    def absent(cls, store: "FeatureStore", n: int) -> "StoredArrays":
        return cls(store, np.full(n, -1, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int32),
                   np.zeros(n, np.uint32))

    @property
    def present(self) -> np.ndarray:
        """[N] bool: which arrays the store holds."""
        return self.shard >= 0

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, index: int) -> np.ndarray:
        (array,) = self.parts(index, max(int(self.rows[index]), 1))
        return array

    def parts(self, index: int, max_rows: int) -> Iterator[np.ndarray]:
        """Array `index` as its consecutive parts of at most `max_rows` rows, each read when it is
        asked for (a long array is never held whole); see `FeatureStore.read_parts`."""
        if self.shard[index] < 0:
            raise KeyError(f"array {index} is not in {self.store.folder}")
        return self.store.read_parts(int(self.shard[index]), int(self.offset[index]), int(self.rows[index]),
                                     int(self.crc[index]), max_rows)

    def take(self, indices) -> "StoredArrays":
        """The arrays at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return StoredArrays(self.store, self.shard[indices], self.offset[indices], self.rows[indices],
                            self.crc[indices])

    def fill(self, indices, other: "StoredArrays") -> None:
        """Set the arrays at `indices` to `other`'s (one each, in order)."""
        indices = np.asarray(indices, dtype=np.int64)
        self.shard[indices], self.offset[indices], self.rows[indices] = other.shard, other.offset, other.rows
        self.crc[indices] = other.crc


class FeatureStore:
    """Arrays [rows, `width`] of `dtype` under byte keys in the shard files of `folder` (see the
    module's docstring). The folder is created by the first writer."""

    def __init__(self, folder: str | os.PathLike, width: int, dtype, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 shard_arrays: int = DEFAULT_SHARD_ARRAYS):
        self.folder = Path(folder)
        self.width = int(width)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.width * self.dtype.itemsize
        self.shard_bytes, self.shard_arrays = shard_bytes, shard_arrays
        self._reset()

    def _reset(self) -> None:
        self._connection: sqlite3.Connection | None = None
        self._shards: dict[int, tuple[str, int]] = {}  # shard id -> (file name, rows) of complete shard files
        self._files: collections.OrderedDict[int, int] = collections.OrderedDict()  # shard id -> open descriptor

    def __getstate__(self) -> dict:  # DataLoader workers open the files themselves
        state = dict(self.__dict__)
        for name in ("_connection", "_files"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        shards = state.pop("_shards")
        self.__dict__.update(state)
        self._reset()
        self._shards = shards

    # ------------------------------------------------------------------ index
    def _index(self, create: bool) -> sqlite3.Connection | None:
        """The index connection (tables made and the settings checked on first use); None when
        the store does not exist and `create` is False."""
        if self._connection is None:
            path = self.folder / INDEX_FILE
            if not path.is_file() and not create:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=600)
            connection.execute(f"PRAGMA cache_size = -{INDEX_CACHE_KIB}")
            with connection:
                connection.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
                connection.execute("CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, name TEXT UNIQUE, "
                                   "rows INTEGER)")
                connection.execute("CREATE TABLE IF NOT EXISTS entries (key BLOB PRIMARY KEY, shard INTEGER, "
                                   "offset INTEGER, rows INTEGER, crc INTEGER) WITHOUT ROWID")
                settings = {"format": str(FORMAT), "width": str(self.width), "dtype": self.dtype.str}
                connection.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", settings.items())
            recorded = dict(connection.execute("SELECT name, value FROM meta"))
            if any(recorded.get(name) != value for name, value in settings.items()):
                connection.close()
                raise ClapcurateError(f"{path}: a feature store of other settings ({recorded}, not {settings}); "
                                      "use another cache folder or delete this one")
            self._connection = connection
        return self._connection

    def _refresh_shards(self) -> None:
        """Re-read the list of shards, keeping those whose file has the committed size."""
        connection = self._index(create=False)
        if connection is None:
            return
        for shard, name, rows in connection.execute("SELECT id, name, rows FROM shards"):
            try:
                complete = (self.folder / name).stat().st_size == rows * self.row_bytes
            except OSError:
                complete = False
            if complete:
                self._shards[shard] = (name, rows)
            else:
                self._shards.pop(shard, None)

    def locate(self, keys: Sequence[bytes | None]) -> StoredArrays:
        """Where the arrays of `keys` lie (None: a key that cannot be stored, always absent)."""
        found = StoredArrays.absent(self, len(keys))
        connection = self._index(create=False)
        if connection is None:
            return found
        refreshed = False
        for start in range(0, len(keys), _QUERY_KEYS):
            positions: dict[bytes, list[int]] = {}
            for i, key in enumerate(keys[start:start + _QUERY_KEYS], start):
                if key is not None:
                    positions.setdefault(key, []).append(i)
            if not positions:
                continue
            rows = connection.execute(f"SELECT key, shard, offset, rows, crc FROM entries WHERE key IN "
                                      f"({','.join('?' * len(positions))})", list(positions)).fetchall()
            if not refreshed and any(shard not in self._shards for _, shard, *_ in rows):
                self._refresh_shards()  # shards written since (by this or another process)
                refreshed = True
            for key, shard, offset, n_rows, crc in rows:
                if shard in self._shards:
                    where = positions[key]
                    found.shard[where], found.offset[where], found.rows[where] = shard, offset, n_rows
                    found.crc[where] = crc
        return found

    # ------------------------------------------------------------------ reading
    def read_parts(self, shard: int, offset: int, rows: int, crc: int, max_rows: int) -> Iterator[np.ndarray]:
        """The array [rows, width] at row `offset` of `shard` as consecutive new arrays of at most
        `max_rows` rows (one, empty, for an empty array), its bytes checked against the CRC-32
        `crc` recorded when it was written as they pass: the last part is refused
        (`ClapcurateError`, naming the shard file) when they do not match."""
        running = 0  # the CRC-32 of the parts read so far
        for start in range(0, max(rows, 1), max_rows):
            part = np.empty((min(max_rows, rows - start), self.width), self.dtype)
            if len(part) and os.preadv(self._file(shard), [part], (offset + start) * self.row_bytes) != part.nbytes:
                raise ClapcurateError(f"{self.shard_path(shard)}: shorter than its index says; "
                                      "delete the cache folder to rebuild it")
            running = zlib.crc32(part, running)
            if start + max_rows >= rows and running != crc:
                raise ClapcurateError(f"{self.shard_path(shard)}: corrupt: the array at row {offset} does not have "
                                      "the checksum recorded when it was written; delete the cache folder to rebuild it")
            yield part

    def shard_path(self, shard: int) -> Path:
        """The file of a shard `locate` returned."""
        if shard not in self._shards:
            self._refresh_shards()
        return self.folder / self._shards[shard][0]

    def _file(self, shard: int) -> int:
        """An open descriptor of the shard's file (the least recently read is closed past
        `MAX_OPEN_SHARDS`)."""
        if shard in self._files:
            self._files.move_to_end(shard)
            return self._files[shard]
        self._files[shard] = os.open(self.shard_path(shard), os.O_RDONLY)
        while len(self._files) > MAX_OPEN_SHARDS:
            os.close(self._files.popitem(last=False)[1])
        return self._files[shard]

    def close(self) -> None:
        """Close the open shard files and the index (a later call opens them again)."""
        while self._files:
            os.close(self._files.popitem()[1])
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __del__(self) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def writer(self) -> "StoreWriter":
        """A writer of new arrays; use it as a context manager (closing finishes its last shard)."""
        return StoreWriter(self)

    def _remove_abandoned_partials(self) -> None:
        """Delete the partial shard files whose lock no writer holds (its process is gone)."""
        for path in self.folder.glob(".shard-*.partial-*"):
            lock = FileLock(_lock_path(path))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being written
            try:
                path.unlink(missing_ok=True)
            finally:
                lock.release()
                _lock_path(path).unlink(missing_ok=True)

    def _commit_shard(self, name: str, rows: int, keys: list[bytes], offsets: list[int], lengths: list[int],
                      crcs: list[int]) -> None:
        connection = self._index(create=True)
        with connection:
            shard = connection.execute("INSERT INTO shards (name, rows) VALUES (?, ?)", (name, rows)).lastrowid
            connection.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",  # in key order: each
                                   sorted(zip(keys, itertools.repeat(shard), offsets, lengths, crcs)))  # page once
        self._shards[shard] = (name, rows)


class StoreWriter:
    """Appends arrays to new shards of a `FeatureStore` (see the module's docstring)."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self._handle = None
        store._index(create=True)
        store._remove_abandoned_partials()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_shard(self) -> None:
        self._name = f"shard-{time.time_ns():x}-{os.getpid()}-{next(_SHARD_NUMBERS)}.bin"
        self._partial = self.store.folder / f".{self._name}.partial-{_HOST}-{os.getpid()}"
        self._lock = FileLock(_lock_path(self._partial))
        self._lock.acquire()  # a new name: nobody else holds it
        self._handle = open(self._partial, "wb")
        self._entry: list | None = None  # [key, rows, CRC-32] of the entry being written in parts
        self._keys: list[bytes] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._crcs: list[int] = []
        self._rows = 0

    def add(self, key: bytes, array: np.ndarray) -> None:
        """Store `array` [rows, width] under `key`."""
        self.add_rows(key, array)
        self.end_entry()

    def add_rows(self, key: bytes, array: np.ndarray) -> None:
        """Append `array` [rows, width] to the array of `key` being written in parts (one key at
        a time): it is stored, its parts one after another, by `end_entry`, and dropped when the
        writer closes first (a clip that failed midway leaves nothing)."""
        array = np.ascontiguousarray(array, dtype=self.store.dtype)
        if array.ndim != 2 or array.shape[1] != self.store.width:
            raise ValueError(f"expected an array [rows, {self.store.width}], got shape {array.shape}")
        if self._handle is None:
            self._start_shard()
        if self._entry is None:
            self._entry = [bytes(key), 0, 0]
        elif self._entry[0] != key:
            raise ValueError("the array of another key is being written; end it first (end_entry)")
        self._handle.write(array.tobytes())
        self._entry[1] += len(array)
        self._entry[2] = zlib.crc32(array, self._entry[2])

    def end_entry(self) -> None:
        """Store the array being written in parts (`add_rows`); nothing when there is none."""
        if self._handle is None or self._entry is None:
            return
        (key, rows, crc), self._entry = self._entry, None
        self._keys.append(key)
        self._offsets.append(self._rows)
        self._lengths.append(rows)
        self._crcs.append(crc)
        self._rows += rows
        if (self._rows * self.store.row_bytes >= self.store.shard_bytes
                or len(self._keys) >= self.store.shard_arrays):
            self.finish_shard()

    def finish_shard(self) -> None:
        """Put the current shard in place and commit its entries (nothing when it is empty)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.truncate(self._rows * self.store.row_bytes)  # a write cut short holds no entry
            handle.close()
            if self._keys:
                os.replace(self._partial, self.store.folder / self._name)
                self.store._commit_shard(self._name, self._rows, self._keys, self._offsets, self._lengths,
                                          self._crcs)
        finally:
            handle.close()
            self._partial.unlink(missing_ok=True)
            self._lock.release()
            _lock_path(self._partial).unlink(missing_ok=True)

    def close(self) -> None:
        self.finish_shard()

