"""The admin API: register an LLM the router has never seen, profile it through its real HTTP
upstream, and route to it at once; keys guard the API and never leak."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import urllib.parse

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from app.demo import ROUTERBENCH_DIR
from app.runtime.config import ModelConfig
from router_core.datasets import load_routerbench_responses
from router_core.grading import grade
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, ROUTERBENCH_REPSET
from tests.app.test_workers import samples
from tests.support.clients import client, wait_for
from tests.support.fault_upstream import Fault, closed_port
from tests.support.sqlite_lock import write_lock_held

ADMIN = "admin-secret-key"
AUTH = {"authorization": f"Bearer {ADMIN}"}


def admin(base_url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, base_url + "/admin" + path, headers=AUTH, timeout=30, **kwargs)


def wait_job(base_url: str, job_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = admin(base_url, "GET", f"/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running: {job}")


@pytest.fixture(scope="module")
def newcomer(routerbench) -> str:
    """The RouterBench LLM registered during the test: the one whose accuracy ranks in the middle
    (strong on some clusters, weak on others)."""
    acc = np.nanmean(routerbench.scores, axis=0)
    return routerbench.models[int(np.argsort(acc)[len(acc) // 2])]


def test_unseen_model_is_profiled_and_routed_to_at_once(make_gateway, demo_configs, replay_url, routerbench,
                                                        newcomer, test_split_ids):
    others = [m for m in demo_configs if m.name != newcomer]
    with make_gateway(models=others, admin_key=ADMIN) as gw:
        assert newcomer not in [m.id for m in OpenAI(base_url=gw + "/v1", api_key="x").models.list()]
        j = routerbench.models.index(newcomer)
        price = float(np.nanmean(routerbench.costs[:, j]))
        r = admin(gw, "POST", "/models", json={"name": newcomer, "base_url": replay_url,
                                                "upstream_model": newcomer, "cost": {"per_request": price}})
        assert r.status_code == 202, r.text
        job = wait_job(gw, r.json()["job_id"])
        assert job["state"] == "done" and job["done"] == job["total"] and job["errors"] == 0

        shown = admin(gw, "GET", f"/models/{newcomer}").json()
        assert shown["state"] == "ready"
        assert "api_key" not in shown or shown.get("api_key") is None
        clusters = shown["profile"]["clusters"]
        assert {"error", "count"} <= set(clusters[0])
        assert newcomer in [m.id for m in OpenAI(base_url=gw + "/v1", api_key="x").models.list()]

        # Grades of its real answers agree with RouterBench's recorded labels.
        repset = load_repset(ROUTERBENCH_REPSET)
        row = {pid: i for i, pid in enumerate(routerbench.ids)}
        responses = load_routerbench_responses(ROUTERBENCH_DIR)[newcomer]
        agree = [grade(it.grader, responses.get(it.prompt, ""), it.reference) == routerbench.scores[row[it.id], j]
                 for it in repset.items]
        assert np.mean(agree) >= 0.95

        # It receives prompts of the clusters where its predicted error beats every other model's
        # once costs are out of the question.
        errors = np.array([c["error"] for c in clusters])
        others_best = np.min([[c["error"] for c in admin(gw, "GET", f"/models/{m.name}").json()["profile"]["clusters"]]
                              for m in others], axis=0)
        strong = np.flatnonzero(errors < others_best)
        routed = []
        for pid in test_split_ids[:300]:
            d = httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "messages": [
                {"role": "user", "content": routerbench.prompts[row[pid]]}]}, timeout=30).json()
            routed.append((d["cluster"], d["model"]))
        in_strong = [m for k, m in routed if k in set(strong.tolist())]
        if in_strong:
            assert all(m == newcomer for m in in_strong)
        assert all(m != newcomer for k, m in routed if k not in set(strong.tolist()))


def test_precomputed_scores_register_without_calling_the_upstream(make_gateway, fault_upstream, repset_ids):
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        scores = {pid: 1.0 for pid in repset_ids[:50]}
        r = admin(gw, "POST", "/models", json={"name": "pre", "base_url": url, "cost": {"per_request": 1},
                                                "scores": scores})
        assert r.status_code == 202 and r.json()["job_id"] is None
        assert admin(gw, "GET", "/models/pre").json()["state"] == "ready"
        assert sum(upstream.calls.values()) == 0
        bad = admin(gw, "POST", "/models", json={"name": "bad", "base_url": url, "cost": {"per_request": 1},
                                                  "scores": {"not-a-prompt": 1.0}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "scores"


def test_a_base_url_without_v1_fails_the_profiling_job_at_once_saying_so(make_gateway, fault_upstream):
    """The fault upstream serves /v1/chat/completions only, as vLLM does, and answers another path
    with FastAPI's 404, `{"detail": "Not Found"}`. Before, every prompt failed as `not_found` (the
    upstream "does not know the model"), and the job backed off and paused, to resume and fail again."""
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN, profile_backoff_s=0.01, profile_backoff_max_s=0.05) as gw:
        r = admin(gw, "POST", "/models", json={"name": "m", "base_url": url.removesuffix("/v1"),
                                                "cost": {"per_request": 1}, "job": {"limit": 20}})
        job = wait_job(gw, r.json()["job_id"])
        assert (job["state"], job["done"]) == ("failed", 0)
        assert "base_url, which likely lacks the /v1" in job["error"] and "does not know" not in job["error"]
        model = admin(gw, "GET", "/models/m").json()
        assert (model["state"], model["error"]) == ("failed", job["error"])
        # the operator fixes the base_url as the reason says and profiles again
        assert admin(gw, "PATCH", "/models/m", json={"base_url": url}).status_code == 200
        again = wait_job(gw, admin(gw, "POST", "/models/m/reprofile", json={"limit": 4}).json()["job_id"])
        assert again["state"] == "done" and admin(gw, "GET", "/models/m").json()["state"] == "ready"


@pytest.mark.parametrize("status,field,said", [(401, "api_key_env", "refused the gateway's credentials"),
                                               (403, "api_key_env", "refused the gateway's credentials"),
                                               (404, "upstream_model", "does not know the model")])
def test_a_refused_key_or_an_unknown_model_name_fails_the_profiling_job_at_once_saying_what_to_fix(
        make_gateway, fault_upstream, status, field, said):
    """A key the upstream refuses, or a model name it does not know, refuses every prompt however
    long the job waits. Before, each prompt failed in turn, the job backed off, paused after
    `profile_pause_after` failures in a row, resumed by itself five times and failed again each
    time: the operator learnt of the wrong key from a paused job minutes later."""
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN, profile_backoff_s=0.01, profile_backoff_max_s=0.05,
                      profile_concurrency=2) as gw:
        r = admin(gw, "POST", "/models", json={"name": "m", "base_url": url, "upstream_model": f"m:status={status}",
                                                "cost": {"per_request": 1}, "job": {"limit": 20}})
        job = wait_job(gw, r.json()["job_id"])
        assert (job["state"], job["done"]) == ("failed", 0)
        assert said in job["error"] and f'{{"{field}": ...}}' in job["error"]
        # profiling does not disable a model (its job fails): its error does not say it is taken out of routing
        assert "taken out of routing" not in job["error"]
        assert upstream.calls[f"m:status={status}"] <= 2  # the prompts in flight at the first refusal
        model = admin(gw, "GET", "/models/m").json()
        assert (model["state"], model["error"]) == ("failed", job["error"])
        # the operator fixes the registration and profiles again
        assert admin(gw, "PATCH", "/models/m", json={"upstream_model": "m"}).status_code == 200
        again = wait_job(gw, admin(gw, "POST", "/models/m/reprofile", json={"limit": 4}).json()["job_id"])
        assert again["state"] == "done" and admin(gw, "GET", "/models/m").json()["state"] == "ready"


def test_admin_api_needs_the_admin_key_and_is_off_without_one(make_gateway):
    with make_gateway(admin_key=ADMIN, api_keys=["client-key"]) as gw:
        assert httpx.get(gw + "/admin/models", timeout=5).status_code == 401
        wrong = httpx.get(gw + "/admin/models", headers={"authorization": "Bearer client-key"}, timeout=5)
        assert wrong.status_code == 401
        assert admin(gw, "GET", "/models").status_code == 200
    with make_gateway() as gw:
        assert admin(gw, "GET", "/models").status_code == 404


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def registry_settings(request) -> dict:
    """A gateway's registry settings for each backend: make_gateway's SQLite file, or the shared
    Redis under a prefix of the test's own (its keys deleted after)."""
    if request.param == "sqlite":
        return {}
    url, prefix = request.getfixturevalue("shared_redis")
    return {"redis_url": url, "redis_prefix": prefix}


