"""Resumable stages: each finished stage leaves a JSON marker holding its result, its wall time
and the outputs it made; a second run returns the stored result instead of recomputing, when the
outputs are still there as they were made. A marker is created once, whole: when another process
finished the same stage meanwhile, its marker and result are kept.

A stage's outputs are the paths its result names inside the study folder (a checkpoint folder,
an embeddings folder, a curated manifest): the marker lists each one's files with their sizes
(hidden files, such as locks and partial files, aside). A marker whose outputs are missing, or
whose files are missing or of another size, proves nothing: the stage runs again and the console
says why. (The bytes themselves are checked where they are read: checkpoints against their
weights.json, embedding shards against their checksums.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..files import create_text_atomically


def _files(path: Path) -> dict[str, int]:
    """{file relative to `path` ("" for `path` itself): size in bytes} of an output, hidden files aside."""
    if path.is_file():
        return {"": path.stat().st_size}
    return {file.relative_to(path).as_posix(): file.stat().st_size for file in sorted(path.rglob("*"))
            if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)}


class StageRunner:
    """Run named stages once; keep their JSON-serialisable results, timings and outputs on disk."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.study = Path(root).resolve()
        self.root = Path(root) / "stages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timings: dict[str, float] = {}
        self.computed: list[str] = []

    def _marker(self, name: str) -> Path:
        return self.root / (name.replace("/", "__") + ".json")

    def _stored(self, name: str) -> Any:
        record = json.loads(self._marker(name).read_text())
        self.timings[name] = record["seconds"]
        return record["result"]

    def outputs(self, result: Any) -> dict[str, dict[str, int]]:
        """The outputs `result` names (every string in it that is an existing path inside the study
        folder), each with its files' sizes."""
        found: set[Path] = set()

        def visit(value):
            if isinstance(value, str) and value.startswith("/"):
                path = Path(value)
                if path.exists() and path.resolve().is_relative_to(self.study):
                    found.add(path)
            elif isinstance(value, dict):
                for item in value.values():
                    visit(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    visit(item)

        visit(result)
        return {str(path): _files(path) for path in sorted(found)}

    def _unproven(self, name: str) -> str | None:
        """Why the marker of `name` does not prove its outputs (None when it does)."""
        recorded = json.loads(self._marker(name).read_text()).get("outputs", {})
        for output, files in recorded.items():
            path = Path(output)
            if not path.exists():
                return f"its output {output} is missing"
            present = _files(path)
            for file, size in files.items():
                where = path / file if file else path
                if file not in present:
                    return f"{where} is missing"
                if present[file] != size:
                    return f"{where} has changed ({present[file]:,} bytes, {size:,} when it was made)"
        return None

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self._marker(name)
        if marker.is_file():
            why = self._unproven(name)
            if why is None:
                return self._stored(name)
            self.log(f"[stage] {name}: {why}; running it again")
            marker.unlink(missing_ok=True)
        self.log(f"[stage] {name} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        record = {"result": result, "seconds": seconds, "outputs": self.outputs(result)}
        if not create_text_atomically(marker, json.dumps(record, indent=1, default=str)):
            self.log(f"[stage] {name} was finished meanwhile by another process: its result is kept")
            return self._stored(name)
        self.timings[name] = seconds
        self.computed.append(name)
        self.log(f"[stage] {name} done in {seconds:.1f} s")
        return result
