"""Which router state the gateways route on, and the migration to another one, in the registry.

Two JSON documents: the ACTIVE state (its folder, representative set and versions; absent
until a first switch, when the configured state is active) and the PENDING migration (the state
being prepared, with its progress). Every write publishes a change ("active" or "pending"), so
every replica hears of a switch at once: Redis pub/sub when several replicas share a Redis; with
the embedded SQLite registry, in-process callbacks, and for the other processes sharing the file
(the workers of `uniroute serve`) a counter per slot they look at every `WATCH_S`.

SQLite: tables `router_state (name TEXT PRIMARY KEY, data TEXT)` and `router_state_changes
(slot TEXT PRIMARY KEY, seq INTEGER)` (announcements) in the registry's file.
Redis, under the registry's prefix: `{p}state:active`, `{p}state:pending` (strings) and the
channel `{p}state-changes`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models_registry.base import Listeners, RegistryUnavailable
from models_registry.sqlite_file import (
    CommitWatch,
    SQLiteFile,
    watch_commits,
    write_transaction,
)

log = logging.getLogger("uniroute.registry")

Slot = Literal["active", "pending"]
StateCallback = Callable[[Slot], None]
SLOTS: tuple[Slot, ...] = ("active", "pending")


class StateStore(Protocol):
    """The active-state pointer and the pending migration; async methods may raise RegistryUnavailable."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, slot: Slot) -> dict | None:
        """The document in `slot`, or None."""
        ...

    async def put(self, slot: Slot, doc: dict, announce: bool = True) -> None:
        """Write `slot`; with `announce`, every replica's callbacks hear of it (progress
        updates are written without)."""
        ...

    async def delete(self, slot: Slot) -> None:
        """Empty `slot` (and announce it)."""
        ...

    def on_change(self, callback: StateCallback) -> None:
        """Call `callback(slot)` after an announced write here or on another replica."""
        ...


class _Callbacks:
    def __init__(self) -> None:
        self._listeners = Listeners("state")

    def on_change(self, callback: StateCallback) -> None:
        self._listeners.add(callback)

    def notify(self, slot: Slot) -> None:
        self._listeners.notify(slot)


class SQLiteStateStore(_Callbacks, SQLiteFile):
    """The state documents in the registry's SQLite file, for the gateway processes sharing it."""

    what = "state store"

    def __init__(self, path: str | Path) -> None:
        _Callbacks.__init__(self)
        SQLiteFile.__init__(self, path)
        self._commits = CommitWatch()
        self._seqs: dict[str, int] = {}  # the announcement counters as this process last saw them
        self._watcher: asyncio.Task | None = None

    def _init(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS router_state (name TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS router_state_changes (slot TEXT PRIMARY KEY, seq INTEGER NOT NULL)")

    async def start(self) -> None:
        await super().start()
        await self._run(self._announced_elsewhere)  # what was announced before this process started
        self._watcher = asyncio.create_task(watch_commits(self._look, self.what), name="uniroute-state-watch")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await super().close()

    async def _look(self) -> None:
        for slot in await self._run(self._announced_elsewhere):
            self.notify(slot)

    def _announced_elsewhere(self) -> list[Slot]:
        """The slots another process announced since the last look."""
        conn = self._db()
        if not self._commits.changed(conn):
            return []
        seqs = dict(conn.execute("SELECT slot, seq FROM router_state_changes").fetchall())
        changed = [slot for slot in SLOTS if slot in seqs and seqs[slot] != self._seqs.get(slot)]
        self._seqs.update(seqs)
        return changed

    def _write(self, slot: Slot, sql: str, params: tuple, announce: bool) -> None:
        """One write of `slot`, with its announcement in the same transaction."""
        with write_transaction(self._db()) as conn:
            conn.execute(sql, params)
            if announce:
                (seq,) = conn.execute("INSERT INTO router_state_changes (slot, seq) VALUES (?, 1) ON CONFLICT (slot) "
                                      "DO UPDATE SET seq = seq + 1 RETURNING seq", (slot,)).fetchone()
                self._seqs[slot] = seq  # this process hears of its own change by its callbacks

    async def get(self, slot: Slot) -> dict | None:
        rows = await self._run(lambda: self._db().execute("SELECT data FROM router_state WHERE name = ?",
                                                          (slot,)).fetchall())
        return orjson.loads(rows[0][0]) if rows else None

    async def put(self, slot: Slot, doc: dict, announce: bool = True) -> None:
        await self._run(self._write, slot, "INSERT OR REPLACE INTO router_state (name, data) VALUES (?, ?)",
                        (slot, orjson.dumps(doc).decode()), announce)
        if announce:
            self.notify(slot)

    async def delete(self, slot: Slot) -> None:
        await self._run(self._write, slot, "DELETE FROM router_state WHERE name = ?", (slot,), True)
        self.notify(slot)


class RedisStateStore(_Callbacks):
    """The state documents in Redis; a follower task hears other replicas' changes. After a lost
    connection it announces both slots, so listeners re-read what they may have missed."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 1.0) -> None:
        super().__init__()
        common = {"decode_responses": True, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        self._client = Redis.from_url(url, **common)
        self._subscriber = Redis.from_url(url, **common)
        self._keys = {slot: f"{prefix}state:{slot}" for slot in SLOTS}
        self._channel = f"{prefix}state-changes"
        self._follower: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._follower = asyncio.create_task(self._follow(), name="uniroute-state-changes")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 3.0)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        await self._client.aclose()
        await self._subscriber.aclose()

    async def _follow(self) -> None:
        backoff = 0.05
        first = True
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                if not first:
                    for slot in SLOTS:
                        self.notify(slot)
                first, backoff = False, 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["data"] in SLOTS:
                        self.notify(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("state changes: lost Redis: %s", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _call(self, command):
        try:
            return await command()
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"state store (Redis): {exc}") from exc

    async def get(self, slot: Slot) -> dict | None:
        doc = await self._call(lambda: self._client.get(self._keys[slot]))
        return None if doc is None else orjson.loads(doc)

    async def put(self, slot: Slot, doc: dict, announce: bool = True) -> None:
        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._keys[slot], orjson.dumps(doc).decode())
                if announce:
                    pipe.publish(self._channel, slot)
                await pipe.execute()

        await self._call(write)

    async def delete(self, slot: Slot) -> None:
        async def drop() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._keys[slot])
                pipe.publish(self._channel, slot)
                await pipe.execute()

        await self._call(drop)


def open_state_store(redis_url: str | None, sqlite_path: str | Path, prefix: str) -> StateStore:
    """The state store beside the registry: Redis when `redis_url` is set, else the SQLite file."""
    if redis_url:
        return RedisStateStore(redis_url, prefix)
    return SQLiteStateStore(sqlite_path)
