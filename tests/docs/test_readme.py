"""The README's examples run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """The first python block under the README section `heading`."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs_as_written_and_routes_with_a_budget(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_block("Python API"))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    first, second, third = run.stdout.strip().splitlines()
    assert first.split()[0] in {"big", "small"}
    model, cost_weight, met, expected_cost = second.split()
    assert model in {"big", "small"} and met == "True" and float(expected_cost) <= 0.002
    assert "'big'" in third and "'small'" in third
