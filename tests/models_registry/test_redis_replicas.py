"""Several Redis registry replicas: changes reach every snapshot within a second, and an outage
leaves snapshots answering, writes failing fast, and a full resync once Redis is back."""
from __future__ import annotations

import time

import orjson
import pytest
import redis

from models_registry.base import RegistryUnavailable
from models_registry.records import RegistryValidationError
from models_registry.redis_store import RedisRegistry
from tests.models_registry.helpers import make_record, started, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
async def replicas(shared_redis):
    """Two started replicas on the shared Redis, one prefix."""
    url, prefix = shared_redis
    async with started(RedisRegistry(url, prefix=prefix), RedisRegistry(url, prefix=prefix)) as pair:
        yield pair


async def test_a_change_on_one_replica_reaches_the_others_snapshot_within_a_second(replicas):
    a, b = replicas
    heard: list[str] = []
    b.on_change(heard.append)

    record = make_record("meta/llama-2-70b-chat", seed=1)
    await a.put_model(record)
    await wait_for(lambda: "meta/llama-2-70b-chat" in b.snapshot(), 1.0, "a new model on B")
    assert b.snapshot()["meta/llama-2-70b-chat"] == record

    record.enabled, record.state = False, "disabled"
    await a.put_model(record)
    await wait_for(lambda: not b.snapshot()["meta/llama-2-70b-chat"].enabled, 1.0, "a disabled model on B")

    await b.delete_model(record.name)
    await wait_for(lambda: record.name not in a.snapshot(), 1.0, "a deleted model gone from A")
    assert heard == [record.name] * 3


async def test_a_stale_change_message_cannot_resurrect_a_deleted_model(replicas, shared_redis):
    a, b = replicas
    url, prefix = shared_redis
    record = make_record("gone", seed=1)
    await a.put_model(record)
    stale = record.to_dict()  # revision 1, as published by that first write
    await a.delete_model("gone")
    await wait_for(lambda: "gone" not in b.snapshot(), 1.0, "the deletion on B")

    # Replay the old put on the channel, then a fresh change: messages arrive in order, so once
    # the fresh one is applied, the stale one has been seen (and must have been ignored).
    client = redis.Redis.from_url(url)
    client.publish(f"{prefix}changes", b"put\n" + orjson.dumps(stale))
    client.close()
    await a.put_model(make_record("marker"))
    await wait_for(lambda: "marker" in b.snapshot(), 1.0, "the marker on B")
    assert "gone" not in b.snapshot()


async def test_garbage_on_the_channel_is_ignored(replicas, shared_redis):
    a, b = replicas
    url, prefix = shared_redis
    client = redis.Redis.from_url(url)
    for junk in (b"hello", b"put\n{not json", b"del\nx\nname"):
        client.publish(f"{prefix}changes", junk)
    client.close()
    await a.put_model(make_record("after-junk"))
    await wait_for(lambda: "after-junk" in b.snapshot(), 1.0, "a change after junk on B")
    assert b.available


async def test_an_outage_keeps_snapshots_fails_writes_fast_and_resyncs_on_return(private_redis):
    prefix = "uniroute-test:outage:"
    a = RedisRegistry(private_redis.url, prefix=prefix)
    await a.start()
    heard: list[str] = []
    a.on_change(heard.append)
    try:
        before = make_record("before-outage", seed=2)
        await a.put_model(before)

        private_redis.kill()
        await wait_for(lambda: not a.available, 3.0, "A noticing the outage")
        assert a.snapshot() == {"before-outage": before}
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            await a.put_model(make_record("during-outage"))
        with pytest.raises(RegistryUnavailable):
            await a.list_jobs()
        # Failing fast: not waiting out a 1 s socket timeout with its retry on each call (4 s for
        # the two); the bound is loose so that a loaded machine cannot fail it.
        assert time.monotonic() - started < 3.0
        assert a.snapshot() == {"before-outage": before}

        # Back, empty (no persistence); another replica writes, most often before A has reconnected.
        private_redis.start()
        b = RedisRegistry(private_redis.url, prefix=prefix)
        await b.start()
        try:
            after = make_record("after-outage", seed=3)
            await b.put_model(after)
            # A writes back what Redis lost, beside what was written since.
            both = {"before-outage", "after-outage"}
            await wait_for(lambda: a.available and set(a.snapshot()) == both == set(b.snapshot()), 5.0,
                           "A resyncing with the restarted Redis, and B hearing what A wrote back")
            assert a.snapshot()["after-outage"] == after and b.snapshot()["before-outage"] == before
            assert set(heard) == both

            # A is subscribed again: its writes reach B, and B's reach A.
            await a.put_model(make_record("from-a"))
            await wait_for(lambda: "from-a" in b.snapshot(), 1.0, "A's write on B after the outage")
            await b.put_model(make_record("from-b"))
            await wait_for(lambda: "from-b" in a.snapshot(), 1.0, "B's write on A after the outage")
        finally:
            await b.close()
    finally:
        await a.close()


