"""The Registry contract, run against both backends (a real SQLite file, the real Redis)."""
from __future__ import annotations

import asyncio
import time

import pytest

from models_registry.base import (
    Registry,
    RegistryConflict,
    RegistryUnavailable,
    turn,
    update_model,
)
from models_registry.records import Answer, JobRecord, RegistryValidationError
from tests.models_registry.helpers import make_record, reopen


def job(job_id: str, model: str, started_at: float, state: str = "running") -> JobRecord:
    return JobRecord(id=job_id, model=model, state=state, done=0, total=400, errors=0, spend=0.0,
                     started_at=started_at, updated_at=started_at, error=None, owner="owner-a")


async def test_both_backends_implement_the_registry_protocol(registry):
    assert isinstance(registry, Registry)
    assert registry.available


async def test_put_model_stores_every_field_and_bumps_the_revision(registry):
    record = make_record(seed=5)
    before = time.time()
    await registry.put_model(record)
    assert record.revision == 1 and record.updated_at >= before
    stored = await registry.get_model(record.name)
    assert stored == record
    record.cost.per_request = 0.5
    await registry.put_model(record)
    assert record.revision == 2
    assert (await registry.get_model(record.name)).cost.per_request == 0.5
    assert [r.name for r in await registry.list_models()] == [record.name]


async def test_a_write_expecting_a_revision_is_refused_once_another_write_or_a_delete_came_between(registry):
    await registry.put_model(make_record("a"))
    mine, theirs = registry.snapshot()["a"], registry.snapshot()["a"]
    theirs.enabled = False
    await registry.put_model(theirs, expect_revision=1)
    mine.cost.per_request = 0.5
    with pytest.raises(RegistryConflict):
        await registry.put_model(mine, expect_revision=1)
    stored = await registry.get_model("a")
    assert stored.enabled is False and stored.cost.per_request != 0.5 and stored.revision == 2
    await registry.delete_model("a")
    with pytest.raises(RegistryConflict):
        await registry.put_model(stored, expect_revision=2)
    assert await registry.get_model("a") is None and "a" not in registry.snapshot()


async def test_updates_racing_each_other_all_land_and_none_brings_a_deleted_model_back(registry):
    await registry.put_model(make_record("a"))

    def declare(capability: str):
        return lambda record: record.capabilities.update({capability: False})

    await asyncio.gather(*(update_model(registry, "a", declare(c)) for c in ("vision", "tools", "json_schema")))
    assert (await registry.get_model("a")).capabilities == {"vision": False, "tools": False, "json_schema": False}
    # the delete lands between the update's read and its write
    await asyncio.gather(update_model(registry, "a", declare("vision")), registry.delete_model("a"))
    assert await registry.get_model("a") is None


async def test_an_invalid_record_is_refused_and_nothing_is_written(registry):
    record = make_record()
    record.base_url = "ftp://nowhere"
    with pytest.raises(RegistryValidationError):
        await registry.put_model(record)
    assert await registry.get_model(record.name) is None
    assert registry.snapshot() == {}


async def test_snapshot_gives_copies_so_editing_one_changes_nothing_until_written(registry):
    await registry.put_model(make_record("a"))
    mine = registry.snapshot()["a"]
    mine.profile.errors[0] = 0.999
    mine.enabled = False
    assert registry.snapshot()["a"].enabled is True
    assert registry.snapshot()["a"].profile.errors[0] != 0.999
    await registry.put_model(mine)
    assert registry.snapshot()["a"].enabled is False


async def test_a_peeked_record_is_the_snapshots_own_and_still_the_moment_it_was_taken(registry):
    await registry.put_model(make_record("a"))
    snapshot = registry.snapshot()
    assert snapshot.peek("a") is snapshot.peek("a") and snapshot.peek("a") == snapshot["a"]
    changed = snapshot["a"]
    changed.enabled = False
    await registry.put_model(changed)
    assert snapshot.peek("a").enabled is True and registry.snapshot().peek("a").enabled is False


async def test_a_snapshot_keeps_showing_the_moment_it_was_taken(registry):
    await registry.put_model(make_record("a"))
    earlier = registry.snapshot()
    await registry.put_model(make_record("b"))
    await registry.delete_model("a")
    assert list(earlier) == ["a"] and earlier["a"].name == "a"
    assert list(registry.snapshot()) == ["b"] and len(registry.snapshot()) == 1


