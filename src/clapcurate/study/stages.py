"""Resumable stages: each finished stage leaves a JSON marker holding its result and wall
time; a second run returns the stored result instead of recomputing. A marker is created once,
whole: when another process finished the same stage meanwhile, its marker and result are kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..files import create_text_atomically


class StageRunner:
    """Run named stages once; keep their JSON-serialisable results and timings on disk."""

    def __init__(self, root: Path, log: Callable[[str], None] = print):
        self.root = Path(root) / "stages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timings: dict[str, float] = {}
        self.computed: list[str] = []

    def _marker(self, name: str) -> Path:
        return self.root / (name.replace("/", "__") + ".json")

    def done(self, name: str) -> bool:
        return self._marker(name).is_file()

    def _stored(self, name: str) -> Any:
        record = json.loads(self._marker(name).read_text())
        self.timings[name] = record["seconds"]
        return record["result"]

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self._marker(name)
        if marker.is_file():
            return self._stored(name)
        self.log(f"[stage] {name} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        if not create_text_atomically(marker, json.dumps({"result": result, "seconds": seconds}, indent=1,
                                                         default=str)):
            self.log(f"[stage] {name} was finished meanwhile by another process: its result is kept")
            return self._stored(name)
        self.timings[name] = seconds
        self.computed.append(name)
        self.log(f"[stage] {name} done in {seconds:.1f} s")
        return result
