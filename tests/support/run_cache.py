"""Work done once per test run and shared by every pytest-xdist worker.

Session fixtures run once per worker process; those that fill a cache (the embedding cache)
keep it in a folder of the whole run instead, so a second worker reuses what the first filled
rather than filling it again.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's temporary folder, the same for every worker: under xdist each worker's base
    temp folder is a subfolder of the run's; without xdist it is the run's."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
