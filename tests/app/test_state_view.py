"""What `GET /admin/state` shows of a router state: per cluster its label and examples (from the
state's metadata, read defensively, else the representative items nearest the centroid), its
representative items by grader, and whether it is below the coverage floor."""
from __future__ import annotations

import json
import logging

import httpx
import pytest

from app.runtime.state_view import (
    clusters_view,
    grader_name,
    log_coverage,
    repset_examples,
    state_fields,
)
from router_core.repset import RepItem, write_repset
from router_core.router import UniRouter
from router_core.shipped import DEFAULT_REPSET, state_path
from router_core.state import RouterState, build_state

MATHS = ["What is 17 times 23?", "Solve for x: 3x + 5 = 20.", "What is the derivative of x^3?",
         "Compute 2 to the power of 10.", "What is the square root of 144?", "Integrate 2x dx."]
COOKING = ["How long should I boil an egg?", "What can I cook with rice and beans?",
           "How do I make bread rise faster?", "What spices go with lamb?", "How do I caramelise onions?",
           "What is a good vegetarian lasagne recipe?"]


@pytest.fixture(scope="module")
def router(embedder, tmp_path_factory) -> UniRouter:
    """A real 2-cluster state (maths, cooking) and a small set: 4 maths items (2 judged, 2 by
    letter), 1 cooking item judged with a rating."""
    d = tmp_path_factory.mktemp("view")
    state = build_state(MATHS + COOKING, embedder, 2, embedder_spec="accurate", max_chars=1000)
    maths = int(state.cluster_weights(embedder.encode(MATHS[:1])).argmax())
    state.metadata["clusters"] = [{"id": maths, "label": "arithmetic and calculus", "size": 6,
                                   "examples": ["What is 17 times 23?"], "top_tasks": ["gsm8k"]},
                                  {"id": 7, "label": "out of range"}, "not a dict", {"id": "0"}]
    state.save(d / "state")
    items = [RepItem("m1", MATHS[0], "391", "llm_judge"), RepItem("m2", MATHS[1], "5", "llm_judge:correct"),
             RepItem("m3", MATHS[2] + " A. 3x^2 B. x^2", "A", "mc_letter"),
             RepItem("m4", MATHS[3] + " A. 1024 B. 100", "A", "mc_letter"),
             RepItem("c1", COOKING[0], "About 7 minutes.", "llm_judge:rating")]
    write_repset(items, d / "repset.jsonl")
    return UniRouter.load(d / "state", d / "repset.jsonl")


def test_judges_are_named_with_their_kind():
    assert grader_name("llm_judge") == "llm_judge:correct"
    assert grader_name("llm_judge:pairwise") == "llm_judge:pairwise"
    assert grader_name("mc_letter") == "mc_letter"


def test_clusters_take_labels_from_metadata_and_count_items_by_grader(router):
    view = clusters_view(router, floor=3, examples=[["fallback 0"], ["fallback 1"]])
    maths = next(c for c in view if c["label"] == "arithmetic and calculus")
    cooking = next(c for c in view if c is not maths)
    assert maths["graders"] == {"llm_judge:correct": 2, "mc_letter": 2} and maths["repset_items"] == 4
    assert maths["examples"] == ["What is 17 times 23?"] and maths["size"] == 6 and maths["top_tasks"] == ["gsm8k"]
    assert cooking["graders"] == {"llm_judge:rating": 1}
    assert (cooking["label"], cooking["size"], cooking["top_tasks"]) == (None, None, None)
    assert cooking["examples"] == [f"fallback {cooking['id']}"]  # none in the metadata: the stand-ins
    assert (maths["below_floor"], cooking["below_floor"]) == (False, True)


