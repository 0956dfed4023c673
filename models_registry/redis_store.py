"""The shared registry: Redis, for several gateway replicas.

Layout under a key prefix (default "uniroute:"):
  {p}models           hash  name -> record JSON
  {p}model-revisions  hash  name -> last revision (kept after a delete, so revisions only grow)
  {p}jobs             hash  job id -> job JSON
  {p}answers:[m, v]   hash  prompt id -> answer JSON, one per (model, repset version)
  {p}answer-keys:{m}  set   the answer hashes of model m (clear_answers finds every version)
  {p}lock:{key}       string owner, with an expiry
  {p}epoch            string the id of this registry's data, written by the first replica to find none
  {p}changes          pub/sub channel: "put\\n<record JSON>" or "del\\n<revision>\\n<name>"

A model write is one Lua script (bump revision, store, publish), so the published changes come
in commit order with growing revisions. Each replica subscribes before it loads everything, and
applies a change only if its revision is newer than what it has seen for that name: a message
that raced the full load can never roll it back, nor resurrect a deleted model.

A supervisor task owns the connection: it subscribes, loads everything, then follows the
channel and reads the epoch every second. When Redis goes away the snapshot keeps its last state,
writes raise RegistryUnavailable at once, and the supervisor reconnects with backoff, then resyncs.

A Redis that comes back without its data (restarted with no persistence, flushed) has lost its
epoch: the replica that finds it gone writes back the records it knows (its snapshot: the config
file's models and those registered through the admin API, profiles included) that nobody has
written or deleted since, so no replica routes on nothing until it restarts. Only a registry whose
epoch changed is restored: a replica that was merely cut off finds its epoch and takes the stored
records as they are, so it never brings back a model deleted meanwhile.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from models_registry.base import (
    ChangeCallback,
    ModelView,
    RegistryConflict,
    RegistryUnavailable,
    Snapshot,
    readable_models,
)
from models_registry.records import (
    Answer,
    JobRecord,
    ModelRecord,
    RegistryValidationError,
)

log = logging.getLogger("uniroute.registry")
T = TypeVar("T")

DEFAULT_PREFIX = "uniroute:"

# The record JSON arrives without its revision; the script appends it (orjson writes a
# non-empty object ending in "}"), so the stored and published documents carry the new one.
# ARGV[4], when given, is the revision the stored record must still have (0, never a revision:
# it changed or went).
PUT_MODEL = """
if ARGV[4] and (redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
                or tonumber(redis.call('HGET', KEYS[2], ARGV[1])) ~= tonumber(ARGV[4])) then
  return 0
end
local rev = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local doc = string.sub(ARGV[2], 1, -2) .. ',"revision":' .. rev .. '}'
redis.call('HSET', KEYS[1], ARGV[1], doc)
redis.call('PUBLISH', ARGV[3], 'put\\n' .. doc)
return rev
"""
DELETE_MODEL = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local rev = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PUBLISH', ARGV[2], 'del\\n' .. rev .. '\\n' .. ARGV[1])
return rev
"""
CLEAR_ANSWERS = """
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', key) end
return redis.call('DEL', KEYS[1])
"""
REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
PUT_RUNNING_JOB = """
local doc = redis.call('HGET', KEYS[1], ARGV[1])
if not doc then return 0 end
local stored = cjson.decode(doc)
if stored.state ~= 'running' or stored.owner ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# Give a registry without data an epoch and the records a replica knew (ARGV[4...]: name, record
# JSON, revision), each only where its name has no revision yet: a record written or deleted since
# the data were lost (by a replica started meanwhile) is newer than the one the replica remembers.
# ARGV[1] is the epoch the replica last synced with: still there, nothing was lost. Returns the
# epoch and how many records were written back.
RESTORE_MODELS = """
local epoch = redis.call('GET', KEYS[3])
if epoch == ARGV[1] then return {epoch, 0} end
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[3], epoch)
end
local restored = 0
for i = 4, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('PUBLISH', ARGV[3], 'put\\n' .. ARGV[i + 1])
    restored = restored + 1
  end