def test_admin_patches_racing_each_other_all_land_and_none_brings_back_a_deleted_model(
        make_gateway, fault_upstream, model_config, registry_settings):
    upstream, url = fault_upstream
    capabilities = ("vision", "tools", "json_schema")
    with make_gateway(models=[model_config("a", url)], admin_key=ADMIN, **registry_settings) as gw:

        async def race() -> None:
            async with httpx.AsyncClient(base_url=gw + "/admin", headers=AUTH, timeout=30) as admin_api:
                for _ in range(5):
                    answers = await asyncio.gather(*(admin_api.patch("/models/a", json={"capabilities": {c: False}})
                                                     for c in capabilities))
                    assert [r.status_code for r in answers] == [200] * len(capabilities)
                    assert (await admin_api.get("/models/a")).json()["capabilities"] == dict.fromkeys(capabilities,
                                                                                                        False)
                    await admin_api.patch("/models/a", json={"capabilities": dict.fromkeys(capabilities, True)})
                patched, deleted = await asyncio.gather(admin_api.patch("/models/a", json={"enabled": False}),
                                                        admin_api.delete("/models/a"))
                assert deleted.status_code == 200 and patched.status_code in (200, 404), patched.text
                assert (await admin_api.get("/models/a")).status_code == 404

        asyncio.run(race())