def test_a_pooled_cluster_counts_every_item_and_the_others_their_own(router, tmp_path):
    cooking = next(c["id"] for c in clusters_view(router, 3, None) if c["label"] is None)
    router.state.save(tmp_path / "state")
    meta = json.loads((tmp_path / "state" / "state.json").read_text())
    meta["pooled_clusters"] = [cooking]
    (tmp_path / "state" / "state.json").write_text(json.dumps(meta))
    write_repset(router.repset.repset.items, tmp_path / "repset.jsonl")
    pooled = UniRouter.load(tmp_path / "state", tmp_path / "repset.jsonl")
    view = {c["id"]: c for c in clusters_view(pooled, floor=3, examples=None)}
    assert (view[cooking]["pooled"], view[cooking]["repset_items"], view[cooking]["below_floor"]) == (True, 5, False)
    assert view[cooking]["graders"] == {"llm_judge:correct": 2, "mc_letter": 2, "llm_judge:rating": 1}
    assert (view[1 - cooking]["pooled"], view[1 - cooking]["repset_items"]) == (False, 4)


def test_examples_default_to_the_representative_items_nearest_each_centroid(router):
    examples = repset_examples(router, n=2)
    view = clusters_view(router, 0, examples)
    cooking = next(c for c in view if c["label"] is None)
    assert cooking["examples"] == [COOKING[0]]
    assert len(examples[1 - cooking["id"]]) == 2


def test_state_fields_and_the_start_up_warning(router, caplog):
    fields = state_fields(router)
    assert (fields["k"], fields["embedder"], fields["method"], fields["repset_items"]) == (2, "accurate",
                                                                                       "uniroute_kmeans", 5)
    assert fields["version"] == router.state.version and fields["drift_threshold"] > 0
    with caplog.at_level(logging.WARNING, logger="uniroute"):
        log_coverage(router, floor=3)
    assert [r.getMessage() for r in caplog.records if "coverage floor" in r.getMessage()] == [
        next(f"cluster {c['id']} has 1 representative items, below the coverage floor of 3: profiles say little "
             "about it" for c in clusters_view(router, 3, None) if c["label"] is None)]


def test_admin_state_of_the_demo_gateway(make_gateway):
    admin = "state-admin-key"
    with make_gateway(admin_key=admin) as gw:
        r = httpx.get(gw + "/admin/state", headers={"authorization": f"Bearer {admin}"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
    state, clusters = body["state"], body["clusters"]
    assert state["k"] == len(clusters) == 10 and state["embedder"] == "fast" and state["drift_threshold"] > 0
    assert body["pending"] is None and body["coverage_floor"] == 15
    assert sum(c["repset_items"] for c in clusters) == state["repset_items"] == 400
    for c in clusters:
        assert set(c["graders"]) <= {"mc_letter"} and sum(c["graders"].values()) == c["repset_items"]
        assert c["below_floor"] == (c["repset_items"] < 15)
        assert bool(c["examples"]) == (c["repset_items"] > 0)
    assert any(c["below_floor"] for c in clusters)  # the RouterBench set has no code items
    assert all(c["output_scale"] is None for c in clusters)  # this state prices every cluster alike


def test_admin_state_of_the_general_defaults_labels_every_cluster_and_covers_it(make_gateway):
    admin = "state-admin-key"
    with make_gateway(admin_key=admin, models=[], state_dir="fast", repset_path=str(DEFAULT_REPSET)) as gw:
        body = httpx.get(gw + "/admin/state", headers={"authorization": f"Bearer {admin}"}, timeout=60).json()
    meta = {c["id"]: c for c in RouterState.load(state_path("fast")).metadata["clusters"]}
    assert len(body["clusters"]) == body["state"]["k"] == len(meta)
    for c in body["clusters"]:
        assert (c["label"], c["size"], c["examples"]) == (meta[c["id"]]["label"], meta[c["id"]]["size"],
                                                          meta[c["id"]]["examples"])
        assert c["repset_items"] >= 15 and not c["below_floor"]
    # the factor each cluster's answers are priced at: multiple choice far below open-ended requests
    scale = {c["label"].split(" ")[0]: c["output_scale"] for c in body["clusters"]}
    assert scale["routerbench/winogrande"] < 0.1 < 1.5 < scale["arena-hard-v0.1"]
    graders = {g for c in body["clusters"] for g in c["graders"]}
    assert "llm_judge:rating" in graders and "llm_judge" not in graders
