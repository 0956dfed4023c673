"""Registry fixtures: real SQLite files in tmp_path, the shared Redis (keys removed after)."""
from __future__ import annotations

from pathlib import Path

import pytest

from models_registry.redis_store import RedisRegistry
from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import on_backend, started


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def registry(request, tmp_path: Path):
    """A started registry of each backend (Redis on the shared server, under a unique prefix)."""
    reg = on_backend(request, tmp_path, SQLiteRegistry, lambda url, prefix: RedisRegistry(url, prefix=prefix))
    async with started(reg):
        yield reg
