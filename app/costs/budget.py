"""The online budget guard: keeps each window's spend near a target by raising the cost weight.

Spend is counted per scope (a client key's fingerprint when client keys are configured, else
`all`) and per window of `window_s` seconds aligned on the epoch, so replicas agree on windows.
Every answered request adds its cost (the upstream's token counts x the model's prices) and its
planned cost (the calibration curve's expected cost per request at the λ it was routed with).

Before a request is routed, the guard turns what is left of the target into a floor on λ:

    requests left  = rate x time left in the window, the rate measured over the last window_s
                     seconds (this window's requests plus the previous window's, prorated)
    allowed        = (target - spent) / requests left / (spent / planned)
    floor          = the λ the curve gives for a budget of `allowed` per request

`spent / planned` says how the real costs run against the curve's expectation (other prompt
lengths, another mix of clusters than the representative set's), so the curve is asked for what
the rest of the window can really afford. Once the target is reached the floor is the curve's
last λ (the cheapest routing). A request is routed with max(its own λ, floor): the guard raises
λ as the spend nears the target and lets it fall back to the request's own when there is room.

With `redis_url` the counts live in Redis (a hash per scope and window: HINCRBYFLOAT, expiry
after two windows), shared by every replica. Without, the worker processes of one `uniroute
serve` (workers > 1) share them in the registry's SQLite file (a row per scope and window); a
single process keeps them in memory. When the shared store is away the guard goes on from this
process's own counts and retries the store after a second; a request waits at most half a second
on it (a stalled store is away too). A store that cannot be opened at start (its file locked past
the busy timeout) is opened again in the background, every second and then less often, never on
a request's way.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.runtime.config import BudgetConfig
from app.runtime.metrics import Metrics
from models_registry.base import RegistryUnavailable
from models_registry.sqlite_file import SQLiteFile, write_transaction
from router_core.calibration import Calibration

log = logging.getLogger("uniroute.budget")

ALL = "all"
# How long the guard works from local counts after the shared store failed, before trying it again.
_SHARED_RETRY_S = 1.0
# How long a request waits on the shared store before going on from local counts: a stalled store
# must not hold answers back (a SQLite file another process holds locked waits out its 5 s busy
# timeout on every call, and the calls queue one by one behind it).
_SHARED_WAIT_S = 0.5
# The longest wait between two tries at opening a shared store that could not be opened.
_OPEN_RETRY_MAX_S = 30.0
# What a failing shared store raises.
_STORE_FAULTS = (RedisError, OSError, RegistryUnavailable, TimeoutError)


@dataclass
class Usage:
    """One scope's counts in one window."""

    spend: float = 0.0
    planned: float = 0.0
    requests: int = 0


class SpendStore(Protocol):
    """Where the counts live: this process, the workers' SQLite file, or Redis for every replica."""

    async def start(self) -> None: ...

    async def add(self, key: str, spend: float, planned: float, ttl_s: float) -> None: ...

    async def read(self, keys: list[str]) -> list[Usage]: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Counts in this process; a window's counts are dropped once they expire."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._counts: dict[str, tuple[Usage, float]] = {}
        self._clock = clock

    async def start(self) -> None:
        return None

    async def add(self, key: str, spend: float, planned: float, ttl_s: float) -> None:
        now = self._clock()
        for k in [k for k, (_, until) in self._counts.items() if until <= now]:
            del self._counts[k]
        usage, _ = self._counts.get(key, (Usage(), 0.0))
        usage.spend += spend
        usage.planned += planned
        usage.requests += 1
        self._counts[key] = (usage, now + ttl_s)

    async def read(self, keys: list[str]) -> list[Usage]:
        now = self._clock()
        out = []
        for k in keys:
            usage, until = self._counts.get(k, (Usage(), math.inf))
            out.append(Usage(usage.spend, usage.planned, usage.requests) if until > now else Usage())
        return out

    async def close(self) -> None:
        return None


class RedisStore:
    """Counts in Redis, one hash per scope and window, shared by the replicas."""

    def __init__(self, url: str, prefix: str, timeout_s: float = 0.25) -> None:
        self._redis = Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s)
        self._prefix = prefix + "budget:"

    async def start(self) -> None:
        return None

    async def add(self, key: str, spend: float, planned: float, ttl_s: float) -> None:
        k = self._prefix + key
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrbyfloat(k, "spend", spend)
        pipe.hincrbyfloat(k, "planned", planned)
        pipe.hincrby(k, "requests", 1)
        pipe.expire(k, max(1, math.ceil(ttl_s)))
        await pipe.execute()

    async def read(self, keys: list[str]) -> list[Usage]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._prefix + key, "spend", "planned", "requests")
        rows = await pipe.execute()
        return [Usage(float(s or 0.0), float(p or 0.0), int(n or 0)) for s, p, n in rows]

    async def close(self) -> None:
        await self._redis.aclose()


