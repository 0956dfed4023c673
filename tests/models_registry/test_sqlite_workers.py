"""Processes sharing one SQLite registry file (the workers of a `uniroute serve`): what another
process commits reaches this one's snapshot and change callbacks, and this process's own
writes are never rolled back by a reload of the file."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import make_record, started
from tests.models_registry.sqlite_writer import NAMES, K, write_index

ROOT = Path(__file__).resolve().parents[2]


async def test_another_processes_writes_reach_the_snapshot_and_callbacks(tmp_path):
    db = tmp_path / "registry.db"
    async with started(SQLiteRegistry(db)) as (registry,):
        heard: list[str] = []
        registry.on_change(heard.append)
        child = subprocess.Popen([sys.executable, "-m", "tests.models_registry.sqlite_writer", str(db)],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            # Meanwhile this process writes too: a reload must never undo its own newer write.
            for i in range(40):
                mine = await registry.put_model(make_record("mine", k=K, seed=i))
                assert registry.snapshot()["mine"].revision == mine.revision
                await asyncio.sleep(0.02)
            committed = -1
            for line in child.stdout:  # the writer says which writes it committed
                committed = int(line)
                if committed >= 3 * NAMES:
                    break
        finally:
            child.kill()
            child.wait()
        await asyncio.sleep(0.6)  # a few looks at the file
        snapshot = registry.snapshot()
        assert set(snapshot) == {f"model-{n}" for n in range(NAMES)} | {"mine"}
        for name in (f"model-{n}" for n in range(NAMES)):
            assert write_index(name, snapshot[name].revision) >= committed - NAMES  # at least its last reported write
            assert snapshot[name] == await registry.get_model(name)
        assert {f"model-{n}" for n in range(NAMES)} <= set(heard)
        assert snapshot["mine"].revision == 40
