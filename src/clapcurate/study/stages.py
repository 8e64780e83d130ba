"""Resumable stages: each finished stage leaves a JSON marker holding its result and wall
time; a second run returns the stored result instead of recomputing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from ..files import write_text_atomically


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

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self._marker(name)
        if marker.is_file():
            record = json.loads(marker.read_text())
            self.timings[name] = record["seconds"]
            return record["result"]
        self.log(f"[stage] {name} ...")
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        write_text_atomically(marker, json.dumps({"result": result, "seconds": seconds}, indent=1, default=str))
        self.timings[name] = seconds
        self.computed.append(name)
        self.log(f"[stage] {name} done in {seconds:.1f} s")
        return result