class SQLiteStore(SQLiteFile):
    """Counts in a SQLite file (the registry's), one row per scope and window, shared by the
    worker processes of one `uniroute serve`."""

    what = "budget store"

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path)
        self._clock = clock

    def _init(self, conn: sqlite3.Connection) -> None:
        # Counts, not records: a machine crash may lose the last second of them.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS budget_spend (key TEXT PRIMARY KEY, spend REAL NOT NULL, "
                     "planned REAL NOT NULL, requests INTEGER NOT NULL, expires_at REAL NOT NULL)")

    async def add(self, key: str, spend: float, planned: float, ttl_s: float) -> None:
        now = self._clock()

        def write() -> None:
            with write_transaction(self._db()) as conn:
                conn.execute("DELETE FROM budget_spend WHERE expires_at <= ?", (now,))
                conn.execute("INSERT INTO budget_spend (key, spend, planned, requests, expires_at) "
                             "VALUES (?, ?, ?, 1, ?) ON CONFLICT (key) DO UPDATE SET spend = spend + excluded.spend, "
                             "planned = planned + excluded.planned, requests = requests + 1, "
                             "expires_at = excluded.expires_at", (key, spend, planned, now + ttl_s))

        await self._run(write)

    async def read(self, keys: list[str]) -> list[Usage]:
        now = self._clock()
        marks = ",".join("?" * len(keys))
        rows = await self._run(lambda: self._db().execute(
            f"SELECT key, spend, planned, requests FROM budget_spend WHERE key IN ({marks}) AND expires_at > ?",
            (*keys, now)).fetchall())
        found = {key: Usage(spend, planned, requests) for key, spend, planned, requests in rows}
        return [found.get(key, Usage()) for key in keys]


@dataclass(frozen=True)
class GuardState:
    """A scope's window as the guard sees it, and the λ floor it sets."""

    scope: str
    window_start: float
    window_s: float
    target: float
    spent: float
    planned: float
    requests: int
    allowed_per_request: float | None  # None: nothing left, or no curve yet
    cost_weight: float

    def to_dict(self) -> dict:
        """For /admin/budget and /v1/route."""
        return {"scope": self.scope, "window_start": self.window_start, "window_s": self.window_s,
                "target": self.target, "spent": self.spent, "planned": self.planned,
                "requests": self.requests, "allowed_per_request": self.allowed_per_request,
                "cost_weight": self.cost_weight}


def key_scope(key: str | None) -> str:
    """The scope of a client key: a fingerprint, so the key itself never shows."""
    return ALL if key is None else "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def floor_for(curve: Calibration | None, target: float, spent: float, planned: float, requests_left: float
              ) -> tuple[float, float | None]:
    """(λ floor, allowed expected cost per request) for what is left of the target."""
    if curve is None:
        return 0.0, None
    remaining = target - spent
    if remaining <= 0:
        return float(curve.lambdas[-1]), None
    ratio = spent / planned if spent > 0 and planned > 0 else 1.0
    allowed = remaining / max(requests_left, 1.0) / ratio
    p, _ = curve.for_budget(allowed)
    return float(curve.lambdas[p]), allowed


def planned_cost(curve: Calibration | None, cost_weight: float) -> float | None:
    """The curve's expected cost per request at `cost_weight`: what the guard plans a routed
    request to cost (None without a curve)."""
    return None if curve is None else float(curve.cost[curve.piece(cost_weight)])


