"""`make bench`'s collection of figures: `record` lines and the RESULTS.md section they become."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import record as bench_record  # noqa: E402
import suite  # noqa: E402


def test_record_writes_one_json_line_per_figure_only_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    monkeypatch.delenv(bench_record.RECORD_VARIABLE, raising=False)
    bench_record.record("search", 90.0, "GFLOP/s", baseline=100.0)
    assert not path.exists()
    monkeypatch.setenv(bench_record.RECORD_VARIABLE, str(path))
    bench_record.record("search", 90.0, "GFLOP/s", baseline=100.0, baseline_what="bare mm", target=">= 0.8",
                        threshold=0.8)
    bench_record.record("checkpoint", 3.2, "MB", target="<= 5 MB", higher_is_better=False, threshold=5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["what"] for row in rows] == ["search", "checkpoint"]
    assert rows[0]["baseline"] == 100.0 and rows[1]["baseline"] is None


@pytest.mark.parametrize("figure, baseline, higher, threshold, expected", [
    (90, 100, True, 0.8, "met"), (70, 100, True, 0.8, "missed"),      # a ratio at least
    (3.2, None, False, 5, "met"), (6.0, None, False, 5, "missed"),    # a figure at most
    (120, 100, False, 1.5, "met"), (160, 100, False, 1.5, "missed"),  # a ratio at most
    (1.0, None, True, None, ""),                                      # no target
])
def test_verdict_reads_the_ratio_or_the_figure_against_the_target(figure, baseline, higher, threshold, expected):
    row = {"figure": figure, "baseline": baseline, "higher_is_better": higher, "threshold": threshold}
    assert suite.verdict(row) == expected


def test_the_section_replaces_only_the_marked_part_of_the_results(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nIntro.\n\n## Older figures\n\nkept\n")
    rows = [{"what": "search", "figure": 90.0, "unit": "GFLOP/s", "baseline": 100.0, "baseline_what": "bare mm",
             "target": ">= 0.8", "higher_is_better": True, "threshold": 0.8}]
    first = suite.section({"curate_search": {"status": 0, "rows": rows}, "browse": {"status": 3, "rows": []}}, 60)
    suite.write_section(results, first)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n" + suite.BEGIN) and text.endswith("## Older figures\n\nkept\n")
    assert "| curate_search | search | 90 GFLOP/s | 100 GFLOP/s (bare mm) | 0.900 | >= 0.8 | met |" in text
    assert "| browse | failed (exit status 3" in text
    second = suite.section({"curate_search": {"status": 0, "rows": [dict(rows[0], figure=50.0)]}}, 60)
    suite.write_section(results, second)
    text = results.read_text()
    assert text.count(suite.BEGIN) == 1 and "0.500" in text and "0.900" not in text and "kept" in text
