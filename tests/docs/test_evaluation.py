"""docs/evaluation.md says what its commands measure."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from router_core.shipped import DEFAULT_STATE, state_path
from router_core.state import RouterState

ROOT = Path(__file__).resolve().parents[2]


def test_the_routing_decision_latency_names_the_state_its_command_times():
    # The section said "the shipped state (K = 10, d = 384)" for a command whose default state
    # had become `fast` (K = 12, d = 256): run as written, it timed another state.
    text = (ROOT / "docs" / "evaluation.md").read_text()
    section = text.split("## Routing-decision latency\n", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"`(python -m benchmarks\.routing_decision[^`]*)`", section).group(1)
    argv = shlex.split(command)
    state = argv[argv.index("--state") + 1] if "--state" in argv else DEFAULT_STATE
    k, d = map(int, re.search(r"K = (\d+), d = (\d+)", section).groups())
    loaded = RouterState.load(state_path(state))
    assert (loaded.k, loaded.dim) == (k, d)