class BudgetGuard:
    """Spend per scope and window, and the λ floor that keeps it near the target."""

    def __init__(self, config: BudgetConfig, store: SpendStore, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if config.target is None:
            raise ValueError("the budget guard needs a target")
        self.target = config.target
        self.window_s = config.window_s
        self._store = store
        self._local = MemoryStore(clock)  # this process's own counts, for when the shared store is away
        self._shared = not isinstance(store, MemoryStore)
        self._shared_down_until = 0.0
        self._opener: asyncio.Task | None = None
        self._metrics = metrics
        self._clock = clock
        if metrics is not None:
            metrics.budget_target.set(self.target)

    def _keys(self, scope: str, now: float) -> tuple[str, str, float]:
        window = math.floor(now / self.window_s)
        return f"{scope}:{window}", f"{scope}:{window - 1}", window * self.window_s

    async def _read(self, keys: list[str], quiet: bool = False) -> list[Usage]:
        """The counts of `keys`: the shared store's, or this process's own while it is away.
        `quiet`: a fault of the shared store is raised, not taken for the store being away."""
        if self._shared and self._clock() >= self._shared_down_until:
            try:
                # asyncio.timeout, not wait_for: it makes no task for each request's read.
                async with asyncio.timeout(_SHARED_WAIT_S):
                    return await self._store.read(keys)
            except _STORE_FAULTS as exc:
                if quiet:
                    raise
                self._shared_away(exc)
        return await self._local.read(keys)

    def _shared_away(self, exc: Exception) -> None:
        if self._clock() >= self._shared_down_until:
            log.warning("budget guard: shared counts unavailable (%s); counting locally for now",
                        str(exc) or f"no answer within {_SHARED_WAIT_S} s")
        self._shared_down_until = self._clock() + _SHARED_RETRY_S

    async def state(self, scope: str, curve: Calibration | None, quiet: bool = False) -> GuardState:
        """The scope's window now, and the λ floor for its next request (`quiet`: as `_read`)."""
        now = self._clock()
        current, previous, start = self._keys(scope, now)
        cur, prev = await self._read([current, previous], quiet)
        elapsed, left = now - start, start + self.window_s - now
        if prev.requests:
            rate = (cur.requests + prev.requests * left / self.window_s) / self.window_s
        else:
            rate = cur.requests / elapsed if elapsed > 0 else 0.0
        floor, allowed = floor_for(curve, self.target, cur.spend, cur.planned, rate * left)
        if self._metrics is not None:
            metrics = self._metrics
            metrics.child(metrics.budget_spend, scope).set(cur.spend)
            metrics.child(metrics.budget_cost_weight, scope).set(floor)
        return GuardState(scope, start, self.window_s, self.target, cur.spend, cur.planned, cur.requests,
                          allowed, floor)

    async def show(self, scopes: list[str], curve: Calibration | None) -> None:
        """Set the gauges to the scopes' windows as they stand now, for a scrape: a request sets
        them before its answer is billed, and none comes when a window ends. A shared store that
        does not answer leaves them as they were; it is not taken for away, which would send the
        requests' counts to this process's own meanwhile."""
        with contextlib.suppress(*_STORE_FAULTS):
            for scope in scopes:
                await self.state(scope, curve, quiet=True)

    async def record(self, scope: str, spend: float, planned: float) -> None:
        """Count one answered request's real and planned cost."""
        key, _, _ = self._keys(scope, self._clock())
        ttl = 2 * self.window_s
        await self._local.add(key, spend, planned, ttl)
        if self._shared and self._clock() >= self._shared_down_until:
            try:
                async with asyncio.timeout(_SHARED_WAIT_S):
                    await self._store.add(key, spend, planned, ttl)
            except _STORE_FAULTS as exc:
                self._shared_away(exc)
        if self._metrics is not None:
            self._metrics.child(self._metrics.budget_spent, scope).inc(spend)

    async def start(self) -> None:
        """Open the shared store; while it cannot be opened the guard counts locally, and opens
        it in the background."""
        try:
            await self._store.start()
        except _STORE_FAULTS as exc:
            self._shared_away(exc)
            self._shared_down_until = math.inf  # until opened: the requests' reads would find it closed
            self._opener = asyncio.create_task(self._open_later(), name="uniroute-budget-open")

    async def _open_later(self) -> None:
        """Try the shared store again, waiting twice as long after each failure, until it opens."""
        wait = _SHARED_RETRY_S
        while True:
            await asyncio.sleep(wait)
            try:
                await self._store.start()
            except _STORE_FAULTS as exc:
                log.debug("budget guard: shared counts still cannot be opened: %s", exc)
                wait = min(2 * wait, _OPEN_RETRY_MAX_S)
                continue
            log.info("budget guard: shared counts opened; counting there again")
            self._shared_down_until = 0.0
            return

    async def close(self) -> None:
        if self._opener is not None:
            self._opener.cancel()
            await asyncio.gather(self._opener, return_exceptions=True)
        await self._store.close()


def open_guard(config: BudgetConfig, redis_url: str | None, redis_prefix: str, metrics: Metrics | None = None,
               sqlite_path: str | None = None) -> BudgetGuard | None:
    """The configured guard, or None when no target is set. Its counts live in Redis when
    `redis_url` is set, else in the SQLite file at `sqlite_path` when given (worker processes
    share it), else in this process."""
    if config.target is None:
        return None
    store: SpendStore
    if redis_url:
        store = RedisStore(redis_url, redis_prefix)
    elif sqlite_path is not None:
        store = SQLiteStore(sqlite_path)
    else:
        store = MemoryStore()
    return BudgetGuard(config, store, metrics)
