"""Captured prompts: a sample of the routing texts of routed requests, kept next to the registry.

Only the text the router embedded is kept (the tail of the system prompt and last user message,
`router_core.text.routing_text`), with the cluster it was routed in and when. Never a key, a
header, a model's answer or a whole request body. An item's id is a hash of its text, so the
same text sent again is stored once (its time refreshed). `add` enforces the limits on every
write: items older than the retention go, and past `max_prompts` the oldest go first.

SQLite: a table in the registry's file (its own connection and thread). Redis, under the
registry's key prefix:
  {p}capture:times   sorted set  id -> captured_at
  {p}capture:items   hash        id -> {"prompt", "cluster", "captured_at"} JSON
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models_registry.base import RegistryUnavailable
from models_registry.sqlite_file import SQLiteFile, write_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS captured (id TEXT PRIMARY KEY, captured_at REAL NOT NULL, cluster INTEGER NOT NULL,
                                     prompt TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS captured_by_time ON captured (captured_at);
"""

# Drops what is past the retention, then the oldest past the limit; both keys change together.
PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - #gone - tonumber(ARGV[2])
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], #gone, #gone + over - 1)) do table.insert(gone, id) end
end
for i = 1, #gone, 500 do
  local part = {unpack(gone, i, math.min(i + 499, #gone))}
  redis.call('ZREM', KEYS[1], unpack(part))
  redis.call('HDEL', KEYS[2], unpack(part))
end
return #gone
"""


def prompt_id(text: str) -> str:
    """The id of a captured text: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CapturedPrompt:
    """One captured routing text, the cluster it was routed in, and when (Unix seconds)."""

    id: str
    prompt: str
    cluster: int
    captured_at: float

    @classmethod
    def of(cls, text: str, cluster: int, captured_at: float) -> CapturedPrompt:
        return cls(prompt_id(text), text, int(cluster), float(captured_at))


@dataclass(frozen=True)
class CaptureStats:
    """How many prompts are kept, their time span and how many per cluster."""

    count: int
    oldest: float | None
    newest: float | None
    by_cluster: dict[int, int]

    def to_dict(self) -> dict:
        return {"count": self.count, "oldest": self.oldest, "newest": self.newest,
                "by_cluster": {str(k): v for k, v in sorted(self.by_cluster.items())}}


class CaptureStore(Protocol):
    """Where captured prompts live; every async method may raise RegistryUnavailable."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, item: CapturedPrompt, max_prompts: int, not_before: float) -> None:
        """Store `item` (replacing one with its id), then drop items captured before
        `not_before` and, past `max_prompts`, the oldest."""
        ...

    def batches(self, size: int = 500) -> AsyncIterator[list[CapturedPrompt]]:
        """Every item, oldest first, `size` at a time (what an export streams)."""
        ...

    async def stats(self) -> CaptureStats: ...

    async def clear(self) -> int:
        """Forget every captured prompt; how many there were."""
        ...


class SQLiteCaptureStore(SQLiteFile):
    """Captured prompts in the registry's SQLite file."""

    what = "capture store"

    def _init(self, conn: sqlite3.Connection) -> None:
        conn.executescript(SCHEMA)

    async def add(self, item: CapturedPrompt, max_prompts: int, not_before: float) -> None:
        def write() -> None:
            with write_transaction(self._db()) as conn:
                conn.execute("INSERT OR REPLACE INTO captured (id, captured_at, cluster, prompt) VALUES (?, ?, ?, ?)",
                             (item.id, item.captured_at, item.cluster, item.prompt))
                conn.execute("DELETE FROM captured WHERE captured_at < ?", (not_before,))
                conn.execute("DELETE FROM captured WHERE id IN (SELECT id FROM captured ORDER BY captured_at DESC "
                             "LIMIT -1 OFFSET ?)", (max_prompts,))

        await self._run(write)

    async def batches(self, size: int = 500) -> AsyncIterator[list[CapturedPrompt]]:
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            rows = await self._run(lambda after=after: self._db().execute(
                "SELECT id, prompt, cluster, captured_at FROM captured WHERE (captured_at, id) > (?, ?) "
                "ORDER BY captured_at, id LIMIT ?", (*after, size)).fetchall())
            if not rows:
                return
            yield [CapturedPrompt(i, p, c, t) for i, p, c, t in rows]
            after = (rows[-1][3], rows[-1][0])

    async def stats(self) -> CaptureStats:
        def read() -> CaptureStats:
            conn = self._db()
            count, oldest, newest = conn.execute("SELECT COUNT(*), MIN(captured_at), MAX(captured_at) "
                                                 "FROM captured").fetchone()
            clusters = dict(conn.execute("SELECT cluster, COUNT(*) FROM captured GROUP BY cluster").fetchall())
            return CaptureStats(count, oldest, newest, clusters)

        return await self._run(read)

    async def clear(self) -> int:
        return await self._run(lambda: self._db().execute("DELETE FROM captured").rowcount)


class RedisCaptureStore:
    """Captured prompts in Redis, shared by every replica."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 1.0) -> None:
        self._client = Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s)
        self._times = f"{prefix}capture:times"
        self._items = f"{prefix}capture:items"
        self._prune = self._client.register_script(PRUNE)

    async def start(self) -> None:
        """Nothing to open: the connection is made on first use."""

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, command):
        try:
            return await command()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"capture store (Redis): {exc}") from exc

    async def add(self, item: CapturedPrompt, max_prompts: int, not_before: float) -> None:
        doc = orjson.dumps({"prompt": item.prompt, "cluster": item.cluster, "captured_at": item.captured_at})

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zadd(self._times, {item.id: item.captured_at})
                pipe.hset(self._items, item.id, doc)
                await pipe.execute()
            await self._prune(keys=[self._times, self._items], args=[repr(not_before), max_prompts])

        await self._call(write)

    async def batches(self, size: int = 500) -> AsyncIterator[list[CapturedPrompt]]:
        start = 0
        while True:
            ids = await self._call(lambda start=start: self._client.zrange(self._times, start, start + size - 1))
            if not ids:
                return
            docs = await self._call(lambda ids=ids: self._client.hmget(self._items, ids))
            batch = []
            for pid, doc in zip(ids, docs):
                if doc is not None:  # pruned between the two reads
                    d = orjson.loads(doc)
                    batch.append(CapturedPrompt(pid, d["prompt"], int(d["cluster"]), float(d["captured_at"])))
            yield batch
            start += size

    async def stats(self) -> CaptureStats:
        async def read() -> CaptureStats:
            oldest = await self._client.zrange(self._times, 0, 0, withscores=True)
            newest = await self._client.zrange(self._times, -1, -1, withscores=True)
            clusters: dict[int, int] = {}
            async for _pid, doc in self._client.hscan_iter(self._items, count=1000):
                c = int(orjson.loads(doc)["cluster"])
                clusters[c] = clusters.get(c, 0) + 1
            return CaptureStats(sum(clusters.values()), oldest[0][1] if oldest else None,
                                newest[0][1] if newest else None, clusters)

        return await self._call(read)

    async def clear(self) -> int:
        async def drop() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zcard(self._times)
                pipe.delete(self._times, self._items)
                count, _ = await pipe.execute()
            return int(count)

        return await self._call(drop)


def open_capture_store(redis_url: str | None, sqlite_path: str | Path, prefix: str) -> CaptureStore:
    """The capture store beside the registry: Redis when `redis_url` is set, else the SQLite file."""
    if redis_url:
        return RedisCaptureStore(redis_url, prefix)
    return SQLiteCaptureStore(sqlite_path)
