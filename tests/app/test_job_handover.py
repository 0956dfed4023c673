"""Jobs across processes: a profiling job another process finished between this one's listing
it as running and taking its lock (the lock is free again once that process is done) is not run
a second time; one paused or cancelled through another process stops where it runs."""
from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx

from app.profiling.jobs import JobOptions, JobRunner
from app.runtime.config import Settings
from app.runtime.gateway import resilience
from app.runtime.metrics import Metrics
from models_registry.records import JobRecord
from models_registry.sqlite import SQLiteRegistry
from tests.models_registry.helpers import started
from tests.support.clients import wait_for


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


def test_a_job_paused_or_cancelled_through_another_gateway_stops_where_it_runs(make_gateway, fault_upstream,
                                                                                tmp_path):
    """Two gateways on one registry (as two workers or replicas are): the one running a job
    stops it when another writes its pause or cancel. Before, the runner's next progress write
    put the job back to `running`, and it went on calling (and paying) the upstream."""
    upstream, url = fault_upstream
    db = str(tmp_path / "shared.db")
    auth = {"authorization": "Bearer k"}
    with make_gateway(models=[], sqlite_path=db, admin_key="k") as a, \
            make_gateway(models=[], sqlite_path=db, admin_key="k") as b:
        def job_of(gw: str, job_id: str) -> dict:
            return httpx.get(f"{gw}/admin/jobs/{job_id}", headers=auth, timeout=10).json()

        def started_slowly(name: str) -> str:
            body = {"name": name, "base_url": url, "upstream_model": f"{name}:delay=0.1",
                    "cost": {"per_request": 0.01}, "job": {"limit": 30, "concurrency": 1}}
            job_id = httpx.post(f"{a}/admin/models", json=body, headers=auth, timeout=10).json()["job_id"]
            assert wait_for(lambda: job_of(b, job_id)["done"] >= 2)
            return job_id

        def calls_after(name: str, stopped_at: int) -> int:
            """The upstream calls that arrived in the 1.5 s after the stop: at most the one that was
            in flight (one at a time), however loaded the machine; running on, about 15."""
            time.sleep(1.5)
            return upstream.calls[f"{name}:delay=0.1"] - stopped_at

        paused = started_slowly("p")
        assert httpx.post(f"{b}/admin/jobs/{paused}/pause", headers=auth, timeout=10).json()["state"] == "paused"
        assert calls_after("p", upstream.calls["p:delay=0.1"]) <= 1
        assert job_of(a, paused)["state"] == job_of(b, paused)["state"] == "paused"
        assert httpx.post(f"{b}/admin/jobs/{paused}/resume", headers=auth, timeout=10).json()["state"] == "running"
        assert wait_for(lambda: job_of(a, paused)["state"] == "done", timeout_s=120)

        cancelled = started_slowly("c")
        assert httpx.post(f"{b}/admin/jobs/{cancelled}/cancel", headers=auth,
                          timeout=10).json()["state"] == "cancelled"
        assert calls_after("c", upstream.calls["c:delay=0.1"]) <= 1
        assert job_of(a, cancelled)["state"] == "cancelled"
