"""The embedded registry: one SQLite file, for a single gateway process.

WAL journal with `synchronous=FULL`: every write is one transaction, fsynced at commit, so a
crash (even of the machine) loses nothing already committed. The connection lives on one
worker thread, so calls are serialised there and the event loop never blocks on the disk.
The snapshot is refreshed by this process's own writes (and fully loaded at start), and reloaded
when another process commits to the file (`PRAGMA data_version`, looked at every `WATCH_S`): the
workers of one `uniroute serve` share the file. Replicas on several machines use the Redis registry.

`available` follows the operations themselves: a write that fails (the file locked by another
process past the busy timeout, a full disk) makes it False, and a write that succeeds makes it True
again. Meanwhile the watcher tries one small write per look, without waiting for the lock, so the
registry says it is back without anyone writing through it.
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import orjson

from models_registry.base import (
    ChangeCallback,
    ModelView,
    RegistryConflict,
    RegistryUnavailable,
    Snapshot,
    readable_models,
)
from models_registry.records import Answer, JobRecord, ModelRecord
from models_registry.sqlite_file import (
    WATCH_S,
    CommitWatch,
    watch_commits,
    write_transaction,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, revision INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, started_at REAL NOT NULL,
                                 data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs (model);
CREATE TABLE IF NOT EXISTS answers (model TEXT NOT NULL, repset_version TEXT NOT NULL, prompt_id TEXT NOT NULL,
                                    data TEXT NOT NULL, PRIMARY KEY (model, repset_version, prompt_id))
                                    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memos (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS memos_by_expiry ON memos (expires_at);
CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""


def _json(record) -> str:
    return orjson.dumps(record.to_dict()).decode()


class SQLiteRegistry:
    """`Registry` over one SQLite file (created with its parent directory if missing)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 5.0, watch_s: float = WATCH_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.watch_s = watch_s
        self._view = ModelView()
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._commits = CommitWatch()
        self._watcher: asyncio.Task | None = None
        self._fault: str | None = None  # what the last failed operation said, until a write succeeds

    @property
    def available(self) -> bool:
        return self._conn is not None and self._fault is None

    async def start(self) -> None:
        """Open (or create) the file and load every model into the snapshot."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uniroute-sqlite")
        try:
            self._conn = await self._in_thread(self._open)
        except RegistryUnavailable:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise
        self._view.replace_all(await self._in_thread(self._models_if_changed))
        self._watcher = asyncio.create_task(watch_commits(self._reload, "SQLite registry", self.watch_s),
                                            name="uniroute-sqlite-watch")

    async def _reload(self) -> None:
        """Take the model records another process committed (and, while writes fail, see whether
        the file takes one again)."""
        if self._fault is not None:
            with contextlib.suppress(RegistryUnavailable):  # said by `available` already
                await self._in_thread(self._probe)
        records = await self._in_thread(self._models_if_changed)
        if records is not None:
            # The connection's thread runs calls in order and their results resume here in that
            # order, so a reload never overtakes this process's own later write.
            self._view.replace_all(records)

    def _models_if_changed(self) -> dict[str, ModelRecord] | None:
        """Every model record, if another connection committed since the last look; else None."""
        conn = self._connection()
        if not self._commits.changed(conn):
            return None
        return readable_models(conn.execute("SELECT name, data FROM models").fetchall(), str(self.path))

    def _probe(self) -> None:
        """One small write, failing at once rather than after the busy timeout: the connection's
        thread serves the reads meanwhile, which a WAL file answers under another's write lock."""
        conn = self._connection()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            self._tx(lambda c: c.execute("INSERT OR REPLACE INTO write_probe (id, at) VALUES (1, ?)", (time.time(),)))
        finally:
            conn.execute(f"PRAGMA busy_timeout = {round(self.busy_timeout_s * 1000)}")

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are the explicit BEGIN IMMEDIATE ... COMMIT below.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        return conn

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._pool is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=True)
        self._pool = None

    async def _in_thread(self, fn: Callable[..., T], *args) -> T:
        """Run `fn` on the connection's thread; storage failures become RegistryUnavailable."""
        if self._pool is None:
            raise RegistryUnavailable(f"the SQLite registry {self.path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except (sqlite3.DatabaseError, OSError) as exc:  # locked past the busy timeout, disk full, not a database
            self._fault = str(exc)
            raise RegistryUnavailable(f"SQLite registry {self.path}: {exc}") from exc

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` inside one write transaction (on the connection's thread); once committed, the
        registry takes writes."""
        with write_transaction(self._connection()) as conn:
            result = fn(conn)
        self._fault = None
        return result

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RegistryUnavailable(f"the SQLite registry {self.path} is closed")
        return self._conn

    async def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        return await self._in_thread(lambda: self._connection().execute(sql, params).fetchall())

    # -- models ---------------------------------------------------------------------------

    async def list_models(self) -> list[ModelRecord]:
        rows = await self._read("SELECT name, data FROM models ORDER BY name")
        return list(readable_models(rows, str(self.path)).values())

    async def get_model(self, name: str) -> ModelRecord | None:
        rows = await self._read("SELECT data FROM models WHERE name = ?", (name,))
        return ModelRecord.from_dict(orjson.loads(rows[0][0])) if rows else None

    async def put_model(self, record: ModelRecord, expect_revision: int | None = None) -> ModelRecord:
        record.validate()
        stored = record.copy()
        stored.updated_at = time.time()
        stored.created_at = stored.created_at or stored.updated_at

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT revision FROM models WHERE name = ?", (stored.name,)).fetchone()
            if expect_revision is not None and (row is None or row[0] != expect_revision):
                raise RegistryConflict(f"model {stored.name!r} is no longer at revision {expect_revision}")
            stored.revision = (row[0] if row else 0) + 1
            conn.execute("INSERT OR REPLACE INTO models (name, revision, data) VALUES (?, ?, ?)",
                         (stored.name, stored.revision, _json(stored)))

        await self._in_thread(self._tx, write)
        record.revision, record.updated_at, record.created_at = stored.revision, stored.updated_at, stored.created_at
        self._view.put(stored)
        return record

    async def delete_model(self, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM models WHERE name = ?", (name,)).rowcount > 0

        deleted = await self._in_thread(self._tx, delete)
        self._view.remove(name)
        return deleted

    # -- jobs -----------------------------------------------------------------------------

    async def put_job(self, job: JobRecord) -> None:
        await self._in_thread(self._tx, lambda conn: conn.execute(
            "INSERT OR REPLACE INTO jobs (id, model, started_at, data) VALUES (?, ?, ?, ?)",
            (job.id, job.model, job.started_at, _json(job))))

    async def put_running_job(self, job: JobRecord) -> bool:
        cursor = await self._in_thread(self._tx, lambda conn: conn.execute(
            "UPDATE jobs SET data = ? WHERE id = ? AND json_extract(data, '$.state') = 'running' "
            "AND json_extract(data, '$.owner') IS ?", (_json(job), job.id, job.owner)))
        return cursor.rowcount == 1

    async def get_job(self, job_id: str) -> JobRecord | None:
        rows = await self._read("SELECT data FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.from_dict(orjson.loads(rows[0][0])) if rows else None

    async def list_jobs(self, model: str | None = None) -> list[JobRecord]:
        if model is None:
            rows = await self._read("SELECT data FROM jobs ORDER BY started_at, id")
        else:
            rows = await self._read("SELECT data FROM jobs WHERE model = ? ORDER BY started_at, id", (model,))
        return [JobRecord.from_dict(orjson.loads(d)) for (d,) in rows]

    # -- answers --------------------------------------------------------------------------

    async def record_answer(self, model: str, repset_version: str, answer: Answer) -> None:
        await self._in_thread(self._tx, lambda conn: conn.execute(
            "INSERT OR REPLACE INTO answers (model, repset_version, prompt_id, data) VALUES (?, ?, ?, ?)",
            (model, repset_version, answer.prompt_id, _json(answer))))

    async def answers(self, model: str, repset_version: str) -> dict[str, Answer]:
        rows = await self._read("SELECT prompt_id, data FROM answers WHERE model = ? AND repset_version = ?",
                                (model, repset_version))
        return {pid: Answer.from_dict(orjson.loads(d)) for pid, d in rows}

    async def clear_answers(self, model: str) -> None:
        await self._in_thread(self._tx, lambda conn: conn.execute("DELETE FROM answers WHERE model = ?", (model,)))

    # -- locks: a table, so processes sharing the file exclude each other too ------------

    async def acquire_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        def take(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = conn.execute("SELECT expires_at FROM locks WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] > now:
                return False
            conn.execute("INSERT OR REPLACE INTO locks (key, owner, expires_at) VALUES (?, ?, ?)",
                         (key, owner, now + ttl_s))
            return True

        return await self._in_thread(self._tx, take)

    async def refresh_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        def extend(conn: sqlite3.Connection) -> bool:
            now = time.time()
            return conn.execute("UPDATE locks SET expires_at = ? WHERE key = ? AND owner = ? AND expires_at > ?",
                                (now + ttl_s, key, owner, now)).rowcount > 0

        return await self._in_thread(self._tx, extend)

    async def release_lock(self, key: str, owner: str) -> bool:
        return await self._in_thread(self._tx, lambda conn: conn.execute(
            "DELETE FROM locks WHERE key = ? AND owner = ?", (key, owner)).rowcount > 0)

    # -- memos ----------------------------------------------------------------------------

    async def remember(self, key: str, value: str, ttl_s: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            # Expired memos go as new ones come (through the index), so the table holds about one
            # time-to-live's worth of them.
            conn.execute("DELETE FROM memos WHERE expires_at <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO memos (key, value, expires_at) VALUES (?, ?, ?)",
                         (key, value, now + ttl_s))

        await self._in_thread(self._tx, write)

    async def recall(self, key: str) -> str | None:
        # A plain read, not a write transaction: a WAL file serves it while another process holds
        # the write lock, so a Responses API follow-up still finds its model then.
        rows = await self._read("SELECT value FROM memos WHERE key = ? AND expires_at > ?", (key, time.time()))
        return str(rows[0][0]) if rows else None

    async def forget(self, key: str) -> None:
        await self._in_thread(self._tx, lambda conn: conn.execute("DELETE FROM memos WHERE key = ?", (key,)))

    # -- the in-memory view ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._view.snapshot()

    def on_change(self, callback: ChangeCallback) -> None:
        self._view.subscribe(callback)
