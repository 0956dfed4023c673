"""docs/benchmarks.md sections and the JSON the benchmarks print."""
from __future__ import annotations

import io
import json
import math

from benchmarks import report


def test_a_benchmark_rewrites_its_own_docs_section_and_leaves_the_others(tmp_path):
    path = tmp_path / "benchmarks.md"
    report.write_docs_section("a", "first A", path)
    report.write_docs_section("b", "only B", path)
    report.write_docs_section("a", "second A", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.count("<!-- BEGIN a ") == 1 and text.index("second A") < text.index("only B")


def test_json_on_stdout_is_one_object_with_unmeasurable_figures_as_null(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    report.emit_json({"p50": math.nan, "p99": math.inf, "cases": [{"rps": 1.5}]}, "-")
    assert json.loads(out.getvalue()) == {"p50": None, "p99": None, "cases": [{"rps": 1.5}]}