@pytest.mark.parametrize("body,param", [
    ({"name": "x", "base_url": "ftp://host/v1", "cost": {"per_request": 1}}, "base_url"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {}}, "cost"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": -1}}, "cost.per_request"),
    ({"name": "x", "base_url": "http://h/v1"}, "cost"),
    ({"name": "", "base_url": "http://h/v1", "cost": {"per_request": 1}}, "name"),
    # sent in the x-uniroute-model header of every answer, which only ASCII can be
    ({"name": "模型", "base_url": "http://h/v1", "cost": {"per_request": 1}}, "name"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "api_key_env": "not a name"}, "api_key_env"),
    # the gateway's own configuration: its client keys would be sent to a server the admin names
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "api_key_env": "UNIROUTE_API_KEYS"},
     "api_key_env"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "api_key_env": "uniroute_redis_url"},
     "api_key_env"),
    # stored with the job as JSON, whose integers the registry writes in 64 bits
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "job": {"limit": 2**64}}, "job.limit"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "job": {"seed": -2**64}}, "job.seed"),
    ({"name": "x", "base_url": "http://h/v1", "cost": {"per_request": 1}, "job": {"max_tokens": 10**30}},
     "job.max_tokens"),
])
def test_bad_registrations_are_400_and_register_nothing(make_gateway, body, param):
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        r = admin(gw, "POST", "/models", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert admin(gw, "GET", "/models").json()["data"] == []


def test_a_model_cannot_be_patched_to_send_the_gateways_own_keys_upstream(make_gateway, fault_upstream, model_config):
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("a", url)], admin_key=ADMIN) as gw:
        r = admin(gw, "PATCH", "/models/a", json={"api_key_env": "UNIROUTE_ADMIN_KEY"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "api_key_env", r.text
        assert "configures the gateway itself" in r.json()["error"]["message"]
        assert admin(gw, "GET", "/models/a").json()["api_key_env"] is None
        assert admin(gw, "PATCH", "/models/a", json={"api_key_env": "UNIROUTE_TEST_UPSTREAM_API_KEY"}).status_code == 200


def test_patch_disable_and_delete_change_routing(make_gateway, fault_upstream, model_config):
    upstream, url = fault_upstream
    with make_gateway(models=[model_config("a", url, score=0.9), model_config("b", url, score=0.5)],
                      admin_key=ADMIN) as gw:
        route = lambda: httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10).json()["model"]
        assert route() == "a"
        assert admin(gw, "PATCH", "/models/a", json={"enabled": False}).json()["state"] == "disabled"
        assert route() == "b"
        admin(gw, "PATCH", "/models/a", json={"enabled": True})
        assert route() == "a"
        patched = admin(gw, "PATCH", "/models/a", json={"cost": {"per_request": 50}}).json()
        assert patched["cost"]["per_request"] == 50
        assert admin(gw, "DELETE", "/models/a").status_code == 200
        assert admin(gw, "GET", "/models/a").status_code == 404
        assert route() == "b"


def test_readyz_and_metrics_say_the_sqlite_registry_is_unavailable_while_its_writes_fail_and_available_again_after(
        make_gateway, fault_upstream, model_config, tmp_path):
    # /readyz said `registry_available: true` for as long as the file was open, while every write
    # answered 503 (the file locked by another process past its busy timeout, or a full disk).
    # /metrics did not say it at all, so no dashboard or alert could.
    _, url = fault_upstream
    db = tmp_path / "registry.db"
    with make_gateway(models=[model_config("a", url)], admin_key=ADMIN, sqlite_path=str(db)) as gw:
        def registry_available() -> bool:
            ready = httpx.get(gw + "/readyz", timeout=10)
            assert ready.status_code == 200  # routing goes on from the snapshot either way
            return ready.json()["registry_available"]

        def scraped_available() -> list[float]:
            return [s.value for s in samples(httpx.get(gw + "/metrics", timeout=10).text,
                                             "uniroute_registry_available")]

        assert registry_available() and scraped_available() == [1.0]
        with write_lock_held(db):
            refused = admin(gw, "PATCH", "/models/a", json={"enabled": False})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "registry_unavailable"
            assert not registry_available()
            assert scraped_available() == [0.0]
        assert wait_for(registry_available, 30), "the registry never said it was available again"
        assert wait_for(lambda: scraped_available() == [1.0], 30), "/metrics never said it was available again"
        assert admin(gw, "PATCH", "/models/a", json={"enabled": False}).status_code == 200


def test_a_config_model_with_enabled_false_is_never_routed_listed_or_served_even_if_it_was_routable(
        make_gateway, fault_upstream, model_config, tmp_path):
    # The demo registered its judge routable with score 0 everywhere; the support guard then
    # ranked it first wherever the recorded LLMs had no answers, and "hi" got the judge's refusal.
    upstream, url = fault_upstream
    db = str(tmp_path / "kept.db")
    worker, judge = model_config("worker", url, score=0.5), model_config("judge", url, score=1.0, per_request=0.01)
    route = lambda gw: httpx.post(gw + "/v1/route", json={"model": "uniroute:0", "messages": [
        {"role": "user", "content": "hi"}]}, timeout=10).json()
    with make_gateway(models=[worker, judge], sqlite_path=db, admin_key=ADMIN) as gw:
        assert route(gw)["model"] == "judge"  # registered routable, as before
    with make_gateway(models=[worker, judge.model_copy(update={"enabled": False})], sqlite_path=db,
                      admin_key=ADMIN) as gw:
        shown = admin(gw, "GET", "/models/judge").json()
        assert (shown["enabled"], shown["state"], shown["profile"]) == (False, "disabled", None)
        decision = route(gw)
        assert decision["model"] == "worker" and [c["model"] for c in decision["candidates"]] == ["worker"]
        assert "judge" not in [m.id for m in client(gw).models.list()]
        with pytest.raises(openai.NotFoundError):
            client(gw).chat.completions.create(model="judge", messages=[{"role": "user", "content": "hi"}])
        # nor can it be enabled by hand (it was then served by name, its state still `disabled`)
        refused = admin(gw, "PATCH", "/models/judge", json={"enabled": True})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "disabled_by_config"
        assert admin(gw, "GET", "/models/judge").json()["enabled"] is False
        assert route(gw)["model"] == "worker"
        assert "judge" not in [m.id for m in client(gw).models.list()]
    fresh = ModelConfig(name="judge", base_url=url, enabled=False)  # first start: registered disabled, unprofiled
    with make_gateway(models=[worker, fresh], admin_key=ADMIN) as gw:
        shown = admin(gw, "GET", "/models/judge").json()
        assert (shown["enabled"], shown["state"], shown["profile"]) == (False, "disabled", None)
        assert route(gw)["model"] == "worker"
    assert "judge" not in {r.model for r in upstream.received}  # the refused call never left the gateway


@pytest.mark.parametrize("scores", [None, "{not json", '{"no-such-prompt": 1.0}'])
def test_a_config_model_whose_scores_file_cannot_be_used_fails_alone_and_the_others_route(
        make_gateway, fault_upstream, model_config, tmp_path, scores):
    """A scores_file path mistyped, not JSON, or naming prompts the set lacks: before, every
    worker's start failed on it (a traceback each) and the gateway answered 503 for ever."""
    _, url = fault_upstream
    broken = model_config("broken", url, score=0.9)
    path = tmp_path / "broken-scores.json"
    if scores is not None:
        path.write_text(scores)
    broken = broken.model_copy(update={"scores_file": str(path)})
    db = str(tmp_path / "registry.db")
    with make_gateway(models=[broken, model_config("fine", url, score=0.5)], admin_key=ADMIN, sqlite_path=db) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-uniroute-model"] == "fine"
        shown = admin(gw, "GET", "/models/broken").json()
    assert shown["state"] == "failed" and f"scores_file {path} cannot be used" in shown["error"]
    # the file mended, the next start profiles the model from it
    fixed = model_config("broken", url, score=0.9)
    with make_gateway(models=[fixed, model_config("fine", url, score=0.5)], admin_key=ADMIN, sqlite_path=db) as gw:
        assert admin(gw, "GET", "/models/broken").json()["state"] == "ready"


def test_an_edited_config_file_moves_its_models_at_the_next_start_and_keeps_their_profiles(
        make_gateway, fault_upstream, model_config, tmp_path, caplog):
    """Before, a config model the registry already held kept its first start's address, name,
    key variable and price: an edited config file was ignored without a word."""
    upstream, url = fault_upstream
    db = str(tmp_path / "kept.db")
    worker = model_config("worker", f"http://127.0.0.1:{closed_port()}/v1", score=0.5)
    judge = ModelConfig(name="judge", base_url=f"http://127.0.0.1:{closed_port()}/v1", enabled=False)
    with make_gateway(models=[worker, judge], sqlite_path=db, admin_key=ADMIN) as gw:
        first = admin(gw, "GET", "/models/worker").json()
    moved = worker.model_copy(update={"base_url": url, "upstream_model": "worker-v2", "api_key_env": "WORKER_KEY",
                                      "cost": worker.cost.model_copy(update={"per_request": 2.0})})
    caplog.set_level(logging.INFO, logger="uniroute")
    with make_gateway(models=[moved, judge.model_copy(update={"base_url": url})], sqlite_path=db,
                      admin_key=ADMIN) as gw:
        now = admin(gw, "GET", "/models/worker").json()
        assert (now["base_url"], now["upstream_model"], now["api_key_env"], now["cost"]["per_request"]) == (
            url, "worker-v2", "WORKER_KEY", 2.0)
        assert now["profile"] == first["profile"] and now["profiled_at"] == first["profiled_at"]
        assert admin(gw, "GET", "/models/judge").json()["base_url"] == url
        raw = client(gw).chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-uniroute-model"] == "worker" and upstream.received[-1].model == "worker-v2"
    assert "model worker takes the config file's base_url" in caplog.text


def test_a_model_still_being_profiled_answers_by_name_with_no_predicted_error(make_gateway, fault_upstream):
    """Before, its header said `nan` where `/v1/route` says null: it has no profile yet."""
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        job = admin(gw, "POST", "/models", json={"name": "fresh", "base_url": url, "upstream_model": "fresh:delay=0.2",
                                                 "cost": {"per_request": 1}, "job": {"concurrency": 1}}).json()
        raw = client(gw).chat.completions.with_raw_response.create(
            model="fresh", messages=[{"role": "user", "content": "hi"}])
        assert admin(gw, "GET", "/models/fresh").json()["state"] == "profiling"
        assert raw.headers["x-uniroute-model"] == "fresh" and "x-uniroute-predicted-error" not in raw.headers
        assert float(raw.headers["x-uniroute-expected-cost"]) == 1.0
        decision = httpx.post(gw + "/v1/route", json={"model": "fresh", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10).json()
        assert decision["predicted_error"] is None
        admin(gw, "POST", f"/jobs/{job['job_id']}/cancel")


def test_a_models_spend_counts_every_job_it_had_cancelled_ones_too(make_gateway, fault_upstream):
    """Before, a model's spend was its last finished job's: a cancelled job's calls, and the
    jobs before a reprofile, were paid and never shown."""
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        first = admin(gw, "POST", "/models", json={"name": "m", "base_url": url, "upstream_model": "m:delay=0.05",
                                                   "cost": {"per_request": 0.5}, "job": {"concurrency": 1}}).json()
        assert wait_for(lambda: admin(gw, "GET", f"/jobs/{first['job_id']}").json()["done"] >= 3)
        cancelled = admin(gw, "POST", f"/jobs/{first['job_id']}/cancel").json()
        assert wait_for(lambda: admin(gw, "GET", "/models/m").json()["spend"] > 0)
        spent = admin(gw, "GET", f"/jobs/{first['job_id']}").json()["spend"]
        assert spent >= cancelled["spend"] > 0 and admin(gw, "GET", "/models/m").json()["spend"] == spent
        again = admin(gw, "POST", "/models/m/reprofile", json={"limit": 4}).json()
        done = wait_job(gw, again["job_id"])
        assert done["state"] == "done" and done["spend"] == 4 * 0.5
        assert admin(gw, "GET", "/models/m").json()["spend"] == spent + done["spend"]


def test_the_admin_api_names_only_key_variables_it_is_allowed_to(make_gateway, fault_upstream, model_config):
    """Before, an admin token could register a model at its own server with api_key_env naming any
    variable of the host (AWS_SECRET_ACCESS_KEY, a database password) and be sent its value."""
    _, url = fault_upstream
    configured = model_config("a", url).model_copy(update={"api_key_env": "TEAM_OPENAI"})
    body = {"name": "b", "base_url": "http://attacker.example/v1", "cost": {"per_request": 1},
            "scores": {"x": 1.0}}
    with make_gateway(models=[configured], admin_key=ADMIN) as gw:
        for secret in ("AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "openai_api_key"):
            r = admin(gw, "POST", "/models", json={**body, "api_key_env": secret})
            assert r.status_code == 400 and r.json()["error"]["param"] == "api_key_env", r.text
            assert "admin_key_envs (*_API_KEY)" in r.json()["error"]["message"]
            assert admin(gw, "PATCH", "/models/a", json={"api_key_env": secret}).status_code == 400
        assert admin(gw, "GET", "/models/a").json()["api_key_env"] == "TEAM_OPENAI"
        assert admin(gw, "GET", "/models/b").status_code == 404
        # a provider's key by the usual name, or a variable the config file names, is fine
        assert admin(gw, "PATCH", "/models/a", json={"api_key_env": "GROQ_API_KEY"}).status_code == 200
        assert admin(gw, "PATCH", "/models/a", json={"api_key_env": "TEAM_OPENAI"}).status_code == 200
    with make_gateway(models=[], admin_key=ADMIN, admin_key_envs=["AZURE_*"]) as gw:
        ok = admin(gw, "POST", "/models", json={**body, "base_url": url, "api_key_env": "AZURE_OPENAI_KEY"})
        assert ok.status_code == 400 and ok.json()["error"]["param"] == "scores"  # past the key check


def test_upstream_key_never_leaks(make_gateway, fault_upstream, monkeypatch, caplog):
    secret = "sk-very-secret-value-123"
    monkeypatch.setenv("UNIROUTE_TEST_UPSTREAM_API_KEY", secret)
    upstream, url = fault_upstream
    caplog.set_level(logging.DEBUG)
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        r = admin(gw, "POST", "/models", json={"name": "keyed", "base_url": url, "upstream_model": "keyed",
                                                "api_key_env": "UNIROUTE_TEST_UPSTREAM_API_KEY",
                                                "cost": {"per_request": 1}})
        job = wait_job(gw, r.json()["job_id"])
        assert job["state"] == "done"
        reply = OpenAI(base_url=gw + "/v1", api_key="x").chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": "hi"}])
        outputs = [admin(gw, "GET", "/models").text, admin(gw, "GET", "/models/keyed").text,
                   admin(gw, "GET", f"/jobs/{job['id']}").text, httpx.get(gw + "/metrics").text,
                   reply.http_response.text, str(reply.headers), caplog.text]
    assert upstream.received[-1].headers["authorization"] == f"Bearer {secret}"
    for text in outputs:
        assert secret not in text
    assert "UNIROUTE_TEST_UPSTREAM_API_KEY" in outputs[1]


def wait_state(base_url: str, job_id: str, states: tuple[str, ...], timeout_s: float = 120) -> dict:
    """Poll a job until it is in one of `states`."""
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = admin(base_url, "GET", f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def test_reprofile_keeps_the_old_profile_routing_through_outage_cancel_and_spend_cap(make_gateway, fault_upstream):
    upstream, url = fault_upstream
    # no cooldown: this test is about the profile, not about client-traffic health
    with make_gateway(models=[], admin_key=ADMIN, retries=0, cooldown_failures=1000, profile_backoff_s=0.01,
                      profile_backoff_max_s=0.05, profile_pause_after=3, profile_resume_after_s=0) as gw:
        def route() -> str:
            return httpx.post(gw + "/v1/route", json={"model": "uniroute", "messages": [
                {"role": "user", "content": "hi"}]}, timeout=10).json()["model"]

        r = admin(gw, "POST", "/models", json={"name": "m", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 20, "seed": 1}})
        first = wait_job(gw, r.json()["job_id"])
        assert first["state"] == "done" and first["total"] == 20 and first["options"] == {"limit": 20, "seed": 1}
        profile = admin(gw, "GET", "/models/m").json()["profile"]
        assert profile["n_prompts"] == 20 and route() == "m"

        # an outage during a reprofile: the job pauses, the model routes on its old profile
        upstream.set_fault("m", Fault(status=503))
        r = admin(gw, "POST", "/models/m/reprofile", json={"limit": 20, "seed": 1})
        assert r.status_code == 202
        assert admin(gw, "GET", "/models/m").json()["state"] == "ready" and route() == "m"
        paused = wait_state(gw, r.json()["job_id"], ("paused",))
        assert paused["reprofile"] and "failures in a row" in paused["error"] and paused["done"] == 0
        assert admin(gw, "GET", "/models/m/answers").json()["total"] == 20  # stored answers kept
        assert admin(gw, "POST", "/models/m/reprofile").status_code == 409  # one job at a time
        cancelled = admin(gw, "POST", f"/jobs/{paused['id']}/cancel").json()
        assert cancelled["state"] == "cancelled"
        shown = admin(gw, "GET", "/models/m").json()
        assert shown["state"] == "ready" and shown["profile"] == profile and "cancelled" in shown["error"]
        assert route() == "m"

        # a spend cap hit mid-reprofile: the job fails with the reason, the old profile stays
        upstream.set_fault("m", None)
        r = admin(gw, "POST", "/models/m/reprofile", json={"spend_cap": 3, "concurrency": 2})
        capped = wait_job(gw, r.json()["job_id"])
        assert capped["state"] == "failed" and "spend cap 3" in capped["error"] and capped["done"] < capped["total"]
        shown = admin(gw, "GET", "/models/m").json()
        assert shown["state"] == "ready" and shown["profile"] == profile and route() == "m"

        # disabled, then enabled again: back to routing on its profile
        assert admin(gw, "PATCH", "/models/m", json={"enabled": False}).json()["state"] == "disabled"
        assert admin(gw, "PATCH", "/models/m", json={"enabled": True}).json()["state"] == "ready"
        assert route() == "m"

        # a reprofile that completes replaces the profile
        r = admin(gw, "POST", "/models/m/reprofile", json={"limit": 10, "seed": 2})
        assert wait_job(gw, r.json()["job_id"])["state"] == "done"
        assert admin(gw, "GET", "/models/m").json()["profile"]["n_prompts"] == 10
        states = [j["state"] for j in admin(gw, "GET", "/jobs", params={"model": "m"}).json()["data"]]
        assert states == ["done", "cancelled", "failed", "done"]
        # a job that has ended is not cancelled afterwards; one cancelled already answers as it is
        ended = admin(gw, "POST", f"/jobs/{first['id']}/cancel")
        assert ended.status_code == 409 and ended.json()["error"]["code"] == "job_not_active"
        assert admin(gw, "GET", f"/jobs/{first['id']}").json()["state"] == "done"
        again = admin(gw, "POST", f"/jobs/{paused['id']}/cancel")
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
        # a state filter that names no state is refused, not an empty list
        typo = admin(gw, "GET", "/jobs", params={"state": "canceled"})
        assert typo.status_code == 400 and typo.json()["error"]["param"] == "query.state"
        assert len(admin(gw, "GET", "/jobs", params={"state": "cancelled"}).json()["data"]) == 1


def test_a_first_job_cancelled_leaves_a_model_failed_that_enabling_does_not_route(make_gateway, fault_upstream):
    _, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        r = admin(gw, "POST", "/models", json={"name": "slow", "base_url": url, "upstream_model": "slow:delay=0.2",
                                                "cost": {"per_request": 1}, "job": {"concurrency": 1}})
        job = admin(gw, "POST", f"/jobs/{r.json()['job_id']}/cancel").json()
        assert job["state"] == "cancelled" and job["error"] == "cancelled by the operator"
        assert admin(gw, "GET", "/models/slow").json()["state"] == "failed"
        assert admin(gw, "PATCH", "/models/slow", json={"enabled": True}).json()["state"] == "failed"


def test_graded_answers_are_served_for_audit_with_filters_and_pages(make_gateway, fault_upstream):
    _, url = fault_upstream
    # the shipped general set: multiple choice, numeric, code_tests and llm_judge items
    with make_gateway(models=[], admin_key=ADMIN, state_dir="fast", repset_path=str(DEFAULT_REPSET)) as gw:
        r = admin(gw, "POST", "/models", json={"name": "echo", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 30, "seed": 3}})
        job = wait_job(gw, r.json()["job_id"])
        # no judge_model: the set's llm_judge items are left out, and the job says so
        judged = sum(item.grader.startswith("llm_judge") for item in load_repset(DEFAULT_REPSET).items)
        assert job["state"] == "done" and job["skipped"] == judged
        every = admin(gw, "GET", "/models/echo/answers", params={"limit": 1000}).json()
        assert every["total"] == 30 and len(every["data"]) == 30
        assert not any(a["grader"].startswith("llm_judge") for a in every["data"])
        first = every["data"][0]
        # the fake upstream's answer names no option, no number and no code: graded wrong
        assert first["answer"] == "answer from echo" and first["graded"] and first["score"] == 0.0
        assert first["reference"] and first["prompt"]
        wrong = admin(gw, "GET", "/models/echo/answers", params={"filter": "wrong", "limit": 1000}).json()
        assert wrong["total"] == 30
        assert admin(gw, "GET", "/models/echo/answers", params={"filter": "correct"}).json()["total"] == 0
        page = admin(gw, "GET", "/models/echo/answers", params={"limit": 7, "offset": 7}).json()["data"]
        assert [a["prompt_id"] for a in page] == [a["prompt_id"] for a in every["data"][7:14]]
        k = first["cluster"]
        in_k = admin(gw, "GET", "/models/echo/answers", params={"cluster": k, "limit": 1000}).json()
        assert in_k["total"] == sum(a["cluster"] == k for a in every["data"]) >= 1
        assert admin(gw, "GET", "/models/nobody/answers").status_code == 404


def test_answers_cut_at_the_jobs_max_tokens_are_counted_flagged_and_warned_of(make_gateway, fault_upstream,
                                                                              caplog):
    """An OpenAI reasoning model spends the job's max_tokens reasoning and answers nothing, graded
    wrong. Before, the job ended `done` saying nothing of it: a profile that routes the model
    nowhere, for a setting of the job's. (The fake answer, about 5 tokens, is cut at 2.)"""
    _, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        r = admin(gw, "POST", "/models", json={"name": "cut", "base_url": url, "cost": {"per_request": 1},
                                                "job": {"limit": 20, "max_tokens": 2}})
        job = wait_job(gw, r.json()["job_id"])
        answers = admin(gw, "GET", "/models/cut/answers", params={"limit": 1000}).json()["data"]
        roomy = admin(gw, "POST", "/models", json={"name": "roomy", "base_url": url, "cost": {"per_request": 1},
                                                    "job": {"limit": 20}})
        roomy_job = wait_job(gw, roomy.json()["job_id"])
    assert job["state"] == "done" and job["truncated"] == job["done"] == 20
    assert "20 of the 20 graded answers ended at the job's max_tokens" in job["warning"]
    assert all(a["truncated"] for a in answers) and answers[0]["answer"] == "answer f"
    assert any("reprofile with a larger max_tokens" in rec.getMessage() for rec in caplog.records)
    assert roomy_job["truncated"] == 0 and roomy_job["warning"] is None


@pytest.mark.parametrize("server", ["", ",context_as=tgi", ",context_as=lmstudio"])
def test_declined_prompts_are_audited_apart_from_failed_ones(make_gateway, fault_upstream, server):
    """Before, `ungraded` (failures, asked again) listed the prompts the model refused too. A
    server whose refusal's `error` is a string (TGI, LM Studio) made the job's worker raise on it."""
    upstream, url = fault_upstream
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        # a context so short that the longest prompts are refused; the rest answered
        r = admin(gw, "POST", "/models", json={"name": "short", "base_url": url,
                                                "upstream_model": f"short:context=450{server}",
                                                "cost": {"per_request": 1}, "job": {"limit": 40, "seed": 1}})
        job = wait_job(gw, r.json()["job_id"])
        assert 0 < job["declined"] < 40
        declined = admin(gw, "GET", "/models/short/answers", params={"filter": "declined", "limit": 1000}).json()
        ungraded = admin(gw, "GET", "/models/short/answers", params={"filter": "ungraded", "limit": 1000}).json()
        assert declined["total"] == job["declined"] and all(a["declined"] for a in declined["data"])
        assert ungraded["total"] == 0


def test_a_model_stored_before_names_had_to_be_ascii_still_answers(make_gateway, fault_upstream, model_config,
                                                                    tmp_path):
    # Registries written before the rule may hold such a name: each of its answers was a 500.
    _, url = fault_upstream
    db = tmp_path / "legacy.db"
    with make_gateway(models=[model_config("b", url)], sqlite_path=str(db)):
        pass
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE models SET name = ?, data = json_set(data, '$.name', ?) WHERE name = 'b'",
                     ("模型-b", "模型-b"))
    with make_gateway(models=[], sqlite_path=str(db)) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="模型-b", messages=[{"role": "user", "content": "hi"}])
        assert raw.status_code == 200
        assert raw.parse().choices[0].message.content == "answer from b"
        assert urllib.parse.unquote(raw.headers["x-uniroute-model"]) == "模型-b"
        # its stored responses are fetched from it with the same header
        stored = client(gw).responses.create(model="模型-b", input="hi")
        fetched = client(gw).responses.with_raw_response.retrieve(stored.id)
        assert fetched.parse().id == stored.id
        assert urllib.parse.unquote(fetched.headers["x-uniroute-model"]) == "模型-b"
