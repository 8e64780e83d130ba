"""`make bench`: every benchmark, one after another, each in its own process;
their figures (each beside its baseline of the same process, see `record.py`) go into one table
that replaces the section between the markers of `benchmarks/RESULTS.md`. Prints each
benchmark's own output as it runs. Exit status 1 when a benchmark failed.

    python benchmarks/suite.py [--only NAME ...] [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from record import RECORD_VARIABLE

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"

# name: arguments of its script (the curation and the feature cache at the sizes of their targets,
# the others in quick forms; each script's --help gives more)
SUITE = {
    "train_step": ["train_step.py", "--steps", "30"],
    "curate_search": ["curate_search.py"],
    "embed_audio": ["embed_audio.py"],
    "long_clip": ["long_clip.py"],
    "feature_cache": ["feature_cache.py"],
    "student_fit": ["student_fit.py", "--fits", "3"],
    "browse": ["browse.py"],
    "integrity": ["integrity.py"],
    "cost_model": ["cost_model.py", "--repeats", "2"],
    "gpu": ["gpu.py"] if torch.cuda.is_available() else ["gpu.py", "--smoke"],
}


def machine() -> str:
    """The machine in one line: CPU cores, torch threads and version, and the GPU if there is one."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, {gpu}")


def verdict(row: dict) -> str:
    """Whether a figure meets its target: 'met', 'missed' or '' when it has none."""
    if row["threshold"] is None:
        return ""
    value = row["figure"] / row["baseline"] if row["baseline"] else row["figure"]
    met = value >= row["threshold"] if row["higher_is_better"] else value <= row["threshold"]
    return "met" if met else "missed"


def number(value: float) -> str:
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def table(results: dict[str, dict]) -> list[str]:
    lines = ["| benchmark | figure | value | baseline (same process) | ratio | target | |",
             "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        if result["status"] != 0:
            lines.append(f"| {name} | failed (exit status {result['status']}, see its output) | | | | | missed |")
        for row in result["rows"]:
            baseline = (f"{number(row['baseline'])} {row['unit']} ({row['baseline_what']})"
                        if row["baseline"] is not None else "")
            ratio = f"{row['figure'] / row['baseline']:.3f}" if row["baseline"] else ""
            lines.append(f"| {name} | {row['what']} | {number(row['figure'])} {row['unit']} | {baseline} | {ratio} "
                         f"| {row['target']} | {verdict(row)} |")
    return lines


def section(results: dict[str, dict], seconds: float) -> str:
    commands = "; ".join(f"`{' '.join(['python benchmarks/' + SUITE[name][0]] + SUITE[name][1:])}`" for name in results)
    return "\n".join([
        BEGIN,
        f"## Latest `make bench` ({datetime.date.today().isoformat()}, {seconds / 60:.1f} min)",
        "",
        f"Machine: {machine()}. Commands: {commands}.",
        "",
        *table(results),
        END,
    ])


def write_section(path: Path, text: str) -> None:
    """Replace the marked section of `path` (or put it after the first paragraph)."""
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        head, _, tail = old.partition("\n\n")
        new = f"{head}\n\n{text}\n\n{tail}" if tail else f"{head}\n\n{text}\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SUITE), help="run these benchmarks only")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="file whose marked section is rewritten")
    args = parser.parse_args()
    names = args.only or list(SUITE)
    results = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            record_file = Path(tmp) / f"{name}.jsonl"
            print(f"\n=== {name}: {' '.join(SUITE[name])}", flush=True)
            began = time.perf_counter()
            status = subprocess.call([sys.executable, str(HERE / SUITE[name][0]), *SUITE[name][1:]], cwd=HERE.parent,
                                     env={**os.environ, RECORD_VARIABLE: str(record_file)})
            rows = ([json.loads(line) for line in record_file.read_text().splitlines()]
                    if record_file.is_file() else [])
            results[name] = {"status": status, "rows": rows}
            print(f"=== {name}: {time.perf_counter() - began:.0f} s, exit status {status}", flush=True)
    text = section(results, time.perf_counter() - start)
    write_section(Path(args.results), text)
    print("\n" + text)
    if any(result["status"] != 0 for result in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
