"""benchmarks.services' CPU-time reading, which every CPU-per-request figure rests on."""
from __future__ import annotations

import subprocess
import sys

from benchmarks.services import cpu_seconds

# Spins until its own CPU clock has advanced by the asked milliseconds, once per stdin line.
SPINNER = """
import sys, time
for line in sys.stdin:
    start = time.process_time()
    while time.process_time() - start < float(line) / 1000:
        pass
    print("done", flush=True)
"""


def test_cpu_seconds_resolves_a_burst_much_shorter_than_a_clock_tick():
    # /proc/PID/stat counts 10 ms ticks: a 3 ms burst read there as 0 or 10 ms, and a short
    # benchmark run printed 0.0 ms per request.
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        child.stdin.write("1\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        spent = []
        for _ in range(3):
            before = cpu_seconds(child.pid)
            child.stdin.write("3\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            spent.append(cpu_seconds(child.pid) - before)
    finally:
        child.kill()
        child.wait()
    assert all(0.003 <= s < 0.009 for s in spent), spent
