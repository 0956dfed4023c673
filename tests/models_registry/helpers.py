"""Helpers for the registry tests: sample records, polling, reopening."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from models_registry.records import ModelRecord
from models_registry.redis_store import RedisRegistry
from models_registry.sqlite import SQLiteRegistry
from router_core.pricing import Price
from router_core.profiles import Profile


def make_record(name: str = "meta/llama-2-70b-chat", k: int = 4, seed: int = 0) -> ModelRecord:
    """A ready record with a K-cluster profile whose numbers depend on `seed`."""
    record = ModelRecord.new(name=name, base_url="http://127.0.0.1:9/v1", upstream_model=name,
                             api_key_env="UPSTREAM_KEY", cost=Price(0.5, 1.5, 0.0001))
    record.profile = Profile(errors=[((seed * 31 + j * 7) % 97) / 97 for j in range(k)],
                             counts=[float(seed + j) + 0.25 for j in range(k)], accuracy=0.61 + seed * 1e-4,
                             n_prompts=400, avg_output_tokens=3.5, repset_version="abc123def456",
                             state_version="0123456789ab")
    record.state = "ready"
    record.profiled_at = 1_700_000_000.5 + seed
    return record


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `predicate` every 10 ms; the seconds it took, or fail naming `what`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def reopen(reg: SQLiteRegistry | RedisRegistry) -> SQLiteRegistry | RedisRegistry:
    """A second registry (not started) on the same storage as `reg`."""
    if isinstance(reg, SQLiteRegistry):
        return SQLiteRegistry(reg.path)
    return RedisRegistry(reg.url, prefix=reg.prefix)


@contextlib.asynccontextmanager
async def started(*stores) -> AsyncIterator[tuple]:
    """The stores (registries, capture or state stores), started, and closed after the block."""
    for store in stores:
        await store.start()
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


def on_backend(request, tmp_path, sqlite: Callable, redis: Callable):
    """A store of the test's backend parameter: `sqlite(path)` on a fresh file, or `redis(url,
    prefix)` on the shared server under the test's own prefix."""
    if request.param == "sqlite":
        return sqlite(tmp_path / "registry.db")
    return redis(*request.getfixturevalue("shared_redis"))
