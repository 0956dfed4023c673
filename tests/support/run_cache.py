"""Work done once per test run and shared by every pytest-xdist worker.

Session fixtures run once per worker process; those that build something costly (the `fast`
distillation) or fill a cache (the embedding cache) keep it in a folder of the whole run
instead, so a second worker reuses what the first built rather than building it again.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's temporary folder, the same for every worker: under xdist each worker's base
    temp folder is a subfolder of the run's; without xdist it is the run's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """`<run dir>/name`, made by `build(path)` by the first worker to ask; the others wait for
    it under a file lock and reuse it. A build that failed leaves no mark, so the next asker
    tries again (and fails the same way, in its own test)."""
    root = run_dir(tmp_path_factory)
    target, done = root / name, root / f"{name}.built"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            build(target)
            done.touch()
    return target
