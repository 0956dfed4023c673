"""The registry contract both backends keep, and the in-memory view of models they share.

The gateway routes from `snapshot()`, a synchronous in-memory copy of every model record: it
answers even while the backend is away, so routing never waits on storage. Writes go to the
backend and raise `RegistryUnavailable` when it is away (the gateway answers 503).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import orjson

from models_registry.records import Answer, JobRecord, ModelRecord

log = logging.getLogger("uniroute.registry")

ChangeCallback = Callable[[str], None]


def readable_models(docs: Iterable[tuple[str, str | bytes]], where: str) -> dict[str, ModelRecord]:
    """The model records of (name, JSON document) pairs by name; one that cannot be read (spoilt
    on disk, or written by hand) is logged and skipped: it must not hide the others, nor stop a
    gateway from starting or from following the other processes' changes."""
    records = {}
    for name, doc in docs:
        try:
            records[name] = ModelRecord.from_dict(orjson.loads(doc))
        except (ValueError, TypeError) as exc:
            log.error("skipping unreadable model record %r in %s: %s", name, where, exc)
    return records


class RegistryUnavailable(RuntimeError):
    """The backend cannot be reached (or is not started). The operation most likely did not
    happen; after a timeout it may have (writes are upserts, safe to repeat)."""


class RegistryConflict(RuntimeError):
    """A conditional model write (`expect_revision`) found the stored record changed or gone
    since it was read: nothing was written."""


@runtime_checkable
class Registry(Protocol):
    """Registered models, profiling jobs, graded answers, job locks and short-lived memos.

    Every async method may raise `RegistryUnavailable`. `put_model` validates the record
    (RegistryValidationError) before it writes.
    """

    @property
    def available(self) -> bool:
        """Whether the backend is reachable now (writes are expected to succeed)."""
        ...

    async def start(self) -> None:
        """Open the backend and load the snapshot. A Redis registry that cannot connect yet
        starts anyway (empty snapshot, `available` False) and keeps retrying in the background."""
        ...

    async def close(self) -> None:
        """Stop background work and release the backend."""
        ...

    async def list_models(self) -> list[ModelRecord]:
        """Every model record, read from the backend, sorted by name."""
        ...

    async def get_model(self, name: str) -> ModelRecord | None:
        """One model record from the backend, or None."""
        ...

    async def put_model(self, record: ModelRecord, expect_revision: int | None = None) -> ModelRecord:
        """Insert or replace a record. Sets `record.revision` (above any revision stored for that
        name: on Redis the count also goes on across a delete), `record.updated_at` (and
        `created_at` if unset) on the object passed in, and returns it. With `expect_revision`,
        only replaces a stored record still at that revision (RegistryConflict otherwise, a
        record deleted meanwhile included): a read-modify-write loses no other write."""
        ...

    async def delete_model(self, name: str) -> bool:
        """Remove a model record; False when there was none. Its jobs and answers stay."""
        ...

    async def put_job(self, job: JobRecord) -> None:
        """Insert or replace a job record."""
        ...

    async def put_running_job(self, job: JobRecord) -> bool:
        """Replace a job record only while the stored one is `running` under `job.owner`; whether
        it was written. The process running a job writes its progress so: a pause or cancel
        written by another process (worker or replica) is never overwritten, and tells the runner
        to stop."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None:
        """One job, or None."""
        ...

    async def list_jobs(self, model: str | None = None) -> list[JobRecord]:
        """Jobs (of one model, or all), oldest first."""
        ...

    async def record_answer(self, model: str, repset_version: str, answer: Answer) -> None:
        """Store one graded answer as it arrives; a second answer to the same prompt replaces
        the first. A restarted job asks only the prompts `answers()` lacks."""
        ...

    async def answers(self, model: str, repset_version: str) -> dict[str, Answer]:
        """Graded answers of `model` on representative set `repset_version`, by prompt id."""
        ...

    async def clear_answers(self, model: str) -> None:
        """Forget every graded answer of `model` (all representative set versions)."""
        ...

    async def acquire_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take `key` for `owner` for `ttl_s` seconds; False while anyone (even `owner`) holds it."""
        ...

    async def refresh_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        """Extend `owner`'s hold on `key` to `ttl_s` from now; False if `owner` no longer holds it."""
        ...

    async def release_lock(self, key: str, owner: str) -> bool:
        """Let go of `key` if `owner` holds it; False otherwise (another owner's lock stays)."""
        ...

    async def remember(self, key: str, value: str, ttl_s: float) -> None:
        """Keep `value` under `key` for `ttl_s` seconds, for every gateway on this registry."""
        ...

    async def recall(self, key: str) -> str | None:
        """What `remember` keeps under `key`; None when nothing is, or it expired."""
        ...

    async def forget(self, key: str) -> None:
        """Drop what `remember` keeps under `key`, for every gateway (nothing there: nothing to do)."""
        ...

    def snapshot(self) -> Snapshot:
        """Every model record by name, from memory (a read-only Mapping whose reads are copies);
        never blocks, never raises, answers while the backend is away."""
        ...

    def on_change(self, callback: ChangeCallback) -> None:
        """Call `callback(name)` after a model record changes or goes, here or on another replica.
        Job and answer writes do not call it."""
        ...


