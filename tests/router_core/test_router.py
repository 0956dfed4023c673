"""UniRouter, the in-process API: loading a shipped state, adding models from scores or
profiles, routing one prompt or a batch for a cost weight, a budget or a quality."""
from __future__ import annotations

import numpy as np
import pytest

from router_core import NoRoutableModel, NotCalibrated, Price, UniRouter
from router_core.embedding import FAST_DIRNAME
from router_core.pricing import estimate_tokens
from router_core.repset import load_repset
from router_core.shipped import DEFAULT_REPSET, SHIPPED_STATES

PROMPTS = ["Which gas do plants take in? A) O2 B) CO2 C) N2 D) He",
           "Write a Python function that returns the n-th Fibonacci number.",
           "The trophy doesn't fit into the suitcase because _ is too small. Option 1: trophy Option 2: suitcase"]


@pytest.fixture(scope="module")
def shipped():
    """(state, embedder, representative set) of the shipped `fast` state."""
    router = UniRouter.load("fast")
    return router.state, router.embedder, load_repset(DEFAULT_REPSET)


def two_model_router(shipped, **options) -> UniRouter:
    """A dear model right on 90% of the prompts and a cheap one right on 60%, drawn at random."""
    state, embedder, repset = shipped
    router = UniRouter(state, embedder, repset, **options)
    rng = np.random.default_rng(0)
    router.add_model("big", Price(10.0, 30.0), scores={i: float(rng.random() < 0.9) for i in router.repset.ids})
    router.add_model("small", Price(0.2, 0.6), scores={i: float(rng.random() < 0.6) for i in router.repset.ids})
    return router


def test_load_gives_the_shipped_state_and_representative_set_with_no_model_yet():
    router = UniRouter.load("fast")
    assert router.n_clusters == router.state.k > 1
    assert len(router.repset.ids) == len(load_repset(DEFAULT_REPSET).items)
    assert router.models == []
    with pytest.raises(NoRoutableModel):
        router.route(PROMPTS[0])


def test_a_decision_names_the_model_its_cluster_error_interval_cost_and_every_candidate(shipped):
    router = two_model_router(shipped)
    d = router.route(PROMPTS[0], cost_weight=0.0)
    assert d.model == "big"  # with cost weight 0 the most accurate model wins
    assert [c.model for c in d.candidates] == ["big", "small"]
    lo, hi = d.error_interval
    assert lo <= d.predicted_error <= hi
    assert d.cluster == int(np.argmax(router.weights([PROMPTS[0]])[0]))
    big = next(m for m in router.models if m.name == "big")
    assert d.expected_cost == pytest.approx(big.price.expected(estimate_tokens(len(PROMPTS[0])),
                                                               router.default_output_tokens))
    assert d.to_dict()["candidates"][0]["model"] == "big"


def test_a_batch_is_decided_as_each_prompt_would_be_alone(shipped):
    router = two_model_router(shipped)
    batch = router.route(PROMPTS, cost_weight=0.3)
    alone = [router.route(p, cost_weight=0.3) for p in PROMPTS]
    assert [(d.model, d.cluster, d.ranking, d.expected_cost) for d in batch] == \
           [(d.model, d.cluster, d.ranking, d.expected_cost) for d in alone]


def test_a_budget_target_is_resolved_on_the_curve_and_met_when_the_cheapest_routing_fits(shipped):
    router = two_model_router(shipped)
    curve = router.calibration()
    cheapest = float(curve.cost.min())
    d = router.route(PROMPTS[0], budget=cheapest * 1.01)
    assert d.target.met and d.target.expected_cost <= cheapest * 1.01
    tight = router.route(PROMPTS[0], budget=cheapest / 10)
    assert not tight.target.met  # the cheapest routing is given, and said not to meet the budget
    assert tight.target.cost_weight == pytest.approx(float(curve.lambdas[-1]))


def test_a_quality_target_of_one_asks_for_the_best_expected_score(shipped):
    router = two_model_router(shipped)
    d = router.route(PROMPTS[1], quality=1.0)
    assert d.target.met and d.target.expected_score == pytest.approx(router.calibration().best_score)


def test_one_target_at_a_time(shipped):
    with pytest.raises(ValueError, match="one target"):
        two_model_router(shipped).route(PROMPTS[0], budget=0.01, quality=0.9)


def test_routing_among_a_subset_never_picks_a_model_outside_it(shipped):
    router = two_model_router(shipped)
    assert {d.model for d in router.route(PROMPTS, cost_weight=0.0, models=["small"])} == {"small"}
    with pytest.raises(NoRoutableModel):
        router.route(PROMPTS[0], models=["nobody"])


def test_a_model_added_from_a_stored_profile_routes_like_one_added_from_its_scores(shipped):
    router = two_model_router(shipped)
    stored = {m.name: m for m in router.models}
    copy = UniRouter(router.state, router.embedder, router.repset.repset)
    for m in stored.values():
        copy.add_model(m.name, m.price, profile=m.profile)
    assert [d.ranking for d in copy.route(PROMPTS)] == [d.ranking for d in router.route(PROMPTS)]


def test_bad_models_are_refused_with_a_reason(shipped):
    router = two_model_router(shipped)
    with pytest.raises(ValueError, match="not in the representative set"):
        router.add_model("x", Price(), scores={"no-such-prompt": 1.0})
    with pytest.raises(ValueError, match="clusters"):
        other = two_model_router(shipped).models[0].profile
        other.errors.append(0.5)
        other.counts.append(1.0)
        router.add_model("y", Price(), profile=other)
    with pytest.raises(ValueError, match="scores .* or its profile"):
        router.add_model("z", Price())


def test_removing_a_model_stops_routing_to_it(shipped):
    router = two_model_router(shipped)
    router.remove_model("big")
    assert router.route(PROMPTS[0], cost_weight=0.0).model == "small"


def test_without_a_representative_set_a_budget_cannot_be_resolved_but_a_cost_weight_can(shipped):
    state, embedder, _ = shipped
    with_set = two_model_router(shipped)
    router = UniRouter(state, embedder)
    for m in with_set.models:
        router.add_model(m.name, m.price, profile=m.profile)
    assert router.route(PROMPTS[0], cost_weight=0.0).model == "big"
    with pytest.raises(NotCalibrated):
        router.route(PROMPTS[0], budget=0.01)


def test_a_state_folder_loads_like_a_shipped_name(shipped, tmp_path):
    state, _, _ = shipped
    state.save(tmp_path)
    (tmp_path / FAST_DIRNAME).symlink_to(SHIPPED_STATES["fast"] / FAST_DIRNAME)
    loaded = UniRouter.load(tmp_path)
    assert loaded.state.version == state.version
    assert loaded.repset.ids == UniRouter.load("fast").repset.ids
