"""A profiling job another process finished between this one's listing it as running and taking
its lock (the lock is free again once that process is done) is not run a second time."""
from __future__ import annotations

import asyncio
import dataclasses
import time

from app.profiling.jobs import JobOptions, JobRunner
from app.runtime.config import Settings
from app.runtime.gateway import resilience
from app.runtime.metrics import Metrics
from models_registry.records import JobRecord
from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import started


def never(*_args):
    raise AssertionError("the finished job was run again")


async def test_a_job_finished_elsewhere_is_not_run_again_from_a_stale_listing(tmp_path):
    async with started(SQLiteRegistry(tmp_path / "registry.db")) as (registry,):
        now = time.time()
        done = JobRecord(id="j1", model="m", state="done", done=10, total=10, errors=0, spend=0.1,
                         started_at=now, updated_at=now)
        await registry.put_job(done)
        runner = JobRunner(registry, forwarder=None, metrics=Metrics(), clusters=never,
                           options=JobOptions(concurrency=1, max_tokens=16, spend_cap=None), judge_model=None,
                           resilience=resilience(Settings()))
        runner._spawn(dataclasses.replace(done, state="running"))  # what a listing made before it ended said
        await asyncio.gather(*runner._tasks.values())
        assert await registry.get_job("j1") == done
        assert await registry.acquire_lock("job:j1", "another", 1.0)  # and its lock was let go


async def test_a_job_takes_its_lock_for_the_configured_lock_ttl(tmp_path):
    async with started(SQLiteRegistry(tmp_path / "registry.db")) as (registry,):
        now = time.time()
        done = JobRecord(id="j2", model="m", state="done", done=1, total=1, errors=0, spend=0.0,
                         started_at=now, updated_at=now)
        await registry.put_job(done)
        asked: list[float] = []
        acquire = registry.acquire_lock

        async def recording(key: str, owner: str, ttl_s: float) -> bool:
            asked.append(ttl_s)
            return await acquire(key, owner, ttl_s)

        registry.acquire_lock = recording
        runner = JobRunner(registry, forwarder=None, metrics=Metrics(), clusters=never,
                           options=JobOptions(concurrency=1, max_tokens=16, spend_cap=None), judge_model=None,
                           resilience=resilience(Settings(lock_ttl_s=2.5)))
        runner._spawn(dataclasses.replace(done, state="running"))
        await asyncio.gather(*runner._tasks.values())
        assert asked == [2.5]