class Snapshot(Mapping[str, ModelRecord]):
    """A read-only view of the model records at one moment. Reading a record gives a fresh copy,
    so a caller may edit it freely; nothing changes until it is written back with put_model.
    Building one costs nothing: only the records read are copied."""

    __slots__ = ("_records",)

    def __init__(self, records: dict[str, ModelRecord]) -> None:
        self._records = records

    def __getitem__(self, name: str) -> ModelRecord:
        return self._records[name].copy()

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def peek(self, name: str) -> ModelRecord:
        """The record itself, not a copy, for a reader that never changes it: the request path
        reads a routed request's model and fallbacks on every request, and copying them cost more
        than the routing decision's arithmetic."""
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Snapshot({sorted(self._records)})"


class ModelView:
    """The in-memory model records behind `snapshot()`, and the change callbacks.

    The records dict is replaced, never changed in place, so a Snapshot handed out earlier
    keeps showing its moment; the records in it are private copies, never changed either.
    """

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._listeners = Listeners("registry")

    def snapshot(self) -> Snapshot:
        return Snapshot(self._records)

    def put(self, record: ModelRecord) -> None:
        self._records = {**self._records, record.name: record.copy()}
        self._notify(record.name)

    def remove(self, name: str) -> None:
        if name in self._records:
            self._records = {n: r for n, r in self._records.items() if n != name}
            self._notify(name)

    def replace_all(self, records: dict[str, ModelRecord]) -> None:
        """Take a full reload; callbacks hear of every name added, changed or gone."""
        old = self._records
        self._records = {name: record.copy() for name, record in records.items()}
        changed = {n for n in old.keys() | records.keys()
                   if n not in old or n not in records or old[n].to_dict() != records[n].to_dict()}
        for name in sorted(changed):
            self._notify(name)

    def subscribe(self, callback: ChangeCallback) -> None:
        self._listeners.add(callback)

    def _notify(self, name: str) -> None:
        self._listeners.notify(name)


class Listeners:
    """Callbacks told the name of what changed, after the change is committed: a listener's bug
    is logged, never raised into the write that told it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._callbacks: list[Callable[[str], None]] = []

    def add(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def notify(self, name: str) -> None:
        for callback in self._callbacks:
            try:
                callback(name)
            except Exception:  # a listener's bug must not undo a committed write
                log.exception("%s change callback failed for %r", self.what, name)


async def update_model(registry: Registry, name: str, change: Callable[[ModelRecord], None],
                       attempts: int = 5) -> ModelRecord | None:
    """Apply `change` to the stored record of `name` and write it back, unless another write
    (another request, worker or replica) changed or deleted it since it was read: then read it
    again and apply `change` to that, up to `attempts` times (RegistryConflict after). The
    record written, or None when there is no such model. What `change` raises propagates, and
    nothing is written."""
    for _ in range(attempts):
        record = await registry.get_model(name)
        if record is None:
            return None
        change(record)
        try:
            return await registry.put_model(record, expect_revision=record.revision)
        except RegistryConflict:
            continue
    raise RegistryConflict(f"model {name!r} was changed by other writes {attempts} times while this one was made")


# How long a lock held by a process lasts unless refreshed, by default (the gateway's is its
# `lock_ttl_s` setting): a process that dies leaves its locks (a profiling job's, a migration's)
# to expire, and another replica takes the work over.
LOCK_TTL_S = 30.0


async def hold_lock(registry: Registry, name: str, owner: str, ttl_s: float = LOCK_TTL_S) -> None:
    """Keep a held lock alive, refreshing it every third of its TTL, until cancelled. A registry
    that is away is logged and tried again: if this process dies meanwhile, the lock expires."""
    while True:
        await asyncio.sleep(ttl_s / 3)
        try:
            await registry.refresh_lock(name, owner, ttl_s)
        except RegistryUnavailable:
            log.warning("could not refresh %s: registry unavailable", name)


@contextlib.asynccontextmanager
async def turn(registry: Registry, name: str, owner: str, ttl_s: float = LOCK_TTL_S,
               poll_s: float = 0.2) -> AsyncIterator[None]:
    """Work that one process at a time may do (the start-up's: embedding the representative set,
    registering the configured models): waits for lock `name`, keeps it while the block runs,
    and lets it go. A registry that is away is logged and the block runs unlocked, as a lone
    process would."""
    try:
        while not await registry.acquire_lock(name, owner, ttl_s):
            await asyncio.sleep(poll_s)
    except RegistryUnavailable as exc:
        log.warning("running %s without its lock: registry unavailable (%s)", name, exc)
        yield
        return
    keeper = asyncio.create_task(hold_lock(registry, name, owner, ttl_s))
    try:
        yield
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        with contextlib.suppress(RegistryUnavailable):  # else it expires by itself
            await registry.release_lock(name, owner)
