"""Metrics under several workers, each a real process writing prometheus_client's multiprocess
files: one exposition sums the workers' counters, shows one value for a gauge every worker sets
alike, drops the progress series of profiling jobs no longer running, and forgets a dead
worker's gauges but not its counts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from app.runtime.metrics import Metrics
m = Metrics()
m.requests.labels("chat", "a", "200").inc(int(sys.argv[1]))
m.models_by_state.labels("ready").set(2)
m.cooling.set(int(sys.argv[1]) % 2)
m.profiling_done.labels(sys.argv[2]).set(5)
print(__import__("os").getpid())
"""
SCRAPE = """
import sys
from app.runtime.metrics import Metrics, exposition
sys.stdout.write(exposition(Metrics(), set(sys.argv[1:])).decode())
"""


def python(code: str, *args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout


def values(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_one_scrape_sums_the_workers_and_shows_one_value_for_shared_gauges(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = int(python(WORKER, "3", "done-job", env=env))
    python(WORKER, "4", "running-job", env=env)
    seen = values(python(SCRAPE, "running-job", env=env))
    assert seen["uniroute_requests_total", (("model", "a"), ("route", "chat"), ("status", "200"))] == 7
    assert seen["uniroute_models", (("state", "ready"),)] == 2
    assert seen["uniroute_models_cooling", ()] == 1  # the most any worker has cooling
    progress = {labels for name, labels in seen if name == "uniroute_profiling_prompts_done"}
    assert progress == {(("model", "running-job"),)}

    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(first, str(tmp_path))  # what the supervisor does when a worker exits
    after = values(python(SCRAPE, "running-job", env=env))
    assert after["uniroute_requests_total", (("model", "a"), ("route", "chat"), ("status", "200"))] == 7
    assert after["uniroute_models_cooling", ()] == 0