async def test_a_redis_restarted_empty_gets_back_the_models_its_replicas_knew_and_keeps_newer_writes(
        private_redis):
    # A Redis run without persistence came back empty, and every replica then routed on nothing,
    # the config file's models included, until it was restarted itself.
    prefix = "uniroute-test:emptied:"
    a, b = RedisRegistry(private_redis.url, prefix=prefix), RedisRegistry(private_redis.url, prefix=prefix)
    async with started(a, b):
        config_model, admin_model = make_record("from-config", seed=1), make_record("from-admin", seed=2)
        await a.put_model(config_model)
        await b.put_model(admin_model)
        await a.put_model(make_record("deleted", seed=3))
        await b.delete_model("deleted")
        known = {"from-config", "from-admin"}
        await wait_for(lambda: set(a.snapshot()) == known == set(b.snapshot()), 1.0, "both replicas in step")

        private_redis.kill()
        await wait_for(lambda: not a.available and not b.available, 5.0, "both replicas noticing the outage")
        private_redis.start()
        # A replica started meanwhile changes one of those models: its write is newer than what
        # the old replicas remember, and stays, whoever writes back first.
        changed = make_record("from-admin", seed=4)
        async with started(RedisRegistry(private_redis.url, prefix=prefix)) as (newcomer,):
            await newcomer.put_model(changed)
            await wait_for(lambda: a.available and b.available and set(newcomer.snapshot()) == known, 10.0,
                           "the old replicas writing back what they knew")
            stored = {r.name: r for r in await newcomer.list_models()}
            assert set(stored) == known  # the model deleted before the restart stays deleted
            assert stored["from-config"] == config_model
            assert stored["from-admin"].profile == changed.profile
            await wait_for(lambda: all(r.snapshot()["from-admin"].profile == changed.profile for r in (a, b)),
                           1.0, "the newer write on every replica")

            # Written back with their revisions, so the replicas go on following each other's writes.
            config_model.enabled, config_model.state = False, "disabled"
            await b.put_model(config_model)
            assert config_model.revision > 1
            await wait_for(lambda: not a.snapshot()["from-config"].enabled, 1.0, "B's later write on A")


async def test_a_flushed_redis_gets_back_the_models_its_replicas_knew(private_redis):
    # A flush keeps the connections: nothing broke to tell the replicas, which went on routing on
    # their snapshots while every new registry saw none, and ignored the revisions written anew.
    prefix = "uniroute-test:flushed:"
    async with started(RedisRegistry(private_redis.url, prefix=prefix, heartbeat_s=0.1)) as (a,):
        await a.put_model(make_record("kept", seed=1))
        redis.Redis(port=private_redis.port).flushall()
        async with started(RedisRegistry(private_redis.url, prefix=prefix)) as (later,):
            await wait_for(lambda: "kept" in later.snapshot(), 5.0, "A writing back what the flush removed")


async def test_a_replica_started_while_redis_is_down_comes_up_empty_then_syncs(private_redis):
    prefix = "uniroute-test:late:"
    writer = RedisRegistry(private_redis.url, prefix=prefix)
    await writer.start()
    await writer.put_model(make_record("existing"))
    await writer.close()
    private_redis.kill()

    late = RedisRegistry(private_redis.url, prefix=prefix, start_timeout_s=0.3)
    await late.start()
    try:
        assert not late.available and late.snapshot() == {}
        with pytest.raises(RegistryUnavailable):
            await late.put_model(make_record("x"))
        private_redis.start()
        writer = RedisRegistry(private_redis.url, prefix=prefix)
        await writer.start()
        await writer.put_model(make_record("written-after-restart"))
        await writer.close()
        await wait_for(lambda: "written-after-restart" in late.snapshot(), 5.0, "the late replica syncing")
        assert late.available
    finally:
        await late.close()


def test_a_url_that_is_not_redis_is_refused_without_leaking_its_password():
    with pytest.raises(RegistryValidationError) as err:
        RedisRegistry("http://user:hunter2@127.0.0.1:6379/0")
    assert err.value.field == "redis_url"
    assert "hunter2" not in str(err.value)
