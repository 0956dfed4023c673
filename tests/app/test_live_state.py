"""Fitting a running gateway to its own traffic, end to end in the demo setup: capture routed
Arena prompts, export them, build a 4-cluster state and a representative set (reference answers
from a demo model, through the gateway) from the export, apply both live, and route on without
a failed request while every model is re-profiled; then the same with two replicas on one Redis.

The demo models that have recorded Arena answers (the seven LLMs RouterBench and arena-bench-v1
share; the replay upstream tells a profiling gateway it has no answer for the others, which
could never be ready on an Arena set) were registered from precomputed scores on the RouterBench
set; on the new set they are profiled for real: the replay upstream answers with their recorded
answers (an item a model has no recorded answer to counts as unanswered) and a judge upstream in OpenAI's wire format rates each answer
(1-10, `[[n]]`, derived from a hash of the answer) for the `llm_judge:rating` items.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Self

import httpx
import pytest
import redis
from fastapi import FastAPI, Request

from app.cli.main import main
from app.demo.arena import ARENA_DIR
from app.demo.replay_upstream import (
    CannedAnswer,
    ChatCompletionBody,
    chat_request,
    response_body,
)
from router_core.repset import load_repset
from router_core.state import RouterState
from tests.support.servers import serve

# The project's copy of the arena-bench-v1 prompts (app/demo/data/arena_bench_v1, see its README).
ARENA = ARENA_DIR / "prompts.jsonl"
ADMIN = "live-state-admin"
AUTH = {"authorization": f"Bearer {ADMIN}"}
REFERENCE_MODEL = "gpt-4-1106-preview"
ANSWER_START, ANSWER_END = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"


def arena_prompts(n: int = 120) -> list[str]:
    return [json.loads(line)["prompt"] for line in ARENA.read_text().splitlines()[:n]]


class JudgeUpstream:
    """Rates the answer in an arena-bench judge prompt 1-10 by a hash of it; counts the ratings."""

    def __init__(self, hold_after: int | None = None) -> None:
        """With `hold_after`, ratings past that many wait until `release()`. (As a registered
        model, the judge is also asked the items themselves: those calls are not ratings.)"""
        self.calls = 0
        self.hold_after = hold_after
        self._gate = threading.Event()
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict:
            req = chat_request(ChatCompletionBody.model_validate(await request.json()))
            if ANSWER_START not in req.prompt:
                return response_body(req, CannedAnswer.for_request(req, "I only judge."))
            self.calls += 1
            if self.hold_after is not None and self.calls > self.hold_after:
                await asyncio.to_thread(self._gate.wait)
            answer = req.prompt.split(ANSWER_START, 1)[-1].split(ANSWER_END, 1)[0]
            rating = 1 + int(hashlib.sha256(answer.encode()).hexdigest(), 16) % 10
            verdict = f"Compared with the reference. Rating: [[{rating}]]"
            return response_body(req, CannedAnswer.for_request(req, verdict))


    def release(self) -> None:
        self._gate.set()


@pytest.fixture
def arena_models(demo_configs, arena) -> list:
    """The demo models with recorded Arena answers."""
    return [c for c in demo_configs if c.name in arena.answers]


@pytest.fixture
def judge(model_config):
    """(the judge upstream, its model config): registered, never the best choice for routing."""
    upstream = JudgeUpstream()
    with serve(upstream.app) as url:
        yield upstream, model_config("judge", url + "/v1", score=0.0, per_request=10.0)


def chat(base_url: str, prompt: str, model: str = "uniroute") -> httpx.Response:
    return httpx.post(base_url + "/v1/chat/completions", json={"model": model, "messages": [
        {"role": "user", "content": prompt}]}, timeout=60)


def send_all(base_urls: list[str], prompts: list[str]) -> None:
    """Route every prompt (in turn through each gateway), one after another so the export keeps
    their order (K-means depends on it); each must succeed."""
    codes = [chat(base_urls[i % len(base_urls)], p).status_code for i, p in enumerate(prompts)]
    assert codes == [200] * len(prompts)


def build_from_export(gateway: str, work: Path, cache: str) -> tuple[Path, Path]:
    """Export the capture, build a K=4 state and a 10-per-cluster set from it (references from a
    demo model through the gateway); the state folder and the set file."""
    r = httpx.get(gateway + "/admin/capture", params={"format": "jsonl"}, headers=AUTH, timeout=60)
    assert r.status_code == 200
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == 120 and all(set(row) == {"id", "prompt"} for row in rows)
    export = work / "capture.jsonl"
    export.write_text(r.text)
    state_dir, repset = work / "state4", work / "repset.jsonl"
    assert main(["build-state", "--data", str(export), "--clusters", "4", "--embedder", "accurate",
                 "--cache-dir", cache, "--out", str(state_dir)]) == 0
    assert main(["repset", "build", "--data", str(export), "--state", str(state_dir), "--per-cluster", "10",
                 "--out", str(repset), "--cache-dir", cache, "--reference-model", REFERENCE_MODEL,
                 "--url", gateway, "--admin-key", ADMIN]) == 0
    items = load_repset(repset).items
    assert len(items) == 40 and all(i.grader == "llm_judge:rating" for i in items)
    reply = chat(gateway, items[0].prompt, REFERENCE_MODEL).json()["choices"][0]["message"]["content"]
    assert items[0].reference == reply and all(i.reference.strip() for i in items)  # the model's answers
    return state_dir, repset


class Traffic:
    """Routed requests sent one after another through the gateways until stopped; their statuses."""

    def __init__(self, base_urls: list[str], prompts: list[str]) -> None:
        self.statuses: list[int] = []
        self.clusters: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_urls, prompts), daemon=True)

    def _run(self, base_urls: list[str], prompts: list[str]) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                r = chat(base_urls[i % len(base_urls)], prompts[i % len(prompts)])
                self.statuses.append(r.status_code)
                self.clusters.append(int(r.headers.get("x-uniroute-cluster", -1)))
            except httpx.HTTPError:
                self.statuses.append(0)
            i += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


def graded(db: Path, repset: Path) -> int:
    """Graded answers (not unanswered) stored on the set `repset` in the SQLite registry `db`."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM answers WHERE repset_version = ? AND "
                            "json_extract(data, '$.error') IS NULL", (load_repset(repset).version,)).fetchone()[0]


