"""Pick the registry backend from configuration."""
from __future__ import annotations

from pathlib import Path

from models_registry.base import Registry
from models_registry.redis_store import DEFAULT_PREFIX, RedisRegistry
from models_registry.sqlite import SQLiteRegistry


def open_registry(redis_url: str | None, sqlite_path: str | Path, prefix: str = DEFAULT_PREFIX) -> Registry:
    """A Redis registry when `redis_url` is set (several replicas share it; keys under `prefix`),
    else the embedded SQLite file at `sqlite_path`. Call `await registry.start()` before use."""
    if redis_url:
        return RedisRegistry(redis_url, prefix=prefix)
    return SQLiteRegistry(sqlite_path)


async def check_registry(redis_url: str | None, sqlite_path: str | Path) -> None:
    """Open the configured SQLite registry once and close it again: RegistryUnavailable says why
    it cannot be used (a file that is no database, a directory, a folder it may not write), before
    a gateway starts on it. A Redis registry is not checked: one that is away at start is waited for."""
    if redis_url:
        return
    registry = SQLiteRegistry(sqlite_path)
    try:
        await registry.start()
    finally:
        await registry.close()
