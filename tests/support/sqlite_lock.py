"""Another process holding a SQLite file's write lock, as an operator's `sqlite3` shell in the
middle of `BEGIN EXCLUSIVE` does: every write to the file waits for it (up to its busy timeout),
while reads of a WAL database go on."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The same in Python, for a machine without the sqlite3 shell.
_PYTHON_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextlib.contextmanager
def write_lock_held(path: str | Path) -> Iterator[None]:
    """Another process holds `path`'s write lock while the block runs (taken before it starts)."""
    if shutil.which("sqlite3"):
        args = ["sqlite3", str(path)]
        # Waiting its turn (the gateway may be writing), and saying "locked" only once it holds it.
        script = ".timeout 30000\n.bail on\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n"
    else:
        args, script = [sys.executable, "-c", _PYTHON_HOLDER, str(path)], ""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(script)
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "locked":
            pytest.fail(f"could not lock {path}")
        yield
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the shell ends, rolling its transaction back
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
