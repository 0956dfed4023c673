"""`uniroute build-state` on a capture export (K chosen on the data) and `uniroute repset build`,
on real Arena prompts with the real embedding model."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.cli.main import main
from app.demo.arena import ARENA_DIR
from router_core.repset import load_repset
from router_core.state import RouterState

# The project's copy of the arena-bench-v1 prompts (app/demo/data/arena_bench_v1, see its README).
ARENA = ARENA_DIR / "prompts.jsonl"


def arena_rows(n: int) -> list[dict]:
    return [json.loads(line) for line in ARENA.read_text().splitlines()[:n]]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """120 Arena prompts as a capture export: `{"id", "prompt"}` rows only."""
    path = tmp_path_factory.mktemp("export") / "capture.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in arena_rows(120)))
    return path


@pytest.fixture(scope="module")
def state4(export, tmp_path_factory, shared_cache) -> Path:
    out = tmp_path_factory.mktemp("state4")
    assert main(["build-state", "--data", str(export), "--clusters", "4", "--embedder", "accurate",
                 "--cache-dir", shared_cache, "--out", str(out)]) == 0
    return out


def test_build_state_on_a_capture_export_chooses_k_on_the_data(export, tmp_path, shared_cache, capsys):
    out = tmp_path / "state"
    assert main(["build-state", "--data", str(export), "--embedder", "accurate", "--cache-dir", shared_cache,
                 "--out", str(out)]) == 0
    state = RouterState.load(out)
    choice = state.metadata["k_choice"]
    assert set(choice["silhouettes"]) == {str(k) for k in range(2, 9)}  # 120 prompts, >= 15 a cluster
    eligible = [int(k) for k, n in choice["smallest_cluster"].items() if n >= 15]
    top = max(choice["silhouettes"][str(k)] for k in eligible)
    assert state.k == max(k for k in eligible if choice["silhouettes"][str(k)] >= top - 0.005 - 1e-4)
    said = capsys.readouterr().err
    assert f"chose K={state.k}" in said
    # a K left out for a small cluster is marked so beside its silhouette
    for k, n in choice["smallest_cluster"].items():
        assert bool(re.search(rf"K={k}: -?[0-9.]+ \(a cluster of {n}\)", said)) == (n < 15)
    clusters = state.metadata["clusters"]
    assert [c["id"] for c in clusters] == list(range(state.k)) and sum(c["size"] for c in clusters) == 120
    assert all(c["examples"] for c in clusters)


def test_repset_build_draws_per_cluster_keeps_row_graders_and_drops_duplicates(state4, tmp_path, shared_cache):
    rows = [{"id": r["id"], "prompt": r["prompt"], "reference": r["reference"]} for r in arena_rows(120)]
    rows[0] |= {"grader": "llm_judge:pairwise", "task": "own-task"}
    copies = [{**r, "id": r["id"] + "-again"} for r in rows]  # every prompt twice
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + copies))
    out = tmp_path / "repset.jsonl"
    assert main(["repset", "build", "--data", str(data), "--state", str(state4), "--per-cluster", "10",
                 "--out", str(out), "--cache-dir", shared_cache]) == 0
    items = load_repset(out).items
    prompts = [i.prompt for i in items]
    assert len(prompts) == len(set(prompts)) == 40  # 4 clusters x 10, no prompt twice
    by_id = {r["id"]: r for r in rows + copies}
    assert all(i.reference == by_id[i.id]["reference"] for i in items)
    for item in items:
        if item.id.removesuffix("-again") == rows[0]["id"]:
            assert (item.grader, item.task) == ("llm_judge:pairwise", "own-task")
        else:
            assert item.grader == "llm_judge:rating" and item.task.startswith("cluster-")
    assert sorted({i.task for i in items if i.task.startswith("cluster-")}) == [f"cluster-{k}" for k in range(4)]


def test_repset_build_without_references_asks_for_a_reference_model(export, state4, tmp_path, shared_cache, capsys):
    code = main(["repset", "build", "--data", str(export), "--state", str(state4), "--per-cluster", "3",
                 "--out", str(tmp_path / "r.jsonl"), "--cache-dir", shared_cache])
    assert code == 2
    assert "have no reference: give --reference-model" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()
