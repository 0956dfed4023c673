"""Comparing router states on graded prompts before a switch (real RouterBench labels)."""
from __future__ import annotations

import numpy as np
import pytest

from app.demo import ROUTERBENCH_DIR
from router_core.datasets import load_routerbench
from router_core.embedding import embed_for_routing
from router_core.shipped import state_path
from router_core.state import RouterState, state_embedder
from router_core.state_compare import compare_states


@pytest.fixture(scope="module")
def graded():
    """300 RouterBench test prompts with their 11 models' labels and costs, and the cluster
    weights of the RouterBench state and of a one-cluster state (no prompt information)."""
    data = load_routerbench(ROUTERBENCH_DIR / "arc_challenge_test.csv")
    rows = np.arange(300)
    directory = state_path("routerbench-fast")
    state = RouterState.load(directory)
    emb = embed_for_routing(state_embedder(state, directory), [data.prompts[i] for i in rows], state.max_chars)
    weights = {"routerbench-fast": state.cluster_weights(emb), "one-cluster": np.ones((len(rows), 1))}
    return weights, data.scores[rows], data.costs[rows]


def test_a_state_compared_with_itself_differs_by_exactly_nothing(graded):
    weights, scores, costs = graded
    w = weights["routerbench-fast"]
    out = compare_states({"a": w, "b": w}, {"a": 4.0, "b": 4.0}, scores, costs, trials=3)
    assert out["paired"]["b - a"]["area_diff"] == 0 and out["states"]["a"] == out["states"]["b"]


def test_each_state_gets_an_area_and_the_others_a_paired_interval_against_the_first(graded):
    weights, scores, costs = graded
    out = compare_states(weights, {"routerbench-fast": 4.0, "one-cluster": 4.0}, scores, costs, trials=5)
    assert out["n_prompts"] == 300 and out["n_models"] == 11 and out["trials"] == 5
    for s in out["states"].values():
        assert 0 < s["area"] <= 1 and s["area_ci"][0] <= s["area"] <= s["area_ci"][1]
    d = out["paired"]["one-cluster - routerbench-fast"]
    assert d["ci"][0] <= d["area_diff"] <= d["ci"][1] and 0 <= d["wins"] <= 5


def test_too_few_fully_graded_prompts_or_a_single_state_is_a_clear_error(graded):
    weights, scores, costs = graded
    with pytest.raises(ValueError, match="at least two states"):
        compare_states({"a": weights["one-cluster"]}, {"a": 4.0}, scores, costs)
    holes = scores.copy()
    holes[5:, 0] = np.nan
    with pytest.raises(ValueError, match="graded for every model"):
        compare_states(weights, {"routerbench-fast": 4.0, "one-cluster": 4.0}, holes, costs)


def test_a_pooled_cluster_profiles_on_every_prompt_as_the_gateway_does(graded):
    weights, scores, costs = graded
    w = weights["routerbench-fast"]
    every_cluster_pooled = np.ones_like(w)  # every model's mean error everywhere: no prompt information
    out = compare_states({"one-cluster": weights["one-cluster"], "pooled": w}, {"one-cluster": 4.0, "pooled": 4.0},
                         scores, costs, trials=3, profile_weights={"pooled": every_cluster_pooled})
    assert out["states"]["pooled"] == out["states"]["one-cluster"]
