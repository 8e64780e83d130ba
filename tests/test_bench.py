"""The GPU benchmark's smoke run: every measurement of `benchmarks/gpu.py` runs end to end on the
CPU at tiny sizes, and its dated section joins a results file without touching the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu import write_results  # noqa: E402

CPU_SECTION = "# Benchmark results\n\nMeasured on the CPU.\n\n## HTS-AT tiny, CPU\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_the_smoke_run_measures_every_stage_and_appends_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(CPU_SECTION)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--results", str(results)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    text = results.read_text()
    assert text.startswith(CPU_SECTION.rstrip("\n"))
    section = text.split("## Smoke run: CPU")[1]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| (")]
    assert [row[0][2:5] for row in rows] == ["(a)", "(b)", "(c)", "(c)", "(d)"]
    assert all(float(row[3]) > 0 for row in rows)  # a ratio to a baseline of the same run
    assert "float32 GEMM" in rows[2][2] and "bf16 GEMM" in rows[3][2]
    assert "Every stage of the tiny study ran on cpu: yes" in section
    assert "pretrain_audio, student, teacher" in section


def test_a_rerun_replaces_its_own_section_only(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(CPU_SECTION)
    write_results(results, "GPU: H200, 2026-12-01", "| first |")
    write_results(results, "GPU: A100, 2026-12-01", "| other |")
    write_results(results, "GPU: H200, 2026-12-01", "| second |")
    text = results.read_text()
    assert text.startswith(CPU_SECTION.rstrip("\n"))
    assert "| first |" not in text and text.count("## GPU: H200") == 1 and "| other |" in text
    assert text.endswith("## GPU: H200, 2026-12-01\n\n| second |\n")
