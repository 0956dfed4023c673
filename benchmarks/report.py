"""Reporting benchmark results: the machine they were measured on, markdown tables, and
`docs/benchmarks.md`, where each benchmark owns one section it rewrites on `--write-docs`.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.services import ROOT

DOCS_PATH = ROOT / "docs" / "benchmarks.md"
DOCS_HEADER = """# Benchmarks

Figures measured on this project's machine by the benchmarks under `benchmarks/`; each section
says which command wrote it, when, and on what machine. Run them on a quiet machine: the load
generator, the upstream stub and the gateway share its cores.
"""


def machine() -> dict:
    """The machine a figure was measured on: cores, CPU model, Python, the date (UTC), and the
    1-minute load average (call it before the run starts: it shows what else was running)."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"nproc": usable, "cpu_count": os.cpu_count(), "cpu_model": cpu_model,
            "python": platform.python_version(), "load_average_1m": os.getloadavg()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def machine_line(m: dict) -> str:
    """One sentence naming the machine, for the docs."""
    return (f"Machine: {m['nproc']} cores (`nproc`; {m['cpu_count']} CPUs seen), CPU model "
            f"\"{m['cpu_model']}\" (/proc/cpuinfo), Python {m['python']}; measured {m['date']}, "
            f"load average {m['load_average_1m']:.1f} at the start.")


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table cell; NaN and None (not measured) show as a dash, infinity (beyond a
    histogram's top bucket) as "off scale"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == float("inf"):
        return "off scale"
    return f"{value:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_docs_section(key: str, markdown: str, path: Path = DOCS_PATH) -> None:
    """Put `markdown` into `path` between the markers of section `key`, replacing what was there
    (the section is appended when new; the file is created when absent)."""
    begin, end = f"<!-- BEGIN {key} (written by the benchmark; edits here are overwritten) -->", f"<!-- END {key} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else DOCS_HEADER
    pattern = re.compile(re.escape(f"<!-- BEGIN {key} ") + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def json_safe(value: object) -> object:
    """`value` with every non-finite float as null (JSON has no NaN or infinity): a figure that
    could not be measured, or one beyond a histogram's top bucket."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def emit_json(result: dict, target: str) -> None:
    """Write `result` as JSON to a file, or to stdout as exactly one object for `-`."""
    text = json.dumps(json_safe(result), indent=None if target == "-" else 2, allow_nan=False)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        Path(target).write_text(text + "\n")


def publish(result: dict, module: str, argv: list[str] | None, json_target: str | None,
            text: Callable[[dict], str], docs: tuple[str, Callable[[dict], str]] | None) -> None:
    """Finish a benchmark run: record its command line, write its JSON (`--json`), print its table
    unless the JSON went to stdout, and rewrite its section of docs/benchmarks.md when `docs` =
    (section key, markdown of the result) is given (`--write-docs`)."""
    result["command"] = shlex.join(["python", "-m", f"benchmarks.{module}", *(sys.argv[1:] if argv is None else argv)])
    if json_target:
        emit_json(result, json_target)
    if json_target != "-":
        print(text(result))
    if docs is not None:
        key, markdown = docs
        write_docs_section(key, markdown(result))
        print(f"wrote {DOCS_PATH}", file=sys.stderr)
