"""Cost control through a real gateway (the demo's 11 RouterBench models): targets and policies
as model names and body fields turned into λ by the gateway's own curve, clear 400s for bad
targets, confidence on /v1/route, thin cells shrunk, the curve following the registry, drift,
the budget guard's state and per-key floors, and `uniroute calibrate`.

One gateway serves the module's tests (a start costs seconds); each test leaves it as it found it.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from app.api.main import create_app
from app.cli.main import main
from app.runtime.config import Settings
from router_core.calibration import Calibration
from router_core.repset import load_repset
from router_core.shipped import ROUTERBENCH_REPSET, state_path
from router_core.state import RouterState
from tests.app.conftest import ROUTERBENCH_SETTINGS, wait_ready
from tests.app.test_workers import samples
from tests.support.servers import serve

ADMIN = "cost-admin-key"
AUTH = {"authorization": f"Bearer {ADMIN}"}
FAR_PROMPT = "Which gas do green plants take in? A) oxygen B) carbon dioxide C) nitrogen D) helium"
BIG_TARGET = 1e6  # a budget guard with room to spare: its floor stays 0


@pytest.fixture(scope="module")
def gw(tmp_path_factory, shared_cache, demo_configs):
    settings = Settings(sqlite_path=str(tmp_path_factory.mktemp("cost") / "registry.db"), cache_dir=shared_cache,
                        **ROUTERBENCH_SETTINGS,
                        models=demo_configs, admin_key=ADMIN, budget={"target": BIG_TARGET, "window_s": 3600})
    with serve(create_app(settings)) as url:
        wait_ready(url)
        yield url


@pytest.fixture(scope="module")
def repset_prompts() -> list[tuple[str, str]]:
    return [(item.id, item.prompt) for item in load_repset(ROUTERBENCH_REPSET).items]


def route(url: str, model: str = "uniroute", content: str = FAR_PROMPT, **options) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if options:
        body["uniroute"] = options
    return httpx.post(url + "/v1/route", json=body, timeout=60)


def curve(url: str, **params) -> dict:
    r = httpx.get(url + "/admin/calibration", headers=AUTH, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def resolved(data: dict, kind: str, value: float) -> dict:
    """The point the curve's own rule picks for a target."""
    cal = Calibration.from_dict(data)
    p, _ = cal.for_budget(value) if kind == "budget" else cal.for_quality(value)
    return data["points"][p]


def test_policies_are_offered_as_model_names(gw):
    ids = [m["id"] for m in httpx.get(gw + "/v1/models", timeout=10).json()["data"]]
    assert ids[:4] == ["uniroute", "uniroute:economy", "uniroute:balanced", "uniroute:best"]


@pytest.mark.parametrize("model,options,kind,value", [
    ("uniroute:quality=0.95", {}, "quality", 0.95),
    ("uniroute", {"quality": 0.95}, "quality", 0.95),
    ("uniroute:budget=0.001", {}, "budget", 0.001),
    ("uniroute", {"budget": 0.001}, "budget", 0.001),
    ("uniroute:economy", {}, "quality", 0.9),
    ("uniroute", {"policy": "economy"}, "quality", 0.9),
])
def test_targets_get_the_lambda_of_the_gateways_own_curve(gw, model, options, kind, value):
    point = resolved(curve(gw), kind, value)
    r = route(gw, model, **options)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["cost_weight"] == pytest.approx(point["cost_weight"])
    assert got["target"]["kind"] == kind and got["target"]["value"] == value and got["target"]["met"]
    assert got["target"]["expected_score"] == pytest.approx(point["expected_score"])
    assert got["target"]["expected_cost"] == pytest.approx(point["expected_cost"])


def test_a_budget_below_the_cheapest_routing_gets_the_cheapest_and_says_so(gw):
    points = curve(gw)["points"]
    got = route(gw, "uniroute:budget=0").json()
    assert not got["target"]["met"]
    assert got["cost_weight"] == pytest.approx(points[-1]["cost_weight"])
    unmet = {s.labels["kind"]: s.value for s in samples(httpx.get(gw + "/metrics", timeout=10).text,
                                                        "uniroute_target_unmet_total")}
    assert unmet["budget"] >= 1 and unmet["quality"] == 0  # both exposed from the start (at 0)


