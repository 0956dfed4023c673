"""The plumbing of an async store kept in the registry's SQLite file: one connection, used from
one worker thread so the event loop never waits on the disk, and faults reported as
RegistryUnavailable (the gateway answers 503 for a store that is away, never 500)."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from models_registry.base import RegistryUnavailable

log = logging.getLogger("uniroute.registry")

# How often a store looks for what other processes sharing its file (the other workers of
# `uniroute serve`) committed: a change made through one worker reaches the others this fast.
WATCH_S = 0.2


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on a connection opened with isolation_level=None: committed when the
    block ends, rolled back when the block or the COMMIT fails (a failed COMMIT leaves it open)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class CommitWatch:
    """Whether other connections committed to a SQLite file since the last look: `PRAGMA
    data_version` changes with every commit but the asking connection's own, and costs no read
    of the file's pages, so it can be asked often."""

    def __init__(self) -> None:
        self._seen: int | None = None

    def changed(self, conn: sqlite3.Connection) -> bool:
        """Whether another connection committed since the last call (True on the first)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        changed, self._seen = version != self._seen, version
        return changed


async def watch_commits(look: Callable[[], Awaitable[None]], what: str, interval_s: float = WATCH_S) -> None:
    """Call `look` every `interval_s` until cancelled; a file away for a while is logged once and
    looked at again."""
    away = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await look()
            away = False
        except RegistryUnavailable as exc:
            if not away:
                log.warning("cannot watch the %s for other processes' changes: %s", what, exc)
            away = True


class SQLiteFile:
    """A store on one SQLite file; subclasses create their tables in `_init` and name
    themselves in `what` (for error messages and the worker thread's name)."""

    what = "store"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Open (or create) the file: RegistryUnavailable when it cannot be, after which `start`
        may be called again."""
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"uniroute-{self.what.split()[0]}")
        try:
            self._conn = await self._run(self._open)
        except RegistryUnavailable:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        self._init(conn)
        return conn

    def _init(self, conn: sqlite3.Connection) -> None:
        """Create the store's tables (idempotent)."""
        raise NotImplementedError

    async def close(self) -> None:
        if self._pool is None:
            return
        if self._conn is not None:
            await self._run(self._conn.close)
        self._conn = None
        self._pool.shutdown(wait=True)
        self._pool = None

    async def _run(self, fn, *args):
        if self._pool is None:
            raise RegistryUnavailable(f"the {self.what} {self.path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise RegistryUnavailable(f"{self.what} {self.path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RegistryUnavailable(f"the {self.what} {self.path} is closed")
        return self._conn