end
return {epoch, restored}
"""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise RegistryValidationError("redis_url", f"must be a redis://, rediss:// or unix:// URL, got {redact(url)!r}")


async def check_credentials(url: str, timeout_s: float = 1.0) -> None:
    """RegistryUnavailable when the Redis at `url` refuses its credentials (none where it wants a
    password, a wrong one): a misconfiguration no wait mends (RegistryValidationError for a URL
    that is not Redis's). A Redis that does not answer is no error here: the registry starts
    without it and waits for it."""
    _check_url(url)
    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        await client.ping()
    except AuthenticationError as exc:
        raise RegistryUnavailable(f"Redis at {redact(url)} refuses the credentials of redis_url: {exc}") from None
    except (RedisError, OSError):
        pass
    finally:
        await client.aclose()


class RedisRegistry:
    """`Registry` over Redis, with a local snapshot kept current through pub/sub."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout_s: float = 1.0,
                 heartbeat_s: float = 1.0, max_backoff_s: float = 2.0, start_timeout_s: float = 3.0) -> None:
        _check_url(url)
        self.url = url
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.max_backoff_s = max_backoff_s
        self.start_timeout_s = start_timeout_s
        common = dict(decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # One quick retry heals a pooled connection that died with a Redis restart; the
        # subscriber gets none, so a broken subscription always surfaces and forces a resync.
        self._client = Redis.from_url(url, retry=Retry(NoBackoff(), 1), **common)
        self._subscriber = Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        self._k_models = f"{prefix}models"
        self._k_revisions = f"{prefix}model-revisions"
        self._k_jobs = f"{prefix}jobs"
        self._k_epoch = f"{prefix}epoch"
        self._channel = f"{prefix}changes"
        self._put_model = self._client.register_script(PUT_MODEL)
        self._delete_model = self._client.register_script(DELETE_MODEL)
        self._clear_answers = self._client.register_script(CLEAR_ANSWERS)
        self._refresh_lock = self._client.register_script(REFRESH_LOCK)
        self._release_lock = self._client.register_script(RELEASE_LOCK)
        self._put_running_job = self._client.register_script(PUT_RUNNING_JOB)
        self._restore_models = self._client.register_script(RESTORE_MODELS)
        self._view = ModelView()
        self._seen: dict[str, int] = {}  # newest revision applied per name, deletions included
        self._epoch = ""  # the epoch of the data last synced with; "" before the first sync
        self._available = False
        self._why_away = "not connected yet"  # the last connection failure, for the messages saying it is away
        self._lost = asyncio.Event()
        self._synced = asyncio.Event()
        self._supervisor: asyncio.Task | None = None

    @property
    def available(self) -> bool:
        return self._available

    async def start(self) -> None:
        """Connect and load every model; if Redis does not answer within `start_timeout_s`,
        go on with an empty snapshot while the supervisor keeps trying."""
        self._supervisor = asyncio.create_task(self._supervise(), name="uniroute-redis-registry")
        try:
            await asyncio.wait_for(self._synced.wait(), self.start_timeout_s)
        except TimeoutError:
            log.error("Redis registry at %s unreachable (%s); starting with no models, retrying in the background",
                      redact(self.url), self._why_away)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self._available = False
        await self._client.aclose()
        await self._subscriber.aclose()

    # -- connection supervision -----------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                # Subscribe first: a change committed during the load is then still heard.
                await pubsub.subscribe(self._channel)
                await self._resync()
                self._lost.clear()
                self._available = True
                self._synced.set()
                backoff = 0.05
                log.info("registry synced with Redis at %s: %d models", redact(self.url), len(self._view.snapshot()))
                await self._follow(pubsub)
            except (RedisError, OSError) as exc:
                # Said by every refused write: a refused password is no outage to wait out.
                self._why_away = str(exc)
                if self._available:
                    log.warning("registry lost Redis at %s: %s", redact(self.url), exc)
            except Exception:  # a bug here must not end reconnection for good
                log.exception("registry supervisor failed; reconnecting")
            finally:
                self._available = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                with contextlib.suppress(RedisError, OSError):
                    await self._client.connection_pool.disconnect()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _follow(self, pubsub: PubSub) -> None:
        """Apply published changes until the connection breaks (raises RedisError), or until the
        data are found gone (returns: the supervisor resyncs, restoring them)."""
        next_ping = time.monotonic() + self.heartbeat_s
        while not self._lost.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(0.25, self.heartbeat_s))
            if message is not None:
                self._apply(message["data"])
            if time.monotonic() >= next_ping:
                # The heartbeat reads the epoch rather than a bare PING, for the same round trip: a
                # flushed Redis keeps its connections, and would otherwise go unnoticed.
                if await self._client.get(self._k_epoch) != self._epoch:
                    log.warning("registry at %s lost its data while connected (flushed?)", redact(self.url))
                    return
                next_ping = time.monotonic() + self.heartbeat_s
        raise RedisError("a registry command lost the connection")

    async def _restore(self) -> None:
        """Write back the records this replica knows when Redis no longer holds the epoch it last
        synced with (see the module's docstring); take the epoch there is."""
        if await self._client.get(self._k_epoch) == self._epoch:
            return
        args = [self._epoch, uuid.uuid4().hex, self._channel]
        if self._epoch:  # a replica that never synced knows nothing the registry lost
            for record in self._view.snapshot().values():
                args += [record.name, orjson.dumps(record.to_dict()).decode(), record.revision]
        epoch, restored = await self._restore_models(keys=[self._k_models, self._k_revisions, self._k_epoch],
                                                     args=args)
        if restored:
            log.warning("Redis registry at %s came back without its data: wrote back the %d models this replica "
                        "knew", redact(self.url), restored)
        self._epoch = epoch

    async def _resync(self) -> None:
        await self._restore()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._k_models)
            pipe.hgetall(self._k_revisions)
            docs, revisions = await pipe.execute()
        records = readable_models(docs.items(), "Redis")
        self._seen = {name: int(rev) for name, rev in revisions.items()}
        self._view.replace_all(records)

    def _apply(self, data: str) -> None:
        """One published change, if newer than what this replica has seen for that name."""
        try:
            op, _, rest = data.partition("\n")
            if op == "put":
                record = ModelRecord.from_dict(orjson.loads(rest))
                self._apply_put(record)
            elif op == "del":
                revision, _, name = rest.partition("\n")
                self._apply_delete(name, int(revision))
            else:
                raise ValueError(f"unknown change {op!r}")
        except (ValueError, TypeError) as exc:
            log.warning("ignoring malformed registry change %.80r: %s", data, exc)

    def _apply_put(self, record: ModelRecord) -> None:
        if record.revision > self._seen.get(record.name, 0):
            self._seen[record.name] = record.revision
            self._view.put(record)

    def _apply_delete(self, name: str, revision: int) -> None:
        if revision > self._seen.get(name, 0):
            self._seen[name] = revision
            self._view.remove(name)

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis command; fail at once while Redis is known to be away."""
        if not self._available:
            raise RegistryUnavailable(f"Redis registry at {redact(self.url)} is unreachable: {self._why_away}")
        try:
            return await command()
        except ResponseError as exc:
            # Redis answered, refusing this command (a write past `maxmemory` under noeviction, a
            # missing permission): the connection is fine, and taking it for lost would stop the
            # reads too, for as long as Redis refuses the resync's transaction (out of memory).
            raise RegistryUnavailable(f"Redis registry at {redact(self.url)} refused: {exc}") from exc
        except (RedisError, OSError) as exc:
            if self._available:
                log.warning("registry lost Redis at %s: %s", redact(self.url), exc)
            self._available = False
            self._lost.set()  # the supervisor reconnects and resyncs
            raise RegistryUnavailable(f"Redis registry at {redact(self.url)}: {exc}") from exc

    # -- models ---------------------------------------------------------------------------

    async def list_models(self) -> list[ModelRecord]:
        docs = await self._call(lambda: self._client.hgetall(self._k_models))
        return sorted(readable_models(docs.items(), "Redis").values(), key=lambda r: r.name)

    async def get_model(self, name: str) -> ModelRecord | None:
        doc = await self._call(lambda: self._client.hget(self._k_models, name))
        return None if doc is None else ModelRecord.from_dict(orjson.loads(doc))

    async def put_model(self, record: ModelRecord, expect_revision: int | None = None) -> ModelRecord:
        record.validate()
        stored = record.copy()
        stored.updated_at = time.time()
        stored.created_at = stored.created_at or stored.updated_at
        doc = stored.to_dict()
        del doc["revision"]
        args = [stored.name, orjson.dumps(doc).decode(), self._channel]
        if expect_revision is not None:
            args.append(expect_revision)
        revision = await self._call(lambda: self._put_model(keys=[self._k_models, self._k_revisions], args=args))
        if not revision:
            raise RegistryConflict(f"model {stored.name!r} is no longer at revision {expect_revision}")
        stored.revision = int(revision)
        record.revision, record.updated_at, record.created_at = stored.revision, stored.updated_at, stored.created_at
        self._apply_put(stored)
        return record

    async def delete_model(self, name: str) -> bool:
        revision = await self._call(lambda: self._delete_model(
            keys=[self._k_models, self._k_revisions], args=[name, self._channel]))
        if revision:
            self._apply_delete(name, int(revision))
        return bool(revision)

    # -- jobs -----------------------------------------------------------------------------

    async def put_job(self, job: JobRecord) -> None:
        await self._call(lambda: self._client.hset(self._k_jobs, job.id, orjson.dumps(job.to_dict()).decode()))

    async def put_running_job(self, job: JobRecord) -> bool:
        doc = orjson.dumps(job.to_dict()).decode()
        return bool(await self._call(lambda: self._put_running_job(keys=[self._k_jobs],
                                                                   args=[job.id, doc, job.owner or ""])))

    async def get_job(self, job_id: str) -> JobRecord | None:
        doc = await self._call(lambda: self._client.hget(self._k_jobs, job_id))
        return None if doc is None else JobRecord.from_dict(orjson.loads(doc))

    async def list_jobs(self, model: str | None = None) -> list[JobRecord]:
        docs = await self._call(lambda: self._client.hgetall(self._k_jobs))
        jobs = [JobRecord.from_dict(orjson.loads(d)) for d in docs.values()]
        return sorted((j for j in jobs if model is None or j.model == model), key=lambda j: (j.started_at, j.id))

    # -- answers --------------------------------------------------------------------------

    def _k_answers(self, model: str, repset_version: str) -> str:
        # A JSON pair: names may hold ":" and versions anything, and the key stays unambiguous.
        return f"{self.prefix}answers:{orjson.dumps([model, repset_version]).decode()}"

    def _k_answer_keys(self, model: str) -> str:
        return f"{self.prefix}answer-keys:{model}"

    async def record_answer(self, model: str, repset_version: str, answer: Answer) -> None:
        key = self._k_answers(model, repset_version)

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, answer.prompt_id, orjson.dumps(answer.to_dict()).decode())
                pipe.sadd(self._k_answer_keys(model), key)
                await pipe.execute()

        await self._call(write)

    async def answers(self, model: str, repset_version: str) -> dict[str, Answer]:
        docs = await self._call(lambda: self._client.hgetall(self._k_answers(model, repset_version)))
        return {pid: Answer.from_dict(orjson.loads(d)) for pid, d in docs.items()}

    async def clear_answers(self, model: str) -> None:
        await self._call(lambda: self._clear_answers(keys=[self._k_answer_keys(model)]))

    # -- locks ----------------------------------------------------------------------------

    def _k_lock(self, key: str) -> str:
        return f"{self.prefix}lock:{key}"

    async def acquire_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        ms = max(1, round(ttl_s * 1000))
        return bool(await self._call(lambda: self._client.set(self._k_lock(key), owner, nx=True, px=ms)))

    async def refresh_lock(self, key: str, owner: str, ttl_s: float) -> bool:
        ms = max(1, round(ttl_s * 1000))
        return bool(await self._call(lambda: self._refresh_lock(keys=[self._k_lock(key)], args=[owner, ms])))

    async def release_lock(self, key: str, owner: str) -> bool:
        return bool(await self._call(lambda: self._release_lock(keys=[self._k_lock(key)], args=[owner])))

    # -- memos ----------------------------------------------------------------------------

    def _k_memo(self, key: str) -> str:
        return f"{self.prefix}memo:{key}"

    async def remember(self, key: str, value: str, ttl_s: float) -> None:
        ms = max(1, round(ttl_s * 1000))
        await self._call(lambda: self._client.set(self._k_memo(key), value, px=ms))

    async def recall(self, key: str) -> str | None:
        value = await self._call(lambda: self._client.get(self._k_memo(key)))
        return None if value is None else str(value)

    async def forget(self, key: str) -> None:
        await self._call(lambda: self._client.delete(self._k_memo(key)))

    # -- the in-memory view ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self._view.snapshot()

    def on_change(self, callback: ChangeCallback) -> None:
        self._view.subscribe(callback)
