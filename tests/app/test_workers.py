"""`uniroute serve` with two worker processes on one real socket, over the SQLite registry (the
default) and over Redis: a model registered through one request is routed by both workers, one
scrape of /metrics sums both workers' counters, the budget guard counts both workers' spend, the
start-up work (registering a configured model, which starts its profiling job) happens once, and
a worker that dies is replaced, and workers whose supervisor is killed stop; a router state
applied through one worker is routed on by both."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.runtime.workers import bind
from router_core.shipped import state_path
from router_core.state import RouterState
from tests.app.conftest import ROUTERBENCH_SETTINGS
from tests.app.test_demo_command import alive
from tests.support.workers import Served, serve_workers

ADMIN = "workers-admin-key"
AUTH = {"authorization": f"Bearer {ADMIN}"}
PROMPT = "Which gas do plants take in for photosynthesis? A. oxygen B. carbon dioxide C. helium D. neon"
CHAT = {"model": "uniroute:0", "messages": [{"role": "user", "content": PROMPT}]}


def gateway_env(tmp_path: Path, shared_cache: str, *configured: dict, **extra: str) -> dict[str, str]:
    """`uniroute serve`'s environment: the `configured` models registered at start, on a registry
    of its own, with the admin API and the budget guard on."""
    return {**os.environ, "UNIROUTE_SQLITE_PATH": str(tmp_path / "registry.db"), "UNIROUTE_CACHE_DIR": shared_cache,
            "UNIROUTE_STATE_DIR": ROUTERBENCH_SETTINGS["state_dir"],
            "UNIROUTE_REPSET_PATH": ROUTERBENCH_SETTINGS["repset_path"], "UNIROUTE_ADMIN_KEY": ADMIN,
            "UNIROUTE_MODELS": json.dumps(configured), "UNIROUTE_BUDGET__TARGET": "1000",
            "UNIROUTE_LOG_LEVEL": "info", **extra}


def samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def check_two_workers(served: Served, replay_url: str, demo_configs, repset_ids: list[str]) -> None:
    """What both variants must show (see the module docstring)."""
    # The configured model was registered once, by one worker: one profiling job.
    jobs = served.on_new_connection(("GET", "/admin/jobs", None))[1][0].json()["data"]
    assert [j["model"] for j in jobs] == ["configured"], jobs

    # Registered through one request (one worker); right everywhere and cheap: the first choice.
    body = {"name": "newcomer", "base_url": replay_url, "upstream_model": demo_configs[0].upstream_model,
            "cost": {"per_request": 1e-9}, "scores": {pid: 1.0 for pid in repset_ids}}
    registrar, (created,) = served.on_new_connection(("POST", "/admin/models", body))
    assert created.status_code == 202, created.text
    registered_at = time.monotonic()
    sent: list[httpx.Response] = []
    routed = served.each_worker(
        2, ("POST", "/v1/chat/completions", CHAT), timeout_s=30, sent=sent,
        accept=lambda r: r[0].status_code == 200 and r[0].headers["x-uniroute-model"] == "newcomer")
    took = time.monotonic() - registered_at
    print(f"\nregistered through worker {registrar}; routed by workers {sorted(routed)} within {took:.2f} s")
    assert registrar in routed

    # More traffic over both workers, counting what each answered.
    answered: Counter[int] = Counter()
    while min(answered[pid] for pid in routed) < 3:
        pid, (r,) = served.on_new_connection(("POST", "/v1/chat/completions", CHAT))
        assert r.status_code == 200 and r.headers["x-uniroute-model"] == "newcomer", r.text
        answered[pid] += 1
    # Until the other worker has seen the registration (it looks at the file every WATCH_S; Redis
    # tells it), it routes as before: those answers count under the model that gave them.
    by_model = Counter(r.headers["x-uniroute-model"] for r in sent if r.status_code == 200)
    by_model["newcomer"] += sum(answered.values())
    total = sum(by_model.values())
    print(f"requests answered per worker after both routed to it: {dict(answered)}; answers by model: {dict(by_model)}")

    # One scrape, any worker: both workers' counts, summed.
    text = served.on_new_connection(("GET", "/metrics", None))[1][0].text
    chat = {s.labels["model"]: s.value for s in samples(text, "uniroute_requests_total")
            if s.labels["route"] == "chat" and s.labels["status"] == "200"}
    assert {model: n for model, n in chat.items() if n} == dict(by_model), chat
    decisions = {s.labels["model"]: s.value for s in samples(text, "uniroute_routing_decisions_total")}
    assert decisions.get("newcomer", 0) >= by_model["newcomer"]
    by_state = {s.labels["state"]: s.value for s in samples(text, "uniroute_models")}
    assert sum(by_state.values()) == 2 and by_state["ready"] >= 1, by_state  # the workers' one view, not a sum

    # The budget guard counts every worker's spend: each worker sees all the answered requests.
    def budgets_agree() -> bool:
        seen = served.each_worker(2, ("GET", "/admin/budget", None))
        return all(r[0].json()["scopes"][0]["requests"] >= total for r in seen.values())

    deadline = time.monotonic() + 10
    while not budgets_agree():
        assert time.monotonic() < deadline, "a worker's budget guard missed the other's spend"


def test_two_workers_on_sqlite_share_models_metrics_and_budget_and_replace_a_dead_worker(
        tmp_path, shared_cache, replay_url, demo_configs, repset_ids):
    configured = {"name": "configured", "base_url": replay_url, "upstream_model": demo_configs[1].upstream_model,
                  "cost": {"per_request": 0.01}}
    with serve_workers(gateway_env(tmp_path, shared_cache, configured), tmp_path / "serve.log",
                       headers=AUTH) as served:
        check_two_workers(served, replay_url, demo_configs, repset_ids)
        before = {s.labels["model"]: s.value for s in samples(
            served.on_new_connection(("GET", "/metrics", None))[1][0].text, "uniroute_requests_total")
            if s.labels["route"] == "chat" and s.labels["status"] == "200"}

        # A worker killed outright is reported and replaced; its counts stay in the sum.
        victim = served.on_new_connection()[0]
        os.kill(victim, signal.SIGKILL)
        pids = served.each_worker(2, ("GET", "/readyz", None), timeout_s=300,
                                  accept=lambda r: r[0].status_code == 200)
        assert victim not in pids
        assert f"worker {victim} exited with code -9" in (tmp_path / "serve.log").read_text()
        after = {s.labels["model"]: s.value for s in samples(
            served.on_new_connection(("GET", "/metrics", None))[1][0].text, "uniroute_requests_total")
            if s.labels["route"] == "chat" and s.labels["status"] == "200"}
        assert after == before

        # SIGTERM stops the supervisor and every worker.
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(60) == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


@pytest.mark.redis
def test_two_workers_on_redis_share_models_metrics_and_budget(
        tmp_path, shared_cache, replay_url, demo_configs, repset_ids, redis_url, redis_prefix):
    configured = {"name": "configured", "base_url": replay_url, "upstream_model": demo_configs[1].upstream_model,
                  "cost": {"per_request": 0.01}}
    env = gateway_env(tmp_path, shared_cache, configured, UNIROUTE_REDIS_URL=redis_url,
                      UNIROUTE_REDIS_PREFIX=redis_prefix)
    try:
        with serve_workers(env, tmp_path / "serve.log", headers=AUTH) as served:
            check_two_workers(served, replay_url, demo_configs, repset_ids)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{redis_prefix}*"))
        if keys:
            client.delete(*keys)


def test_workers_stop_by_themselves_when_their_supervisor_is_killed(tmp_path, shared_cache):
    env = {**os.environ, "UNIROUTE_SQLITE_PATH": str(tmp_path / "registry.db"), "UNIROUTE_CACHE_DIR": shared_cache,
           "UNIROUTE_STATE_DIR": ROUTERBENCH_SETTINGS["state_dir"],
           "UNIROUTE_REPSET_PATH": ROUTERBENCH_SETTINGS["repset_path"]}
    with serve_workers(env, tmp_path / "serve.log") as served:
        pids = set(served.each_worker(2, ("GET", "/healthz", None)))
        served.proc.kill()
        served.proc.wait(30)
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived their supervisor"
            time.sleep(0.1)



async def test_connections_on_the_workers_socket_have_nagle_off():
    """uvicorn writes a response's head, then its body: with Nagle's algorithm on, the body waits
    for the client's delayed ACK (40 ms on Linux) on every kept-alive connection. Each worker
    accepts on the supervisor's socket as uvicorn does (`loop.create_server(sock=...)`), on
    asyncio's loop where uvloop is not installed (uvloop turns Nagle off on any socket)."""
    loop = asyncio.get_running_loop()
    nodelay: asyncio.Future[int] = loop.create_future()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            nodelay.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    sock = bind("127.0.0.1", 0)
    async with await loop.create_server(Accepted, sock=sock):
        _, writer = await asyncio.open_connection(*sock.getsockname())
        assert await asyncio.wait_for(nodelay, 10) != 0
        writer.close()


