"""A gateway started on another router state recomputes registered models' profiles from their
stored graded answers: they stay routable and nothing is asked again."""
from __future__ import annotations

import dataclasses

import httpx

from router_core.shipped import state_path
from router_core.state import RouterState
from tests.app.test_admin import ADMIN, admin, wait_job


def test_profiles_follow_a_new_state_without_asking_again(tmp_path, make_gateway, fault_upstream):
    upstream, url = fault_upstream
    shipped = RouterState.load(state_path("routerbench-fast"))
    # Another real state: the shipped clusters, fewer of them.
    smaller = dataclasses.replace(shipped, centroids=shipped.centroids[:6].copy())
    smaller.save(tmp_path / "state-6")
    sqlite = str(tmp_path / "registry.db")

    with make_gateway(models=[], admin_key=ADMIN, sqlite_path=sqlite, profile_concurrency=16) as gw:
        r = admin(gw, "POST", "/models", json={"name": "echo", "base_url": url, "cost": {"per_request": 1}})
        assert wait_job(gw, r.json()["job_id"])["state"] == "done"
        before = admin(gw, "GET", "/models/echo").json()["profile"]
    asked = len(upstream.received)

    with make_gateway(models=[], admin_key=ADMIN, sqlite_path=sqlite, state_dir=str(tmp_path / "state-6")) as gw:
        after = admin(gw, "GET", "/models/echo").json()["profile"]
        assert len(before["clusters"]) == shipped.k and len(after["clusters"]) == 6
        assert after["accuracy"] == before["accuracy"] and after["n_prompts"] == before["n_prompts"]
        routed = httpx.post(gw + "/v1/route", json={"model": "uniroute", "messages": [
            {"role": "user", "content": "What is 2 + 2?"}]}, timeout=10).json()
        assert routed["model"] == "echo"
    assert len(upstream.received) == asked
