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


async def finished_job(registry: SQLiteRegistry, job_id: str) -> JobRecord:
    """A job another process finished, as stored."""
    now = time.time()
    done = JobRecord(id=job_id, model="m", state="done", done=10, total=10, errors=0, spend=0.1,
                     started_at=now, updated_at=now)
    await registry.put_job(done)
    return done


async def run_as_listed_running(registry: SQLiteRegistry, job: JobRecord, settings: Settings) -> None:
    """Have a runner take up `job` as a listing made before it ended said it was: running."""
    runner = JobRunner(registry, forwarder=None, metrics=Metrics(), clusters=never,
                       options=JobOptions(concurrency=1, max_tokens=16, spend_cap=None), judge_model=None,
                       resilience=resilience(settings))
    runner._spawn(dataclasses.replace(job, state="running"))
    await asyncio.gather(*runner._tasks.values())


async def test_a_job_finished_elsewhere_is_not_run_again_from_a_stale_listing(tmp_path):
    async with started(SQLiteRegistry(tmp_path / "registry.db")) as (registry,):
        done = await finished_job(registry, "j1")
        await run_as_listed_running(registry, done, Settings())
        assert await registry.get_job("j1") == done
        assert await registry.acquire_lock("job:j1", "another", 1.0)  # and its lock was let go


async def test_a_job_takes_its_lock_for_the_configured_lock_ttl(tmp_path):
    async with started(SQLiteRegistry(tmp_path / "registry.db")) as (registry,):
        done = await finished_job(registry, "j2")
        asked: list[float] = []
        acquire = registry.acquire_lock

        async def recording(key: str, owner: str, ttl_s: float) -> bool:
            asked.append(ttl_s)
            return await acquire(key, owner, ttl_s)

        registry.acquire_lock = recording
        await run_as_listed_running(registry, done, Settings(lock_ttl_s=2.5))
        assert asked == [2.5]
