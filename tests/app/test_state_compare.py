"""Before a switch: export the graded prompts of a set and compare router states on them with
`uniroute eval --compare-states`."""
from __future__ import annotations

import json

import httpx

from app.cli.main import main
from router_core.shipped import ROUTERBENCH_REPSET
from tests.app.test_admin import ADMIN, admin, wait_job

ITEMS = 12


def test_graded_prompts_export_as_a_dataset_that_compares_states(make_gateway, fault_upstream, tmp_path,
                                                                  shared_cache):
    upstream, url = fault_upstream
    repset = tmp_path / "set.jsonl"
    repset.write_text("".join(ROUTERBENCH_REPSET.read_text().splitlines(keepends=True)[:ITEMS]))
    with make_gateway(models=[], admin_key=ADMIN, repset_path=str(repset)) as gw:
        for name, price in (("a", 1.0), ("b", 2.0)):
            r = admin(gw, "POST", "/models", json={"name": name, "base_url": url, "cost": {"per_request": price}})
            assert wait_job(gw, r.json()["job_id"])["state"] == "done"
        r = httpx.get(gw + "/admin/state/graded", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        rows = [json.loads(line) for line in r.text.splitlines()]
    assert len(rows) == ITEMS
    assert all(set(row["scores"]) == {"a", "b"} and row["costs"] == {"a": 1.0, "b": 2.0} for row in rows)
    assert all(score in (0.0, 1.0) for row in rows for score in row["scores"].values())

    data, out = tmp_path / "graded.jsonl", tmp_path / "compare.json"
    data.write_text(r.text)
    assert main(["eval", "--data", str(data), "--compare-states", "routerbench-fast", "fast", "--trials", "3",
                 "--cache-dir", shared_cache, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_prompts"] == ITEMS and result["n_models"] == 2 and set(result["states"]) == {
        "routerbench-fast", "fast"}
    assert set(result["paired"]) == {"fast - routerbench-fast"}


def test_comparing_a_single_state_is_a_one_line_usage_error(tmp_path, capsys):
    data = tmp_path / "graded.jsonl"
    data.write_text(json.dumps({"id": "x", "prompt": "p", "scores": {"a": 1}, "costs": {"a": 1}}) + "\n")
    assert main(["eval", "--data", str(data), "--compare-states", "fast"]) == 2
    assert "at least two states" in capsys.readouterr().err
