"""Pick the registry backend from configuration."""
from __future__ import annotations

from pathlib import Path

from models_registry.base import Registry
from models_registry.redis_store import DEFAULT_PREFIX, RedisRegistry, check_credentials
from models_registry.sqlite import SQLiteRegistry


def open_registry(redis_url: str | None, sqlite_path: str | Path, prefix: str = DEFAULT_PREFIX) -> Registry:
    """A Redis registry when `redis_url` is set (several replicas share it; keys under `prefix`),
    else the embedded SQLite file at `sqlite_path`. Call `await registry.start()` before use."""
    if redis_url:
        return RedisRegistry(redis_url, prefix=prefix)
    return SQLiteRegistry(sqlite_path)


async def check_registry(redis_url: str | None, sqlite_path: str | Path) -> None:
    """Whether a gateway can start on the configured registry: RegistryUnavailable says why not (a
    SQLite file that is no database, a directory, a folder it may not write; a Redis refusing the
    URL's credentials). A Redis that is away is no such error: the gateway waits for it."""
    if redis_url:
        await check_credentials(redis_url)
        return
    registry = SQLiteRegistry(sqlite_path)
    try:
        await registry.start()
    finally:
        await registry.close()