def state_of(base_url: str) -> dict:
    r = httpx.get(base_url + "/admin/state", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def assert_switched(base_url: str, new_version: str, repset: Path, model_names: list[str]) -> None:
    """The gateway routes on the new 4-cluster state, nothing pending, every model ready on it."""
    view = state_of(base_url)
    assert view["state"]["version"] == new_version and view["state"]["k"] == 4 and view["pending"] is None
    assert view["state"]["repset_version"] == load_repset(repset).version
    assert [c["repset_items"] for c in view["clusters"]] == [10, 10, 10, 10]
    assert all(c["graders"] == {"llm_judge:rating": 10} for c in view["clusters"])
    models = {m["name"]: m for m in httpx.get(base_url + "/admin/models", headers=AUTH, timeout=30).json()["data"]}
    for name in model_names:
        assert models[name]["state"] == "ready"
        assert models[name]["profile"]["state_version"] == new_version
        assert models[name]["profile"]["repset_version"] == load_repset(repset).version
    assert view["state"]["routable_models"] == len(model_names)


def test_capture_build_apply_and_route_on_through_the_switch(make_gateway, arena_models, judge, tmp_path,
                                                             shared_cache):
    upstream, judge_config = judge
    models = [*arena_models, judge_config]
    db = tmp_path / "registry.db"
    with make_gateway(models=models, admin_key=ADMIN, judge_model="judge", capture={"sample_rate": 1.0},
                      sqlite_path=str(db)) as gw:
        old_version = state_of(gw)["state"]["version"]
        prompts = arena_prompts()
        send_all([gw], prompts)
        state_dir, repset = build_from_export(gw, tmp_path, shared_cache)
        new_version = RouterState.load(state_dir).version
        seen_pending = []
        with Traffic([gw], prompts) as traffic:
            r = httpx.post(gw + "/admin/state", json={"state_dir": str(state_dir), "repset_path": str(repset)},
                           headers=AUTH, timeout=60)
            assert r.status_code == 202, r.text
            assert r.json()["state_version"] == new_version and r.json()["k"] == 4
            deadline = time.monotonic() + 600
            while (view := state_of(gw))["state"]["version"] != new_version:
                assert time.monotonic() < deadline, f"not switched: {view['pending']}"
                assert view["state"]["version"] == old_version  # still routing on the old state
                if view["pending"] is not None:
                    assert view["pending"]["status"] not in ("stopped", "failed"), json.dumps(view["pending"])
                    seen_pending.append(view["pending"]["progress"])
                time.sleep(0.2)
            time.sleep(0.5)  # some traffic on the new state too
        assert traffic.statuses and set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
        assert max(traffic.clusters) >= 4  # routed on the 10-cluster state during the re-profiling ...
        assert traffic.clusters[-1] < 4  # ... and on the 4-cluster one after the switch
        assert seen_pending and seen_pending[-1]["total"] == 40 * len(models)
        assert upstream.calls == graded(db, repset) > 0.8 * 40 * len(models)  # each answer judged once
        assert_switched(gw, new_version, repset, [m.name for m in models])

        # Another set sharing 35 items: only the 5 new ones are asked, the rest is reused.
        items = load_repset(repset).items
        smaller = tmp_path / "repset-35.jsonl"
        smaller.write_text("".join(line + "\n" for line in repset.read_text().splitlines()[:35]))
        judged = upstream.calls
        r = httpx.post(gw + "/admin/state", json={"state_dir": str(state_dir), "repset_path": str(smaller)},
                       headers=AUTH, timeout=60)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 300
        while state_of(gw)["state"]["repset_items"] != 35:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert upstream.calls == judged  # every item of the smaller set had a stored graded answer
        assert len(items) == 40


def test_two_replicas_on_one_redis_switch_together(make_gateway, arena_models, judge, tmp_path, shared_cache,
                                                   redis_url, redis_prefix):
    _, judge_config = judge
    models = [*arena_models, judge_config]
    shared = {"redis_url": redis_url, "redis_prefix": redis_prefix, "admin_key": ADMIN, "judge_model": "judge",
              "capture": {"sample_rate": 1.0}}
    try:
        with make_gateway(models=models, **shared) as first, make_gateway(models=[], **shared) as second:
            prompts = arena_prompts()
            send_all([first, second], prompts)  # captured through both, into the one Redis
            state_dir, repset = build_from_export(second, tmp_path, shared_cache)
            new_version = RouterState.load(state_dir).version
            with Traffic([first, second], prompts) as traffic:
                r = httpx.post(second + "/admin/state", json={"state_dir": str(state_dir),
                                                              "repset_path": str(repset)}, headers=AUTH, timeout=60)
                assert r.status_code == 202, r.text
                switched: dict[str, float] = {}
                deadline = time.monotonic() + 600
                while len(switched) < 2:
                    assert time.monotonic() < deadline, "not switched"
                    for name, gw in (("first", first), ("second", second)):
                        if name not in switched and state_of(gw)["state"]["version"] == new_version:
                            switched[name] = time.monotonic()
                    time.sleep(0.01)
            assert abs(switched["first"] - switched["second"]) < 1.0
            assert traffic.statuses and set(traffic.statuses) == {200}, sorted(set(traffic.statuses))
            for gw in (first, second):
                assert_switched(gw, new_version, repset, [m.name for m in models])
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{redis_prefix}*"):
            client.delete(key)
        client.close()


def test_a_restart_during_the_migration_resumes_it_asking_only_what_is_missing(make_gateway, arena_models,
                                                                               model_config, tmp_path, shared_cache):
    upstream = JudgeUpstream(hold_after=100)  # the migration stalls after 100 judged answers
    with serve(upstream.app) as url:
        models = [*arena_models, model_config("judge", url + "/v1", score=0.0, per_request=10.0)]
        db = tmp_path / "registry.db"
        settings = {"models": models, "admin_key": ADMIN, "judge_model": "judge", "sqlite_path": str(db)}
        with make_gateway(capture={"sample_rate": 1.0}, **settings) as gw:
            send_all([gw], arena_prompts())
            state_dir, repset = build_from_export(gw, tmp_path, shared_cache)
            new_version = RouterState.load(state_dir).version
            r = httpx.post(gw + "/admin/state", json={"state_dir": str(state_dir), "repset_path": str(repset)},
                           headers=AUTH, timeout=60)
            assert r.status_code == 202
            deadline = time.monotonic() + 300
            while upstream.calls < 100 + 8:  # stalled, with profile_concurrency calls held
                assert time.monotonic() < deadline
                time.sleep(0.1)
            pending = state_of(gw)["pending"]
            assert pending["status"] == "profiling"
        before_restart = graded(db, repset)
        assert 50 < before_restart <= 100
        upstream.release()
        before = upstream.calls
        with make_gateway(**settings) as gw:
            deadline = time.monotonic() + 600
            while state_of(gw)["state"]["version"] != new_version:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert_switched(gw, new_version, repset, [m.name for m in models])
        # Only the answers not graded before the restart were judged (so asked) again.
        assert upstream.calls - before == graded(db, repset) - before_restart
