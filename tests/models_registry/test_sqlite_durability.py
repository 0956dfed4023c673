"""The SQLite registry keeps every committed write through a crash, and refuses clearly when
its file cannot be used."""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from models_registry.base import RegistryUnavailable
from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import make_record, started, wait_for
from tests.models_registry.sqlite_writer import NAMES, K, answer, write_index

ROOT = Path(__file__).resolve().parents[2]


async def test_a_writer_killed_mid_write_loses_nothing_it_reported_committed(tmp_path):
    db = tmp_path / "registry.db"
    child = subprocess.Popen([sys.executable, "-m", "tests.models_registry.sqlite_writer", str(db)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    committed: list[int] = []
    try:
        for line in child.stdout:
            committed.append(int(line))
            if len(committed) == 60:
                break  # the child is already inside its next write
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert len(committed) == 60, f"the writer stopped early (exit {child.returncode})"

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    registry = SQLiteRegistry(db)
    await registry.start()
    try:
        stored = {r.name: r for r in await registry.list_models()}
        assert set(stored) == {f"model-{n}" for n in range(NAMES)}
        for name, record in stored.items():
            # whatever revision survived, its content is exactly the write that made it
            expected = make_record(name, k=K, seed=write_index(name, record.revision))
            assert record.profile == expected.profile
            last_reported = max(i for i in committed if f"model-{i % NAMES}" == name)
            assert write_index(name, record.revision) >= last_reported
        for i in committed:
            got = await registry.answers(f"model-{i % NAMES}", "v1")
            assert got[f"p{i}"] == answer(i)
        assert registry.snapshot() == stored
    finally:
        await registry.close()


async def test_a_path_that_is_a_directory_gives_registry_unavailable_naming_it(tmp_path):
    registry = SQLiteRegistry(tmp_path)  # a directory, not a database file
    with pytest.raises(RegistryUnavailable, match=str(tmp_path)):
        await registry.start()
    assert not registry.available


async def test_a_file_that_is_not_a_database_gives_registry_unavailable(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are not the tables you are looking for\n" * 100)
    with pytest.raises(RegistryUnavailable, match="not a database"):
        await SQLiteRegistry(bogus).start()


async def test_two_registries_on_one_file_exclude_each_other_with_locks(tmp_path):
    a, b = SQLiteRegistry(tmp_path / "r.db"), SQLiteRegistry(tmp_path / "r.db")
    await a.start()
    await b.start()
    try:
        assert await a.acquire_lock("job:1", "a", 30)
        assert not await b.acquire_lock("job:1", "b", 30)
        assert await a.release_lock("job:1", "a")
        assert await b.acquire_lock("job:1", "b", 30)
    finally:
        await a.close()
        await b.close()


async def test_the_parent_directory_is_created(tmp_path):
    registry = SQLiteRegistry(tmp_path / "deep" / "er" / "registry.db")
    await registry.start()
    await registry.put_model(make_record())
    await registry.close()
    assert (tmp_path / "deep" / "er" / "registry.db").is_file()


def spoil(db: Path, name: str) -> None:
    """Make model `name`'s stored record unreadable (a JSON object lacking its fields), as a
    hand edit or a damaged page would, through a connection of its own."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE models SET data = ? WHERE name = ?", (f'{{"name": "{name}"}}', name))


async def test_an_unreadable_model_record_is_skipped_saying_so_and_the_others_load_and_follow(tmp_path, caplog):
    # it failed the start with a TypeError traceback, and stopped the watch of other processes' changes
    db = tmp_path / "registry.db"
    async with started(SQLiteRegistry(db)) as (writer,):
        for name in ("a", "b", "c"):
            await writer.put_model(make_record(name))
    spoil(db, "a")
    async with started(SQLiteRegistry(db)) as (registry,):
        assert sorted(registry.snapshot()) == ["b", "c"]
        assert [r.name for r in await registry.list_models()] == ["b", "c"]
        assert "unreadable model record 'a'" in caplog.text
        # spoilt while it runs: the changes other processes commit still reach it
        spoil(db, "b")
        async with started(SQLiteRegistry(db)) as (other,):
            await other.put_model(make_record("d"))
        await wait_for(lambda: sorted(registry.snapshot()) == ["c", "d"], 30, "a later change reaching the snapshot")
