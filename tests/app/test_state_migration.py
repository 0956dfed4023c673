"""The admin side of a live state switch on a demo gateway: a manual migration waits for its
commit, one migration at a time, abandoning leaves the active state, bad input is refused; and
`uniroute state` drives the same API. The new set is the shipped set's first 20 items (a new
set version under the same clusters): the demo models are asked them for real (replay upstream,
mc_letter grading) on the RouterBench state the demo gateways of these tests use."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from app.cli.main import main
from app.demo.replay_upstream import approx_tokens
from app.runtime.config import ModelConfig
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, state_path
from router_core.state import RouterState
from tests.app.conftest import ROUTERBENCH_SETTINGS
from tests.app.test_workers import samples
from tests.support.clients import wait_for

ADMIN = "migration-admin"
AUTH = {"authorization": f"Bearer {ADMIN}"}


def first_items(tmp_path: Path, n: int = 20) -> Path:
    path = tmp_path / f"first-{n}.jsonl"
    shipped = Path(ROUTERBENCH_SETTINGS["repset_path"])
    path.write_text("".join(line + "\n" for line in shipped.read_text().splitlines()[:n]))
    return path


def call(gw: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, gw + "/admin" + path, json=body, headers=AUTH, timeout=60)


def wait_pending(gw: str, status: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while (pending := call(gw, "GET", "/state").json()["pending"])["status"] != status:
        assert time.monotonic() < deadline, pending
        time.sleep(0.2)
    return pending


def test_a_manual_migration_waits_for_its_commit_then_switches(make_gateway, demo_configs, tmp_path, capsys):
    repset = first_items(tmp_path)
    with make_gateway(admin_key=ADMIN) as gw:
        body = {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": str(repset), "auto_commit": False}
        assert call(gw, "POST", "/state", body).status_code == 202
        again = call(gw, "POST", "/state", body)
        assert again.status_code == 409 and again.json()["error"]["code"] == "migration_pending"
        pending = wait_pending(gw, "ready")
        assert pending["progress"] == {"done": 20 * len(demo_configs), "declined": 0, "total": 20 * len(demo_configs),
                                       "ready_models": len(demo_configs), "models": len(demo_configs)}
        assert all(m["asked"] == 20 and m["reused"] == 0 for m in pending["models"].values())
        assert call(gw, "GET", "/state").json()["state"]["repset_items"] == 400  # not switched by itself

        assert main(["state", "--url", gw, "--admin-key", ADMIN, "commit"]) == 0
        committed = json.loads(capsys.readouterr().out)
        assert committed["repset_version"] == load_repset(repset).version and committed["forced"] is False
        assert main(["state", "--url", gw, "--admin-key", ADMIN, "show"]) == 0
        view = json.loads(capsys.readouterr().out)
        assert view["state"]["repset_items"] == 20 and view["pending"] is None
        assert view["state"]["routable_models"] == len(demo_configs)
        for m in call(gw, "GET", "/models").json()["data"]:
            assert m["profile"]["repset_version"] == load_repset(repset).version and m["state"] == "ready"


def test_abandoning_keeps_the_active_state_and_bad_input_is_refused(make_gateway, tmp_path):
    repset = first_items(tmp_path, 12)
    with make_gateway(admin_key=ADMIN) as gw:
        before = call(gw, "GET", "/state").json()["state"]
        missing = call(gw, "POST", "/state", {"state_dir": str(tmp_path / "nowhere"), "repset_path": str(repset)})
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_state"
        same = call(gw, "POST", "/state", {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": ROUTERBENCH_SETTINGS["repset_path"]})
        assert same.status_code == 400 and same.json()["error"]["code"] == "state_active"
        assert call(gw, "POST", "/state/pending/commit", {"force": True}).status_code == 404

        body = {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": str(repset), "auto_commit": False}
        migration = call(gw, "POST", "/state", body).json()["id"]
        assert call(gw, "DELETE", "/state/pending").json() == {"abandoned": migration}
        view = call(gw, "GET", "/state").json()
        assert view["pending"] is None and view["state"] == before
        assert call(gw, "DELETE", "/state/pending").status_code == 404
        time.sleep(1.0)  # an abandoned migration's runner stops: nothing brings it back
        assert call(gw, "GET", "/state").json()["pending"] is None


def test_the_spend_cap_stops_the_migration_and_a_forced_commit_switches_anyway(make_gateway, demo_configs,
                                                                                 tmp_path):
    repset = first_items(tmp_path, 30)
    with make_gateway(admin_key=ADMIN, profile_concurrency=1) as gw:
        body = {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": str(repset), "spend_cap": 1e-9}
        assert call(gw, "POST", "/state", body).status_code == 202
        pending = wait_pending(gw, "stopped")
        assert "spend cap 1e-09 reached" in pending["error"]
        assert pending["spend"] >= 1e-9 and pending["progress"]["done"] < pending["progress"]["total"]
        # What the migration paid shows where a dashboard reads profiling spend (it showed none).
        spent = {s.labels["model"]: s.value for s in samples(httpx.get(gw + "/metrics", timeout=10).text,
                                                             "uniroute_profiling_cost_total")}
        assert spent == pytest.approx({name: m["spend"] for name, m in pending["models"].items()})
        refused = call(gw, "POST", "/state/pending/commit", {"force": False})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "migration_not_ready"
        forced = call(gw, "POST", "/state/pending/commit", {"force": True}).json()
        assert forced["forced"] is True
        view = call(gw, "GET", "/state").json()
        assert view["state"]["repset_items"] == 30 and view["pending"] is None
        answered = {name for name, m in pending["models"].items() if m["done"] > 0}
        assert answered and view["state"]["routable_models"] == len(demo_configs)
        # Those that answered route on the new set; the others keep their profile (same clusters).
        models = {m["name"]: m["profile"]["repset_version"] for m in call(gw, "GET", "/models").json()["data"]}
        assert {n for n, v in models.items() if v == load_repset(repset).version} == answered


def mixed_set(tmp_path: Path, n_choice: int = 10, n_judged: int = 10) -> tuple[Path, list[dict]]:
    """A new set under the same clusters: RouterBench multiple-choice items, then open-ended
    items graded by the judge (the general set's arena items)."""
    choice = [json.loads(line) for line in Path(ROUTERBENCH_SETTINGS["repset_path"]).read_text().splitlines()]
    judged = [row for row in map(json.loads, DEFAULT_REPSET.read_text().splitlines())
              if row["grader"].startswith("llm_judge")]
    rows = choice[:n_choice] + judged[:n_judged]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path, rows


def test_a_migration_asks_failed_items_again_and_keeps_a_model_it_could_not_grade_enough_from_switching(
        make_gateway, model_config, fault_upstream, tmp_path):
    """A migration rides out faults as a profiling job does, and switches only to profiles a job
    would route on: before, every item was asked once, and a model was ready (and the migration
    committed) whatever share of its items had failed."""
    upstream, url = fault_upstream
    repset, _ = mixed_set(tmp_path)
    flaky = model_config("flaky", url, upstream_model="flaky:fail_first=3")  # an outage's tail
    steady = model_config("steady", url)
    judge = ModelConfig(name="judge", base_url=url, upstream_model="judge:status=500", enabled=False)  # down
    with make_gateway(models=[flaky, steady, judge], judge_model="judge", admin_key=ADMIN, retries=0,
                      profile_attempts=2, profile_pause_after=100, profile_backoff_s=0.01,
                      profile_backoff_max_s=0.05) as gw:
        body = {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": str(repset)}
        assert call(gw, "POST", "/state", body).status_code == 202
        pending = wait_pending(gw, "stopped")
        models = pending["models"]
        # the multiple-choice items that failed were asked again and graded
        assert models["flaky"]["errors"] >= 3 and models["flaky"]["done"] == 10 == models["steady"]["done"]
        # every judged item failed twice (the judge is down): half the set graded is too little to route on
        assert upstream.calls["judge:status=500"] == 2 * 2 * 10
        for name in ("flaky", "steady"):
            assert models[name]["state"] == "incomplete", models[name]
            assert models[name]["error"].startswith("too little graded to route on: 10/20 prompts graded")
            # and why, as a job's pause says it: the judge failed
            assert "; last failure: grading failed: the judge judge: " in models[name]["error"], models[name]
        assert set(pending["error"].partition("not ready: ")[2].split(";")[0].split(", ")) == {"flaky", "steady"}
        assert call(gw, "GET", "/state").json()["state"]["repset_items"] == 400  # not switched


def test_without_a_judge_a_migration_leaves_judged_items_out_and_declined_items_do_not_count_against_a_model(
        make_gateway, model_config, fault_upstream, tmp_path):
    """As a job does: with no judge_model the judged items are not asked (before, each was asked
    and failed), and an item the model refuses (a prompt over its context) is declined: counted
    as such, out of its coverage, never an error."""
    upstream, url = fault_upstream
    repset, rows = mixed_set(tmp_path)
    # the fault upstream's measure of a request (its `context=N` directive)
    lengths = [approx_tokens(orjson.dumps([[{"role": "user", "content": row["prompt"]}], None, None]).decode())
               for row in rows[:10]]
    context = sorted(lengths)[6]
    too_long = sum(n > context for n in lengths)
    assert 0 < too_long < 10
    short = model_config("short", url, upstream_model=f"short:context={context}")
    with make_gateway(models=[short, model_config("plain", url)], admin_key=ADMIN) as gw:
        body = {"state_dir": ROUTERBENCH_SETTINGS["state_dir"], "repset_path": str(repset), "auto_commit": False}
        assert call(gw, "POST", "/state", body).status_code == 202
        pending = wait_pending(gw, "ready")
        assert upstream.calls["plain"] == 10 and upstream.calls[f"short:context={context}"] == 10
        assert {k: pending["models"]["short"][k] for k in ("state", "total", "done", "declined", "errors")} == {
            "state": "ready", "total": 10, "done": 10 - too_long, "declined": too_long, "errors": 0}
        assert pending["progress"]["declined"] == too_long and pending["progress"]["done"] == 20 - too_long
        assert call(gw, "POST", "/state/pending/commit", {"force": False}).status_code == 200
        for m in call(gw, "GET", "/models").json()["data"]:
            assert m["state"] == "ready" and m["profile"]["repset_version"] == load_repset(repset).version


def test_a_first_profiling_job_running_through_a_switch_goes_on_with_the_new_set(make_gateway, fault_upstream,
                                                                                  tmp_path):
    """Before, it went on asking the old set's prompts and made its profile under the old
    clusters, which the switched gateway cannot route with: paid for, and no model to show."""
    upstream, url = fault_upstream
    rows = [row for row in DEFAULT_REPSET.read_text().splitlines() if '"llm_judge' not in row][:20]
    repset = tmp_path / "general-20.jsonl"
    repset.write_text("".join(row + "\n" for row in rows))
    with make_gateway(models=[], admin_key=ADMIN) as gw:
        before = call(gw, "GET", "/state").json()["state"]["version"]
        job = call(gw, "POST", "/models", {"name": "slow", "base_url": url, "upstream_model": "slow:delay=0.1",
                                           "cost": {"per_request": 1}, "job": {"concurrency": 1}}).json()["job_id"]
        assert wait_for(lambda: call(gw, "GET", f"/jobs/{job}").json()["done"] >= 2)
        assert call(gw, "POST", "/state", {"state_dir": "fast", "repset_path": str(repset)}).status_code == 202
        assert wait_for(lambda: call(gw, "GET", "/state").json()["state"]["version"] != before, timeout_s=120)
        assert wait_for(lambda: call(gw, "GET", f"/jobs/{job}").json()["state"] == "done", timeout_s=120)
        assert call(gw, "GET", f"/jobs/{job}").json()["total"] == 20
        model = call(gw, "GET", "/models/slow").json()
        assert model["state"] == "ready" and model["profile"]["repset_version"] == load_repset(repset).version
        decision = httpx.post(gw + "/v1/route", json={"model": "uniroute", "messages": [
            {"role": "user", "content": "hi"}]}, timeout=10).json()
        assert decision["model"] == "slow"  # routable under the new clusters


def test_a_state_whose_output_scale_alone_changed_is_applied_live_on_every_replica(make_gateway, demo_configs,
                                                                                    tmp_path):
    # `uniroute build-state --output-scale-only` keeps the clusters (and so the version: every
    # profile still fits) and adds a scale; applying it was refused as "the active state".
    rescaled = tmp_path / "rescaled"
    state = RouterState.load(state_path(ROUTERBENCH_SETTINGS["state_dir"]))
    replace(state, output_scale=np.linspace(0.5, 2.0, state.k)).save(rescaled)
    shared = str(tmp_path / "shared.db")
    scales = lambda gw: np.array([c["output_scale"] for c in call(gw, "GET", "/state").json()["clusters"]])
    with make_gateway(admin_key=ADMIN, sqlite_path=shared) as one, \
            make_gateway(admin_key=ADMIN, sqlite_path=shared) as two:
        assert set(scales(one)) == set(scales(two)) == {None}
        body = {"state_dir": str(rescaled), "repset_path": ROUTERBENCH_SETTINGS["repset_path"]}
        started = call(one, "POST", "/state", body)
        assert started.status_code == 202, started.text
        assert wait_for(lambda: call(one, "GET", "/state").json()["pending"] is None, timeout_s=120)
        assert wait_for(lambda: None not in set(scales(two)), timeout_s=60)
        for gw in (one, two):
            shown = scales(gw)  # normalised over the representative set
            assert np.allclose(shown / shown[0], np.linspace(0.5, 2.0, state.k) / 0.5, rtol=1e-3)
            assert call(gw, "GET", "/state").json()["state"]["routable_models"] == len(demo_configs)
        again = call(two, "POST", "/state", body)
        assert again.status_code == 400 and again.json()["error"]["code"] == "state_active"


def test_a_state_folder_rewritten_in_place_is_reloaded_once_not_on_every_look(make_gateway, tmp_path, caplog):
    # The active document records the scale it was applied with; a folder whose scale was then
    # rewritten in place (build-state --output-scale-only on it) never matches it again.
    folder = tmp_path / "state"
    state = RouterState.load(state_path(ROUTERBENCH_SETTINGS["state_dir"]))
    replace(state, output_scale=np.linspace(0.5, 2.0, state.k)).save(folder)
    shared = str(tmp_path / "shared.db")
    with make_gateway(admin_key=ADMIN, sqlite_path=shared) as gw:
        body = {"state_dir": str(folder), "repset_path": ROUTERBENCH_SETTINGS["repset_path"]}
        assert call(gw, "POST", "/state", body).status_code == 202
        assert wait_for(lambda: call(gw, "GET", "/state").json()["pending"] is None, timeout_s=120)
    replace(state, output_scale=np.linspace(2.0, 0.5, state.k)).save(folder)
    caplog.set_level(logging.INFO, logger="uniroute")
    with make_gateway(admin_key=ADMIN, sqlite_path=shared, lock_ttl_s=0.05) as gw:
        time.sleep(2.0)  # forty looks at the active document
        switches = [r for r in caplog.records if r.getMessage().startswith("switched to router state")]
        assert len(switches) <= 1
        assert call(gw, "GET", "/state").json()["pending"] is None