def test_a_state_applied_through_one_worker_reaches_the_other(tmp_path, shared_cache, model_config, replay_url,
                                                               demo_configs):
    # Another real state (the shipped clusters, fewer of them) on the same representative set; the
    # model answers as a RouterBench LLM did (the replay upstream), for the profile the state asks.
    shipped = RouterState.load(state_path(ROUTERBENCH_SETTINGS["state_dir"]))
    smaller = dataclasses.replace(shipped, centroids=shipped.centroids[:6].copy())
    smaller.save(tmp_path / "state-6")
    configured = model_config("scored", replay_url, upstream_model=demo_configs[1].upstream_model,
                              score=0.9).model_dump(mode="json")
    with serve_workers(gateway_env(tmp_path, shared_cache, configured), tmp_path / "serve.log",
                       headers=AUTH) as served:
        old = served.on_new_connection(("GET", "/admin/state", None))[1][0].json()["state"]["version"]
        body = {"state_dir": str(tmp_path / "state-6"), "repset_path": ROUTERBENCH_SETTINGS["repset_path"]}
        applier, (r,) = served.on_new_connection(("POST", "/admin/state", body))
        assert r.status_code == 202, r.text
        assert r.json()["state_version"] == smaller.version != old and r.json()["k"] == 6
        route = {"model": "uniroute", "messages": [{"role": "user", "content": PROMPT}]}
        switched = served.each_worker(
            2, ("GET", "/admin/state", None), ("POST", "/v1/route", route), timeout_s=300,
            accept=lambda rs: rs[0].json()["state"]["version"] == smaller.version)
        assert applier in switched
        for state, routed in switched.values():
            assert state.json()["state"]["routable_models"] == 1
            assert routed.status_code == 200 and 0 <= routed.json()["cluster"] < 6, routed.text
