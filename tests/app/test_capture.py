"""Opt-in capture through a real gateway: off by default; when on, only the routing text of a
routed request is kept (never a key, another message or the rest of the body), within the
configured sample rate and limits, exported as canonical JSONL."""
from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import httpx
import redis

from app.routing.capture import MAX_PENDING_WRITES, Capture
from app.routing.prompts import chat_routing_text
from app.runtime.config import CaptureConfig
from app.runtime.metrics import Metrics
from models_registry.capture import RedisCaptureStore, SQLiteCaptureStore, prompt_id
from tests.support.fault_upstream import closed_port

ADMIN = "capture-admin-key"
CLIENT_KEY = "client-secret-key-4242"
AUTH = {"authorization": f"Bearer {ADMIN}"}
MARKERS = ("EARLIER-TURN-MARKER", "ASSISTANT-REPLY-MARKER", "USER-FIELD-MARKER", CLIENT_KEY, ADMIN)
MESSAGES = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "EARLIER-TURN-MARKER: hello"},
    {"role": "assistant", "content": "ASSISTANT-REPLY-MARKER"},
    {"role": "user", "content": "Which planet is known as the red planet?"},
]


def chat(base_url: str, messages: list[dict], key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(base_url + "/v1/chat/completions", json={"model": "uniroute", "messages": messages,
                                                            "user": "USER-FIELD-MARKER"},
                   headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r


def export(base_url: str) -> list[dict]:
    r = httpx.get(base_url + "/admin/capture", params={"format": "jsonl"}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def stats(base_url: str) -> dict:
    r = httpx.get(base_url + "/admin/capture/stats", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_capture_is_off_by_default_and_stores_nothing(make_gateway, tmp_path: Path):
    db = tmp_path / "off.db"
    with make_gateway(admin_key=ADMIN, sqlite_path=str(db)) as gw:
        for i in range(5):
            chat(gw, [{"role": "user", "content": f"Name a prime number larger than {i * 10}."}])
        assert stats(gw)["enabled"] is False and stats(gw)["count"] == 0
        assert export(gw) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM captured").fetchone()[0] == 0


def test_only_the_routing_text_is_kept_never_keys_or_other_messages_sqlite(make_gateway, tmp_path: Path):
    db = tmp_path / "on.db"
    with make_gateway(admin_key=ADMIN, sqlite_path=str(db), api_keys=[CLIENT_KEY],
                      capture={"sample_rate": 1.0, "max_prompts": 2}) as gw:
        chat(gw, MESSAGES, CLIENT_KEY)
        rows = export(gw)
        assert rows == [{"id": prompt_id(chat_routing_text(MESSAGES)), "prompt": chat_routing_text(MESSAGES)}]
        for q in ("What is 7 times 8?", "Spell 'cat' backwards."):
            chat(gw, [{"role": "user", "content": q}], CLIENT_KEY)
        assert [r["prompt"] for r in export(gw)] == ["What is 7 times 8?", "Spell 'cat' backwards."]  # max_prompts=2
        s = stats(gw)
        assert s["enabled"] is True and s["count"] == 2 and sum(s["by_cluster"].values()) == 2
        assert httpx.delete(gw + "/admin/capture", headers=AUTH, timeout=10).json() == {"deleted": 2}
        assert export(gw) == []
        chat(gw, MESSAGES, CLIENT_KEY)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("on.db*"))
    assert b"red planet" in raw  # the routing text is there ...
    for marker in MARKERS:  # ... and nothing else of the request
        assert marker.encode() not in raw


def test_only_the_routing_text_is_kept_never_keys_or_other_messages_redis(make_gateway, redis_url, redis_prefix):
    with make_gateway(admin_key=ADMIN, redis_url=redis_url, redis_prefix=redis_prefix, api_keys=[CLIENT_KEY],
                      capture={"sample_rate": 1.0}) as gw:
        chat(gw, MESSAGES, CLIENT_KEY)
        assert [r["prompt"] for r in export(gw)] == [chat_routing_text(MESSAGES)]
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{redis_prefix}capture*"))
        assert keys
        dump = b"".join(client.dump(k) for k in keys)
        assert b"red planet" in dump
        for marker in MARKERS:
            assert marker.encode() not in dump
    finally:
        for k in client.scan_iter(match=f"{redis_prefix}*"):
            client.delete(k)
        client.close()


async def test_sampling_keeps_each_prompt_with_probability_sample_rate(tmp_path: Path):
    store = SQLiteCaptureStore(tmp_path / "sample.db")
    await store.start()
    try:
        capture = Capture(CaptureConfig(sample_rate=0.3), store, random.Random(7))
        for i in range(400):
            capture.offer(f"prompt number {i}", i % 4)
        await capture.flush()
        draws = random.Random(7)
        expected = [f"prompt number {i}" for i in range(400) if draws.random() < 0.3]
        kept = [item.prompt async for batch in store.batches() for item in batch]
        assert sorted(kept) == sorted(expected)
        assert 80 < len(kept) < 160
    finally:
        await store.close()


def lost(metrics: Metrics) -> dict[str, float]:
    """uniroute_capture_lost_total by reason."""
    return {s.labels["reason"]: s.value for family in metrics.capture_lost.collect() for s in family.samples
            if s.name == "uniroute_capture_lost_total"}


def test_every_capture_loss_reason_is_exposed_at_zero_before_any_loss():
    """Prometheus' increase() takes a series' first sample as its start: a series first scraped at
    1 would hide the first (often the only) loss from the dashboard panel and the alert. So for
    unmet targets and far prompts."""
    metrics = Metrics()
    assert lost(metrics) == {"backlog": 0, "store": 0, "flush": 0}
    for counter, label in ((metrics.target_unmet, "kind"), (metrics.drift_prompts, "far")):
        values = {s.labels[label]: s.value for family in counter.collect() for s in family.samples
                  if s.name.endswith("_total")}
        assert set(values) == {"kind": {"budget", "quality"}, "far": {"true", "false"}}[label]
        assert not any(values.values())


async def test_a_sample_the_store_refuses_is_counted_lost():
    metrics = Metrics()
    capture = Capture(CaptureConfig(sample_rate=1.0), RedisCaptureStore(f"redis://127.0.0.1:{closed_port()}", "x:"),
                      metrics=metrics)
    capture.offer("a prompt", 0)
    await capture.flush()
    assert lost(metrics) == {"backlog": 0, "store": 1, "flush": 0}


async def test_a_locked_store_bounds_the_writes_waiting_and_does_not_hold_shutdown(tmp_path: Path):
    # Another process holding SQLite's write lock makes each write wait out the 5 s busy timeout,
    # one at a time: every sampled request used to add a waiting task and its prompt, without
    # limit, and shutdown waited for them all (5 s each).
    store = SQLiteCaptureStore(tmp_path / "locked.db")
    await store.start()
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held as a backup or a CLI session would
        metrics = Metrics()
        capture = Capture(CaptureConfig(sample_rate=1.0), store, metrics=metrics)
        for i in range(MAX_PENDING_WRITES + 500):
            capture.offer(f"prompt number {i}", 0)
        assert (len(capture._writes), capture.dropped) == (MAX_PENDING_WRITES, 500)
        await capture.flush(timeout_s=0.1)
        assert not capture._writes  # every write waiting was dropped, not waited out
        # and /metrics says so (the log said it once, at the first sample dropped)
        assert lost(metrics) == {"backlog": 500, "store": 0, "flush": MAX_PENDING_WRITES}
        holder.execute("ROLLBACK")
        capture.offer("after the lock", 0)  # the store takes samples again once it is free
        await capture.flush()
        kept = [item.prompt async for batch in store.batches() for item in batch]
        # the one write already running when the lock went (in the store's thread) may have landed
        assert "after the lock" in kept and set(kept) <= {"after the lock", "prompt number 0"}
    finally:
        holder.close()
        await store.close()