def test_a_target_with_a_models_subset_uses_that_subsets_curve(gw, routerbench):
    subset = sorted(routerbench.models)[:3]
    point = resolved(curve(gw, models=",".join(subset)), "quality", 0.9)
    got = route(gw, "uniroute:quality=0.9", models=subset).json()
    assert got["cost_weight"] == pytest.approx(point["cost_weight"])
    assert {c["model"] for c in got["candidates"]} == set(subset)


@pytest.mark.parametrize("model,options,param,code", [
    ("uniroute:budget=-1", {}, "model", "invalid_budget"),
    ("uniroute:budget=abc", {}, "model", "invalid_budget"),
    ("uniroute:quality=1.5", {}, "model", "invalid_quality"),
    ("uniroute:quality=0", {}, "model", "invalid_quality"),
    ("uniroute:premium", {}, "model", "unknown_policy"),
    ("uniroute:speed=3", {}, "model", "invalid_target"),
    ("uniroute", {"budget": -0.5}, "uniroute.budget", "invalid_value"),
    ("uniroute", {"quality": 1.01}, "uniroute.quality", "invalid_value"),
    ("uniroute", {"budget": 0.001, "quality": 0.9}, "uniroute", "invalid_value"),
    ("uniroute", {"policy": "economy", "cost_weight": 0.3}, "uniroute", "invalid_value"),
    ("uniroute", {"policy": "premium"}, "uniroute.policy", "unknown_policy"),
])
def test_bad_targets_are_openai_style_400s_naming_the_parameter(gw, model, options, param, code):
    for path in ("/v1/route", "/v1/chat/completions"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        if options:
            body["uniroute"] = options
        r = httpx.post(gw + path, json=body, timeout=30)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")
        assert err["message"]


def test_route_shows_each_candidates_support_and_error_interval(gw, repset_prompts):
    got = route(gw, content=repset_prompts[0][1]).json()
    shown = httpx.get(gw + f"/admin/models/{got['candidates'][0]['model']}", headers=AUTH, timeout=10).json()
    cell = shown["profile"]["clusters"][got["cluster"]]
    for c in got["candidates"]:
        lo, hi = c["error_interval"]
        assert lo < c["predicted_error"] < hi
        assert c["support"] == cell["count"] > 0  # every demo model is labelled on the same prompts
        assert c["supported"] is True
    assert got["candidates"][0]["predicted_error"] == pytest.approx(cell["error"])


def test_a_cluster_with_one_labelled_prompt_shows_the_shrunk_estimate(gw, repset_prompts):
    (x_id, x_text), cluster = repset_prompts[0], route(gw, content=repset_prompts[0][1]).json()["cluster"]
    y_id = next(pid for pid, text in repset_prompts[1:] if route(gw, content=text).json()["cluster"] != cluster)
    # right on its one prompt of the cluster, wrong on one prompt elsewhere: overall error 0.5
    r = httpx.post(gw + "/admin/models", headers=AUTH, timeout=30, json={
        "name": "thin", "base_url": "http://127.0.0.1:9/v1", "cost": {"per_request": 1.0},
        "scores": {x_id: 1.0, y_id: 0.0}})
    assert r.status_code == 202, r.text
    try:
        prior = 4.0  # the shipped state's shrinkage
        cell = httpx.get(gw + "/admin/models/thin", headers=AUTH, timeout=10).json()["profile"]["clusters"][cluster]
        assert cell["count"] == 1.0
        assert cell["error"] == pytest.approx((0.0 + prior * 0.5) / (1 + prior))  # 0.4, not the raw 0
        (thin,) = route(gw, content=x_text, models=["thin"]).json()["candidates"]
        assert thin["support"] == 1.0 and thin["predicted_error"] == pytest.approx(cell["error"])
        lo, hi = thin["error_interval"]
        assert hi - lo > 0.4
    finally:
        httpx.delete(gw + "/admin/models/thin", headers=AUTH, timeout=10)


def test_a_model_profiled_on_one_task_is_not_routed_prompts_of_another_on_its_overall_mean(gw):
    items = load_repset(ROUTERBENCH_REPSET).items
    arc = [item for item in items if item.task == "arc-challenge"]
    winogrande = next(item for item in items if item.task == "winogrande")
    # Right on every ARC prompt, never asked a Winogrande one, nearly free: on its overall mean it
    # would win every prompt at a high cost weight.
    r = httpx.post(gw + "/admin/models", headers=AUTH, timeout=30, json={
        "name": "one-task", "base_url": "http://127.0.0.1:9/v1", "cost": {"per_request": 1e-9},
        "scores": {item.id: 1.0 for item in arc}})
    assert r.status_code == 202, r.text
    try:
        got = wait_for(lambda: route(gw, "uniroute:50", content=winogrande.prompt).json(),
                       lambda d: "one-task" in [c["model"] for c in d["candidates"]])
        partial = next(c for c in got["candidates"] if c["model"] == "one-task")
        assert partial["support"] == 0 and partial["supported"] is False
        assert got["model"] != "one-task" and got["candidates"][-1]["model"] == "one-task"
        assert route(gw, "uniroute:50", content=arc[0].prompt).json()["model"] == "one-task"
    finally:
        httpx.delete(gw + "/admin/models/one-task", headers=AUTH, timeout=10)


def test_the_curve_follows_models_added_changed_and_removed(gw, repset_prompts):
    before = curve(gw)
    # a free model as good as the best everywhere takes all the traffic at every λ
    scores = {pid: 1.0 for pid, _ in repset_prompts}
    r = httpx.post(gw + "/admin/models", headers=AUTH, timeout=30, json={
        "name": "oracle", "base_url": "http://127.0.0.1:9/v1", "cost": {"per_request": 0.0}, "scores": scores})
    assert r.status_code == 202, r.text
    try:
        added = wait_for(lambda: curve(gw), lambda c: "oracle" in c["models"])
        assert [p["shares"] for p in added["points"]] == [{"oracle": 1.0}]
        httpx.patch(gw + "/admin/models/oracle", headers=AUTH, timeout=10, json={"enabled": False})
        assert wait_for(lambda: curve(gw), lambda c: "oracle" not in c["models"]) == before
        httpx.patch(gw + "/admin/models/oracle", headers=AUTH, timeout=10, json={"enabled": True})
        wait_for(lambda: curve(gw), lambda c: "oracle" in c["models"])
    finally:
        httpx.delete(gw + "/admin/models/oracle", headers=AUTH, timeout=10)
    assert wait_for(lambda: curve(gw), lambda c: "oracle" not in c["models"]) == before


def wait_for(fetch, done, timeout_s: float = 10.0):
    """Poll `fetch()` until `done(value)`: registry changes reach the table through its change feed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            assert done(value), value
            return value
        time.sleep(0.05)


def test_drift_counts_routed_prompts_far_from_every_cluster(gw, repset_prompts):
    def drift() -> dict:
        return httpx.get(gw + "/admin/drift", headers=AUTH, timeout=10).json()

    start = drift()
    assert start["enabled"] and start["threshold"] == pytest.approx(RouterState.load(state_path("routerbench-fast")).drift_threshold)
    route(gw, content=repset_prompts[0][1])  # a prompt of the tasks the clusters were fitted on
    near = drift()
    assert (near["seen"], near["far"]) == (start["seen"] + 1, start["far"])
    route(gw, content=FAR_PROMPT)  # a bare one-line question, unlike every few-shot training prompt
    far = drift()
    assert (far["seen"], far["far"]) == (start["seen"] + 2, start["far"] + 1)
    assert far["far_share"] == pytest.approx(far["recent_far"] / far["recent"])
    metrics = httpx.get(gw + "/metrics", timeout=10).text
    by_far = {s.labels["far"]: s.value for s in samples(metrics, "uniroute_drift_prompts_total")}
    assert by_far["true"] >= 1 and by_far["false"] >= 1 and "uniroute_drift_far_share" in metrics


def test_budget_guard_counts_what_answers_cost(gw):
    def window() -> dict:
        (scope,) = httpx.get(gw + "/admin/budget", headers=AUTH, timeout=10).json()["scopes"]
        return scope

    before = window()
    r = httpx.post(gw + "/v1/chat/completions", timeout=60, json={
        "model": "uniroute", "messages": [{"role": "user", "content": FAR_PROMPT}]})
    assert r.status_code == 200
    after = window()
    # demo models are priced per request: the answer costs its expected cost
    assert after["requests"] == before["requests"] + 1
    assert after["spent"] - before["spent"] == pytest.approx(float(r.headers["x-uniroute-expected-cost"]), rel=1e-5)
    assert after["scope"] == "all" and after["target"] == BIG_TARGET and after["cost_weight"] == 0.0


def test_metrics_show_the_budget_windows_spend_as_it_is_at_the_scrape(gw):
    # The gauge was set only when a routed request read the window, before its answer was billed:
    # a scrape showed the spend before the last answer (and a window's spend after it had ended,
    # or none for a key sending named models only).
    r = httpx.post(gw + "/v1/chat/completions", timeout=60, json={
        "model": "uniroute", "messages": [{"role": "user", "content": FAR_PROMPT}]})
    assert r.status_code == 200
    scraped = {s.labels["scope"]: s.value for s in samples(httpx.get(gw + "/metrics", timeout=10).text,
                                                           "uniroute_budget_window_spend")}
    (scope,) = httpx.get(gw + "/admin/budget", headers=AUTH, timeout=10).json()["scopes"]
    assert scraped == {"all": pytest.approx(scope["spent"])} and scope["spent"] > 0


def test_calibrate_command_prints_the_gateways_curve_and_draws_it(gw, tmp_path, capsys):
    png = tmp_path / "curve.png"
    assert main(["calibrate", "--url", gw, "--admin-key", ADMIN, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    first = curve(gw)["points"][0]
    assert "best single model: gpt-4-1106-preview" in out
    assert f"{first['expected_score']:.4f}" in out and len(out.splitlines()) == 2 + len(curve(gw)["points"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_from_the_dataset_matches_the_gateway_with_the_same_models(gw, shared_cache, capsys):
    assert main(["calibrate", "--json", "--cache-dir", shared_cache, "--state-dir", "routerbench-fast",
                 "--repset", str(ROUTERBENCH_REPSET)]) == 0
    local, remote = json.loads(capsys.readouterr().out), curve(gw)
    assert (local["models"], local["best_model"]) == (remote["models"], remote["best_model"])
    assert [p["shares"] for p in local["points"]] == [p["shares"] for p in remote["points"]]
    assert [p["expected_cost"] for p in local["points"]] == pytest.approx([p["expected_cost"] for p in remote["points"]])
    assert [p["expected_score"] for p in local["points"]] == pytest.approx([p["expected_score"] for p in remote["points"]])


def test_guard_raises_lambda_for_the_key_that_spent_its_target_only(make_gateway):
    keys = ["client-secret-a", "client-secret-b"]
    # room for one request to the dearest model (gpt-4 at 0.0050 per request), not for two
    with make_gateway(api_keys=keys, admin_key=ADMIN, budget={"target": 0.006, "window_s": 1e6}) as url:
        def ask(key: str, model: str = "uniroute:best", path: str = "/v1/route") -> httpx.Response:
            return httpx.post(url + path, headers={"authorization": f"Bearer {key}"}, timeout=60, json={
                "model": model, "messages": [{"role": "user", "content": FAR_PROMPT}]})

        assert ask(keys[0]).json()["budget_guard"]["cost_weight"] == 0.0
        for _ in range(2):  # named-model answers count against the key's target too
            assert ask(keys[0], "gpt-4-1106-preview", "/v1/chat/completions").status_code == 200
        spent, fresh = ask(keys[0]).json(), ask(keys[1]).json()
        last = curve(url)["points"][-1]
        assert spent["budget_guard"]["spent"] > 0.006
        assert spent["budget_guard"]["cost_weight"] == pytest.approx(last["cost_weight"])
        assert spent["cost_weight"] == spent["budget_guard"]["cost_weight"]  # over the policy's 0
        assert fresh["budget_guard"]["cost_weight"] == 0.0 and fresh["cost_weight"] == 0.0
        scopes = httpx.get(url + "/admin/budget", headers=AUTH, timeout=10).json()["scopes"]
        assert [s["scope"] for s in scopes] == [spent["budget_guard"]["scope"], fresh["budget_guard"]["scope"]]
        assert not any(k in json.dumps(scopes) for k in keys)  # fingerprints, never the keys