async def test_on_change_hears_each_put_and_delete_by_name(registry):
    heard: list[str] = []
    registry.on_change(heard.append)
    await registry.put_model(make_record("a"))
    await registry.put_model(make_record("b"))
    await registry.delete_model("a")
    assert heard == ["a", "b", "a"]
    assert set(registry.snapshot()) == {"b"}


async def test_delete_model_says_whether_there_was_one(registry):
    await registry.put_model(make_record("a"))
    assert await registry.delete_model("a") is True
    assert await registry.delete_model("a") is False
    assert await registry.get_model("a") is None


async def test_jobs_round_trip_and_list_oldest_first_per_model(registry):
    await registry.put_job(job("j2", "a", 20.0))
    await registry.put_job(job("j1", "a", 10.0))
    await registry.put_job(job("j3", "b", 15.0))
    assert [j.id for j in await registry.list_jobs()] == ["j1", "j3", "j2"]
    assert [j.id for j in await registry.list_jobs("a")] == ["j1", "j2"]
    updated = job("j1", "a", 10.0, state="done")
    updated.done, updated.spend = 400, 1.25
    await registry.put_job(updated)
    assert await registry.get_job("j1") == updated
    assert await registry.get_job("nope") is None


async def test_a_running_job_is_rewritten_only_while_it_runs_under_the_same_owner(registry):
    progress = job("j1", "a", 1.0)
    await registry.put_job(progress)
    progress.done = 5
    assert await registry.put_running_job(progress) and (await registry.get_job("j1")).done == 5
    paused = job("j1", "a", 1.0, state="paused")  # written by another process
    await registry.put_job(paused)
    progress.done = 6
    assert not await registry.put_running_job(progress) and await registry.get_job("j1") == paused
    resumed = job("j1", "a", 1.0)
    resumed.owner = "owner-b"  # resumed elsewhere: the first runner's writes are stale
    await registry.put_job(resumed)
    assert not await registry.put_running_job(progress) and await registry.get_job("j1") == resumed
    assert not await registry.put_running_job(job("nope", "a", 1.0))
    assert await registry.get_job("nope") is None


async def test_record_answer_upserts_per_prompt_and_keeps_versions_apart(registry):
    await registry.record_answer("a", "v1", Answer("p1", 0.0, 0.01, 3, error="HTTP 502"))
    await registry.record_answer("a", "v1", Answer("p1", 1.0, 0.02, 4))
    await registry.record_answer("a", "v1", Answer("p2", 0.0, 0.03, 5))
    await registry.record_answer("a", "v2", Answer("p1", 0.0, 0.04, 6))
    got = await registry.answers("a", "v1")
    assert got == {"p1": Answer("p1", 1.0, 0.02, 4), "p2": Answer("p2", 0.0, 0.03, 5)}
    assert list(await registry.answers("a", "v2")) == ["p1"]
    assert await registry.answers("a", "v3") == {}


async def test_an_answer_is_stored_with_its_text_grader_and_verdict(registry):
    judged = Answer("p1", 0.75, 2.0, 30, text="Sleep at set hours.", grader="llm_judge:pairwise",
                    verdict="[[A]]\n\n[[C]]", judge_cost=1.0, answered_at=100.5)
    ungraded = Answer("p2", 0.0, 1.5, 12, error="grading failed: no verdict", text="Hm.", grader="llm_judge:rating",
                      verdict="Nice.", judge_cost=0.5, answered_at=101.0)
    await registry.record_answer("a", "v1", judged)
    await registry.record_answer("a", "v1", ungraded)
    assert await registry.answers("a", "v1") == {"p1": judged, "p2": ungraded}


async def test_clear_answers_forgets_every_version_of_that_model_only(registry):
    for model in ("a", "a:b"):  # a name with ":" must not alias another model's answers
        for version in ("v1", "v2"):
            await registry.record_answer(model, version, Answer("p1", 1.0, 0.0, 1))
    await registry.clear_answers("a")
    assert await registry.answers("a", "v1") == {} and await registry.answers("a", "v2") == {}
    assert list(await registry.answers("a:b", "v1")) == ["p1"]
    assert list(await registry.answers("a:b", "v2")) == ["p1"]


