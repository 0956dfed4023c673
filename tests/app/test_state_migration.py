"""The admin side of a live state switch on a demo gateway: a manual migration waits for its
commit, one migration at a time, abandoning leaves the active state, bad input is refused; and
`uniroute state` drives the same API. The new set is the shipped set's first 20 items (a new
set version under the same clusters): the demo models are asked them for real (replay upstream,
mc_letter grading) on the RouterBench state the demo gateways of these tests use."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from app.cli.main import main
from router_core.repset import load_repset
from tests.app.conftest import ROUTERBENCH_SETTINGS

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
        assert pending["progress"] == {"done": 20 * len(demo_configs), "total": 20 * len(demo_configs),
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
