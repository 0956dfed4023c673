"""The state store on both backends: the active and pending documents, and their announcements
(on Redis, heard by another replica's store)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from models_registry.states import RedisStateStore, SQLiteStateStore
from tests.models_registry.helpers import started


async def heard(log: list, n: int) -> None:
    for _ in range(200):
        if len(log) >= n:
            return
        await asyncio.sleep(0.01)


@pytest.fixture(params=["sqlite", "sqlite-workers", pytest.param("redis", marks=pytest.mark.redis)])
async def stores(request, tmp_path: Path):
    """(writer, listener): two stores on one backend; on SQLite one process's store is both, or
    two stores on one file, as two workers of a `uniroute serve` have."""
    if request.param == "sqlite":
        async with started(SQLiteStateStore(tmp_path / "registry.db")) as (one,):
            yield one, one
        return
    if request.param == "sqlite-workers":
        async with started(SQLiteStateStore(tmp_path / "registry.db"),
                           SQLiteStateStore(tmp_path / "registry.db")) as pair:
            yield pair
        return
    url, prefix = request.getfixturevalue("shared_redis")
    async with started(RedisStateStore(url, prefix), RedisStateStore(url, prefix)) as pair:
        yield pair


async def test_documents_round_trip_and_writes_are_announced_to_listeners(stores):
    writer, listener = stores
    log: list[str] = []
    own: list[str] = []
    listener.on_change(log.append)
    if writer is not listener:
        writer.on_change(own.append)
    assert await writer.get("active") is None and await writer.get("pending") is None
    await writer.put("pending", {"id": "m1", "status": "loading"})
    await heard(log, 1)
    assert log == ["pending"] and await listener.get("pending") == {"id": "m1", "status": "loading"}
    await writer.put("pending", {"id": "m1", "status": "profiling"}, announce=False)  # progress: silent
    await writer.put("active", {"state_version": "abc"})
    await heard(log, 2)
    assert log == ["pending", "active"]
    assert (await listener.get("pending"))["status"] == "profiling"
    await writer.delete("pending")
    await heard(log, 3)
    assert log == ["pending", "active", "pending"] and await listener.get("pending") is None
    assert await listener.get("active") == {"state_version": "abc"}
    if writer is not listener:
        await asyncio.sleep(0.5)  # a few looks at the file: the writer hears its own writes once
        assert own == log
