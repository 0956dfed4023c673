"""benchmarks.services' CPU-time readings, which every CPU-per-request and CPU% figure rests on."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

from benchmarks.services import ProcessWatcher, cpu_seconds

# Spins until its own CPU clock has advanced by the asked milliseconds, once per stdin line.
SPINNER = """
import sys, time
for line in sys.stdin:
    start = time.process_time()
    while time.process_time() - start < float(line) / 1000:
        pass
    print("done", flush=True)
"""


@contextmanager
def spinner():
    """A child process that spins for the milliseconds given to `spin`, warmed up and idle."""
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)

    def spin(ms: int) -> None:
        child.stdin.write(f"{ms}\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"

    try:
        spin(1)
        yield child.pid, spin
    finally:
        child.kill()
        child.wait()


def test_cpu_seconds_resolves_a_burst_much_shorter_than_a_clock_tick():
    # /proc/PID/stat counts 10 ms ticks: a 3 ms burst read there as 0 or 10 ms, and a short
    # benchmark run printed 0.0 ms per request.
    spent = []
    with spinner() as (pid, spin):
        for _ in range(3):
            before = cpu_seconds(pid)
            spin(3)
            spent.append(cpu_seconds(pid) - before)
    assert all(0.003 <= s < 0.009 for s in spent), spent


def test_process_watcher_sees_every_burst_much_shorter_than_a_clock_tick():
    # The gateway benchmark's quick run (20 requests, about 10 ms of CPU) read 0% CPU when the
    # watcher summed /proc/PID/stat's 10 ms ticks.
    read = []
    with spinner() as (pid, spin):
        for _ in range(3):
            started = time.perf_counter()
            with ProcessWatcher(pid) as watcher:
                spin(3)
            # The watcher's own wall time lies inside ours, so this is at least the CPU it read.
            read.append(watcher.usage.cpu_percent / 100 * (time.perf_counter() - started))
    assert all(s >= 0.003 for s in read), read