async def test_a_lock_excludes_everyone_until_released(registry):
    assert await registry.acquire_lock("job:1", "a", 30)
    assert not await registry.acquire_lock("job:1", "b", 30)
    assert not await registry.acquire_lock("job:1", "a", 30)
    assert not await registry.release_lock("job:1", "b")
    assert not await registry.acquire_lock("job:1", "b", 30)
    assert await registry.release_lock("job:1", "a")
    assert await registry.acquire_lock("job:1", "b", 30)


async def test_a_lock_expires_after_its_ttl_unless_its_owner_refreshes_it(registry):
    ttl = 2.0  # refreshed every 50 ms: a loaded machine would have to stall 2 s to let it lapse
    assert await registry.acquire_lock("job:1", "a", ttl)
    assert not await registry.refresh_lock("job:1", "b", ttl)
    start = time.monotonic()
    while time.monotonic() - start < 1.5 * ttl:  # refreshed past its first TTL, it is still held
        assert await registry.refresh_lock("job:1", "a", ttl)
        assert not await registry.acquire_lock("job:1", "b", ttl)
        await asyncio.sleep(0.05)
    last_refresh = time.monotonic()
    while not await registry.acquire_lock("job:1", "b", 30):
        assert time.monotonic() - last_refresh < ttl + 30, "the lock did not expire"
        await asyncio.sleep(0.02)
    assert time.monotonic() - last_refresh >= 0.8 * ttl  # not (much) before its TTL
    assert not await registry.refresh_lock("job:1", "a", 30)


async def test_a_memo_is_recalled_until_it_expires_and_a_new_value_replaces_it(registry):
    assert await registry.recall("response:r1") is None
    await registry.remember("response:r1", "model-a", 30)
    await registry.remember("response:r2", "model-b", 0.3)
    assert await registry.recall("response:r1") == "model-a"
    await registry.remember("response:r1", "model-c", 30)
    assert await registry.recall("response:r1") == "model-c"
    start = time.monotonic()
    while await registry.recall("response:r2") is not None:
        assert time.monotonic() - start < 30, "the memo did not expire"
        await asyncio.sleep(0.02)
    assert await registry.recall("response:r1") == "model-c"


async def test_a_forgotten_memo_is_gone_and_the_others_stay(registry):
    await registry.remember("response:r1", "model-a", 30)
    await registry.remember("response:r2", "model-b", 30)
    await registry.forget("response:r1")
    assert await registry.recall("response:r1") is None
    assert await registry.recall("response:r2") == "model-b"
    await registry.forget("response:never-there")  # nothing to forget: no error
    await registry.remember("response:r1", "model-c", 30)  # a forgotten key can be remembered again
    assert await registry.recall("response:r1") == "model-c"


async def test_everything_written_is_there_for_a_new_instance(registry):
    await registry.put_model(make_record("a", seed=1))
    await registry.put_model(make_record("b", seed=2))
    await registry.delete_model("b")
    await registry.put_job(job("j1", "a", 1.0))
    await registry.record_answer("a", "v1", Answer("p1", 1.0, 0.1, 2))
    other = reopen(registry)
    await other.start()
    try:
        assert other.snapshot() == registry.snapshot()
        assert list(other.snapshot()) == ["a"]
        assert await other.get_job("j1") == await registry.get_job("j1")
        assert await other.answers("a", "v1") == {"p1": Answer("p1", 1.0, 0.1, 2)}
    finally:
        await other.close()


async def test_writes_after_close_raise_registry_unavailable(registry):
    await registry.put_model(make_record("a"))
    await registry.close()
    with pytest.raises(RegistryUnavailable):
        await registry.put_model(make_record("b"))
    assert list(registry.snapshot()) == ["a"]


async def test_turns_run_one_at_a_time_and_the_lock_is_free_after(registry):
    inside: list[str] = []
    overlapped: list[list[str]] = []
    entered: list[str] = []

    async def work(owner: str) -> None:
        async with turn(registry, "startup", owner, poll_s=0.01):
            inside.append(owner)
            entered.append(owner)
            if len(inside) > 1:
                overlapped.append(list(inside))
            await asyncio.sleep(0.05)
            inside.remove(owner)

    await asyncio.gather(*(work(f"worker-{i}") for i in range(3)))
    assert sorted(entered) == ["worker-0", "worker-1", "worker-2"] and not overlapped
    assert await registry.acquire_lock("startup", "later", 1.0)
