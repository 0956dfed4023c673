"""UniRouter, the in-process API: loading a shipped state, adding models from scores or
profiles, routing one prompt or a batch for a cost weight, a budget or a quality."""
from __future__ import annotations

import multiprocessing
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_core import NoRoutableModel, NotCalibrated, Price, UniRouter
from router_core.pricing import estimate_tokens
from router_core.repset import load_repset
from router_core.router import RoutedModel
from router_core.shipped import DEFAULT_REPSET, ROUTERBENCH_REPSET
from router_core.targets import RoutingTarget

PROMPTS = ["Which gas do plants take in? A) O2 B) CO2 C) N2 D) He",
           "Write a Python function that returns the n-th Fibonacci number.",
           "The trophy doesn't fit into the suitcase because _ is too small. Option 1: trophy Option 2: suitcase"]


@pytest.fixture(scope="module")
def shipped():
    """(state, embedder, representative set) of the shipped `fast` state."""
    router = UniRouter.load("routerbench-fast", ROUTERBENCH_REPSET)
    return router.state, router.embedder, load_repset(ROUTERBENCH_REPSET)


def two_model_router(shipped, **options) -> UniRouter:
    """A dear model right on 90% of the prompts and a cheap one right on 60%, drawn at random."""
    state, embedder, repset = shipped
    router = UniRouter(state, embedder, repset, **options)
    rng = np.random.default_rng(0)
    router.add_model("big", Price(10.0, 30.0), scores={i: float(rng.random() < 0.9) for i in router.repset.ids})
    router.add_model("small", Price(0.2, 0.6), scores={i: float(rng.random() < 0.6) for i in router.repset.ids})
    return router


# Targets a pickled router must decide as the original: a cost weight, a budget, a quality, a subset.
ROUND_TRIP_TARGETS = [{"cost_weight": 0.0}, {"cost_weight": 0.3}, {"budget": 0.004}, {"quality": 0.9},
                      {"cost_weight": 0.3, "models": ["small"]}]


def decided(router: UniRouter, prompts: list[str]) -> list[list[dict]]:
    """Every decision, candidates included, of `prompts` routed for each of ROUND_TRIP_TARGETS."""
    return [[d.to_dict() for d in router.route(prompts, **target)] for target in ROUND_TRIP_TARGETS]


def test_a_pickled_router_decides_as_the_original_without_carrying_its_embedding_model(shipped):
    router = two_model_router(shipped)
    prompts = PROMPTS + [f"{p} Explain your answer." for p in PROMPTS]
    before = decided(router, prompts)  # fills the recent prompts' weights and remembered decisions
    blob = pickle.dumps(router)
    # The static model's weights are read again from where they lie, not shipped in the pickle.
    assert len(blob) < (Path(router.embedder.path) / "model.safetensors").stat().st_size / 4
    copy = pickle.loads(blob)
    assert decided(copy, prompts) == before
    # Its own locks: it takes model changes, which the original never sees.
    copy.remove_model("big")
    assert {d.model for d in copy.route(prompts, cost_weight=0.0)} == {"small"}
    assert {m.name for m in router.models} == {"big", "small"}


def decided_in_a_worker(router: UniRouter, prompts: list[str]) -> list[list[dict]]:
    """`decided`, run in a pool's worker process (a module function, so the worker imports it)."""
    return decided(router, prompts)


def test_a_spawned_process_pool_routes_with_the_router_as_the_parent_does(shipped):
    router = two_model_router(shipped)
    chunks = [PROMPTS[:2], PROMPTS[2:]]
    # spawn: a fresh interpreter, as on macOS and Windows, so the router crosses only by pickle.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        in_workers = pool.starmap(decided_in_a_worker, [(router, chunk) for chunk in chunks])
    assert in_workers == [decided(router, chunk) for chunk in chunks]


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


def test_a_decisions_expectation_of_a_model_it_did_not_rank_is_a_value_error_naming_it(shipped):
    # It was tuple.index's "tuple.index(x): x not in tuple", naming neither model nor decision.
    d = two_model_router(shipped).route(PROMPTS[0], models=["small"])
    assert d.expectation("small") == (d.predicted_error, d.expected_cost)
    with pytest.raises(ValueError, match="'big' is not ranked in this decision; ranked: small"):
        d.expectation("big")


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


@pytest.mark.parametrize("target, message", [
    ({"cost_weight": float("nan")}, "cost_weight must be a finite number >= 0"),
    ({"cost_weight": float("inf")}, "cost_weight must be a finite number >= 0"),
    ({"cost_weight": -0.1}, "cost_weight must be a finite number >= 0"),
    ({"budget": -1.0}, "budget must be a finite number >= 0"),
    ({"quality": 95.0}, r"quality is a fraction .* in \(0, 1\]"),  # percent for a fraction
    ({"quality": 0.0}, r"quality is a fraction .* in \(0, 1\]"),
])
def test_a_target_out_of_its_range_is_refused_not_routed(shipped, target, message):
    # These used to route: a NaN or negative weight picked the cheap model, quality=95 the dear one.
    with pytest.raises(ValueError, match=message):
        two_model_router(shipped).route(PROMPTS[0], **target)


@pytest.mark.parametrize("target", [{"cost_weight": "0.3"}, {"cost_weight": True}, {"budget": "0.01"},
                                    {"quality": [0.9]}])
def test_a_target_that_is_not_a_number_is_a_type_error_naming_it(shipped, target):
    # "0.3" (read from a config file as text) and True used to route, as 0.3 and as a weight of 1.
    kind, value = next(iter(target.items()))
    with pytest.raises(TypeError, match=f"{kind} must be a number, got {re.escape(repr(value))}"):
        two_model_router(shipped).route(PROMPTS[0], **target)
    assert two_model_router(shipped).route(PROMPTS[0], **{kind: np.float32(0.5)}).model  # numpy numbers are numbers


def test_a_prompt_with_a_lone_surrogate_is_a_value_error_naming_it(shipped):
    # A lone surrogate (os.fsdecode's, or a broken JSON escape's) failed deep in routing with a
    # UnicodeEncodeError that named no prompt.
    router = two_model_router(shipped)
    with pytest.raises(ValueError, match=r"prompt 1 is not valid text: surrogates not allowed \('\\ud800' at character 6\)"):
        router.route(["Which gas do plants take in? é", "hello \ud800 world"])
    assert router.route("Which gas do plants take in? é").model  # other text beyond ASCII routes


# A chat message used to be routed as two prompts, its keys "role" and "content".
@pytest.mark.parametrize("prompts", [b"Which gas do plants take in?", ["a prompt", 3], None, 3,
                                     {"role": "user", "content": "Which gas do plants take in?"},
                                     {"Which gas do plants take in?", "def fib(n):"}])
def test_a_prompt_that_is_not_text_is_a_type_error_that_says_so(shipped, prompts):
    with pytest.raises(TypeError, match="route takes a prompt"):
        two_model_router(shipped).route(prompts)


def test_a_bad_default_cost_weight_is_refused_when_the_router_is_made(shipped):
    state, embedder, repset = shipped
    with pytest.raises(ValueError, match="cost_weight must be a finite number >= 0"):
        UniRouter(state, embedder, repset, default_cost_weight=-1.0)
    assert UniRouter(state, embedder, repset, default_cost_weight=0.7).default_cost_weight == 0.7


def test_routing_among_a_subset_never_picks_a_model_outside_it(shipped):
    router = two_model_router(shipped)
    assert {d.model for d in router.route(PROMPTS, cost_weight=0.0, models=["small"])} == {"small"}
    with pytest.raises(NoRoutableModel):
        router.route(PROMPTS[0], models=["nobody"])


def test_models_given_as_a_str_is_a_type_error_not_a_set_of_letters(shipped):
    # models="ab" was taken for its letters: among models named "a" and "b" it routed as if both
    # were allowed, and calibration("big") kept every model whose name is part of "big".
    router = two_model_router(shipped)
    profile = router.models[0].profile
    for name in ("a", "b", "bi"):
        router.add_model(name, Price(), profile=profile)
    with pytest.raises(TypeError, match=r"models must be a list of model names, not a str \(models=\['ab'\]\)"):
        router.route(PROMPTS[0], models="ab")
    with pytest.raises(TypeError, match="models must be a list of model names"):
        router.calibration("big")
    with pytest.raises(TypeError, match="models must be model names"):
        router.route(PROMPTS[0], models=["big", 3])
    assert router.route(PROMPTS[0], models=["a", "b"]).ranking in {("a", "b"), ("b", "a")}
    assert router.calibration(["big"]).models == ["big"]


@pytest.mark.parametrize("models, message", [(5, "models must be a list of model names, not a int"),
                                             ([["big"]], r"models must be model names \(str\), got \[\"\['big'\]\"\]")])
def test_models_neither_a_list_nor_of_names_are_a_type_error_naming_the_argument(shipped, models, message):
    # These failed inside frozenset(): "'int' object is not iterable", "unhashable type: 'list'".
    router = two_model_router(shipped)
    with pytest.raises(TypeError, match=message):
        router.route(PROMPTS[0], models=models)
    with pytest.raises(TypeError, match=message):
        router.calibration(models)


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


def test_a_profile_made_under_another_state_of_as_many_clusters_is_refused(shipped):
    # The same clusters numbered the other way round: the profile used to be taken as it was, so
    # each cluster's errors were another cluster's (as with routerbench-fast's profile under
    # routerbench-accurate, 10 clusters each).
    from dataclasses import replace

    state, embedder, repset = shipped
    router = two_model_router(shipped)
    other = UniRouter(replace(state, centroids=state.centroids[::-1]), embedder, repset)
    assert other.state.version != state.version
    with pytest.raises(ValueError, match="made under router state .* profile the model again"):
        other.add_model("big", Price(), profile=router.models[0].profile)
    assert other.models == []


@pytest.mark.parametrize("field, value, message", [
    ("errors", float("nan"), r"profile.errors: must lie in \[0, 1\]"),
    ("errors", -1.0, r"profile.errors: must lie in \[0, 1\]"),
    ("counts", -1.0, "profile.counts: must be finite and >= 0"),
    ("accuracy", float("nan"), r"profile.accuracy: must lie in \[0, 1\]"),
    ("accuracy", 2.0, r"profile.accuracy: must lie in \[0, 1\]"),
    ("errors", None, "profile.errors: must be a list, got NoneType"),
    ("counts", None, "profile.counts: must be a list, got NoneType"),
])
def test_a_stored_profile_out_of_range_is_refused_not_routed(shipped, field, value, message):
    # An error of -1 in every cluster used to win every routing; NaN was ranked as it fell. An
    # accuracy of NaN or 2 was taken as it came, and missing vectors failed in len() naming no field.
    from dataclasses import replace

    router = two_model_router(shipped)
    profile = router.models[1].profile
    per_cluster = field in ("errors", "counts") and value is not None  # the value in every cluster
    bad = replace(profile, **{field: [value] * len(profile.errors) if per_cluster else value})
    with pytest.raises(ValueError, match=message):
        router.add_model("bad", Price(), profile=bad)
    with pytest.raises(TypeError, match="profile must be a Profile"):
        router.add_model("bad", Price(), profile=profile.to_dict())
    assert [m.name for m in router.models] == ["big", "small"]


@pytest.mark.parametrize("score", [2.0, -0.5, float("nan"), float("inf"), "1", None])
def test_a_score_outside_0_1_is_refused_not_made_into_an_error_rate_out_of_range(shipped, score):
    # A score of 2 used to make a profile with error -1 on its cluster, which won every routing there.
    router = two_model_router(shipped)
    ids = router.repset.ids
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        router.add_model("x", Price(), scores={ids[0]: score, ids[1]: 1.0})
    assert [m.name for m in router.models] == ["big", "small"]


@pytest.mark.parametrize("name, price, message", [
    (None, Price(), "name must be a str, not NoneType"),
    ("x", {"input_per_mtok": 1.0}, "price must be a Price, not dict"),
    ("x", None, "price must be a Price, not NoneType"),
])
def test_a_model_of_a_bad_name_or_price_is_a_type_error_and_the_router_goes_on(shipped, name, price, message):
    # A dict for a price used to fail in the table's build with an AttributeError, after the model
    # had been kept: every later add_model and remove_model failed the same way.
    router = two_model_router(shipped)
    scores = {i: 1.0 for i in router.repset.ids}
    with pytest.raises(TypeError, match=message):
        router.add_model(name, price, scores=scores)
    router.add_model("next", Price(), scores=scores)
    router.remove_model("next")
    assert [m.name for m in router.models] == ["big", "small"]


def test_a_model_set_the_table_refuses_changes_nothing(shipped):
    router = two_model_router(shipped)
    broken = RoutedModel("broken", None, router.models[0].profile)  # a caller's own RoutedModel, unchecked
    with pytest.raises(AttributeError):
        router.set_models([*router.models, broken])
    router.add_model("next", Price(), scores={i: 1.0 for i in router.repset.ids})
    assert [m.name for m in router.models] == ["big", "next", "small"]


def test_of_two_models_of_one_name_the_later_is_routed_once(shipped):
    router = two_model_router(shipped)
    big, small = router.models
    router.set_models([big, small, RoutedModel("big", Price(), small.profile)])
    assert [m.name for m in router.models] == ["big", "small"]
    assert router.models[0].price == Price() and router.route(PROMPTS[0]).ranking in {("big", "small"),
                                                                                     ("small", "big")}


@pytest.mark.parametrize("tokens", [-300.0, float("nan"), float("inf")])
def test_a_mean_answer_length_below_0_or_not_finite_is_refused_not_priced(shipped, tokens):
    # -300 output tokens used to price the dear model's answers below nothing: it won every
    # prompt at any cost weight, and NaN made its expected costs and the curve's NaN.
    from dataclasses import replace

    router = two_model_router(shipped)
    with pytest.raises(ValueError, match="avg_output_tokens must be a finite number >= 0"):
        router.add_model("x", Price(10.0, 30.0), scores={i: 1.0 for i in router.repset.ids},
                         avg_output_tokens=tokens)
    stored = replace(router.models[0].profile, avg_output_tokens=tokens)
    with pytest.raises(ValueError, match="profile.avg_output_tokens: must be finite and >= 0"):
        router.add_model("x", Price(10.0, 30.0), profile=stored)
    assert [m.name for m in router.models] == ["big", "small"]


def test_models_added_and_removed_from_several_threads_at_once_are_all_kept(shipped):
    # Each add_model read the models and wrote them back with its own: of eight added at once,
    # some were lost from the routed table (and still listed in the router's own record).
    import threading

    router = two_model_router(shipped)
    profile = router.models[1].profile
    start = threading.Barrier(10)

    def change(j):
        start.wait()
        if j < 8:
            router.add_model(f"m{j}", Price(per_request=0.001 * j), profile=profile)
        else:
            router.remove_model(("big", "small")[j - 8])

    threads = [threading.Thread(target=change, args=(j,)) for j in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [m.name for m in router.models] == [f"m{j}" for j in range(8)]
    assert set(router.route(PROMPTS[0]).ranking) == {f"m{j}" for j in range(8)}


class RemovingWhileEmbedding:
    """The router's embedder, but another thread removes `name` from `router` while a prompt is
    embedded: the moment route() spends waiting on the embedding model."""

    def __init__(self, router: UniRouter, name: str) -> None:
        self.router, self.name, self.inner = router, name, router.embedder

    def __getattr__(self, attr: str):
        return getattr(self.inner, attr)

    def encode(self, texts: list[str]) -> np.ndarray:
        import threading

        remover = threading.Thread(target=self.router.remove_model, args=(self.name,))
        remover.start()
        remover.join()
        return self.inner.encode(texts)


@pytest.mark.parametrize("target", [{"cost_weight": 0.3}, {"budget": 0.004}])
def test_a_model_removed_by_another_thread_during_a_route_to_it_still_gives_a_decision(shipped, target):
    # route() checked the allowed models on one table and decided on the next: it returned None
    # (neither a Decision nor NoRoutableModel) when the only allowed model went meanwhile.
    router = two_model_router(shipped)
    router.embedder = RemovingWhileEmbedding(router, "small")
    decision = router.route(PROMPTS[0], models=["small"], **target)
    assert decision.model == "small" and decision.target.expected_cost is not None
    assert [m.name for m in router.models] == ["big"]


def test_curves_of_many_model_subsets_asked_from_several_threads_at_once_all_come(shipped):
    # Each subset's curve is kept, the oldest evicted past _SUBSET_CURVES: one thread's eviction
    # loop over the kept curves met another's insertion, "dictionary changed size during iteration".
    import itertools
    import sys
    import threading

    router = two_model_router(shipped)
    profile = router.models[1].profile
    for j in range(6):
        router.add_model(f"m{j}", Price(per_request=0.001 * j), profile=profile)
    names = [m.name for m in router.models]
    subsets = [list(c) for size in (2, 3, 4) for c in itertools.combinations(names, size)]  # past _SUBSET_CURVES
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often, as on a loaded machine
    try:
        start = threading.Barrier(8)
        failures = []

        def ask(offset):
            start.wait()
            for j in range(len(subsets)):
                subset = subsets[(offset * 7 + j) % len(subsets)]
                try:
                    assert router.calibration(subset).models == sorted(subset)
                except Exception as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(repr(exc))

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def test_scores_given_as_a_list_are_a_type_error_not_unknown_prompt_ids(shipped):
    # A list of scores was read as prompt ids: "scores name 417 prompts not in the representative set".
    router = two_model_router(shipped)
    with pytest.raises(TypeError, match="scores must be a dict of scores by representative prompt id, not list"):
        router.add_model("x", Price(), scores=[1.0] * len(router.repset.ids))


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
    # It said the curve was "not built yet", as if waiting would build it.
    with pytest.raises(NotCalibrated, match="a budget target needs the λ curve, measured on a representative "
                                            "set: this router has none"):
        router.route(PROMPTS[0], budget=0.01)


def test_a_state_folder_loads_like_a_shipped_name(shipped, tmp_path):
    state, _, _ = shipped
    state.save(tmp_path)
    loaded = UniRouter.load(tmp_path)
    assert loaded.state.version == state.version
    assert loaded.repset.ids == UniRouter.load("fast").repset.ids


@pytest.mark.parametrize("prior", [float("nan"), -1.0, float("inf")])
def test_a_state_folder_whose_prior_is_not_a_number_of_pseudo_prompts_does_not_load(shipped, tmp_path, prior):
    # A NaN prior (a hand edit of state.json) loaded: every profile fell back to the model's
    # overall mean, so no cluster was told apart, and every error interval was NaN; -1 loaded
    # and failed at the first add_model without naming the state.
    import json

    state, _, _ = shipped
    state.save(tmp_path)
    meta = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**meta, "prior": prior}))
    with pytest.raises(ValueError, match=f"no valid router state in {tmp_path}: prior must be a finite number >= 0"):
        UniRouter.load(tmp_path, ROUTERBENCH_REPSET)


# -- the cost scale: a decision depends on the prompt and its own candidates, not on the pool ----

_POOL_PRICE = st.one_of(
    st.builds(lambda r: Price(per_request=r), st.floats(1e-6, 1.0)),
    st.builds(lambda i, o: Price(input_per_mtok=i, output_per_mtok=o), st.floats(0.01, 100.0), st.floats(0.01, 300.0)),
)
_POOL_MODEL = st.tuples(_POOL_PRICE, st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))  # price, accuracy, seed


def _pool_models(router: UniRouter, specs, prefix: str) -> list[RoutedModel]:
    """Models right on each representative prompt with their accuracy's probability."""
    models = []
    for j, (price, accuracy, seed) in enumerate(specs):
        rng = np.random.default_rng(seed)
        scores = {i: float(rng.random() < accuracy) for i in router.repset.ids}
        models.append(RoutedModel(f"{prefix}{j}", price, router.profile(scores)))
    return models


@pytest.fixture(scope="module")
def pool_router(shipped):
    """A router on the shipped state and set, with the prompts to decide: the representative set's
    own cluster weights (every cluster the set reaches) and three more."""
    state, embedder, repset = shipped
    router = UniRouter(state, embedder, repset)
    weights = np.vstack([router.repset.weights, router.weights(PROMPTS)])
    lengths = [len(item.prompt) for item in repset.items] + [len(p) for p in PROMPTS]
    return router, weights, estimate_tokens(np.array(lengths, dtype=np.float64))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pool=st.lists(_POOL_MODEL, min_size=1, max_size=5), extra=_POOL_MODEL,
       cost_weight=st.sampled_from([0.0, 0.05, 0.4, 2.0, 30.0]))
def test_adding_a_model_changes_no_decision_but_those_it_takes(pool_router, pool, extra, cost_weight):
    router, weights, tokens = pool_router
    models = _pool_models(router, pool, "m")
    (newcomer,) = _pool_models(router, [extra], "new")
    resolution = router.resolve(RoutingTarget("cost_weight", cost_weight))
    router.set_models(models)
    before = router.decide_batch(weights, resolution, tokens)
    router.set_models([*models, newcomer])
    after = router.decide_batch(weights, resolution, tokens)
    for b, a in zip(before, after):
        if a.model != newcomer.name:
            assert a.model == b.model
            assert tuple(m for m in a.ranking if m != newcomer.name) == b.ranking


def test_a_remembered_decision_is_the_one_the_matrix_work_gives_and_a_model_change_forgets_them(pool_router):
    """UniRouter.decide remembers single-prompt decisions under K-means; every term of the
    request is part of what it remembers them by."""
    router, weights, tokens = pool_router
    router.set_models(_pool_models(router, [(Price(1, 3), 0.8, 1), (Price(0.1, 0.3), 0.6, 2),
                                            (Price(5, 15), 0.9, 3)], "d"))
    resolutions = [router.resolve(RoutingTarget("cost_weight", lam)) for lam in (0.0, 0.4, 30.0)]
    terms = [(res, models, excluded, floor) for res in resolutions for models in (None, frozenset({"d0", "d1"}))
             for excluded in (frozenset(), frozenset({"d2"})) for floor in (0.0, 5.0)]
    for _ in range(2):  # the second pass answers from memory
        for row, n in zip(weights[::7], tokens[::7]):
            for res, models, excluded, floor in terms:
                fresh = router.decide_batch(row[None, :], res, np.array([n]), models, excluded, floor)[0]
                kept = router.decide(row, res, n, models, excluded, floor)
                assert (kept.model, kept.ranking, kept.cluster, kept.expected_cost, kept.cost_weight) == \
                       (fresh.model, fresh.ranking, fresh.cluster, fresh.expected_cost, fresh.cost_weight)
    assert router.table.decisions
    router.set_models(router.models[:2])
    assert router.table.decisions == {}
    assert router.decide(weights[0], resolutions[0], tokens[0]).ranking in {("d0", "d1"), ("d1", "d0")}


def test_an_expensive_model_never_chosen_moves_neither_decisions_nor_the_curve(shipped):
    router = two_model_router(shipped)
    curve = router.calibration()
    before = router.route(PROMPTS, cost_weight=0.4)
    # always wrong and dearer than both: the "$0.5 a request" model
    router.add_model("useless", Price(per_request=0.5), scores={i: 0.0 for i in router.repset.ids})
    after = router.route(PROMPTS, cost_weight=0.4)
    assert [d.model for d in after] == [d.model for d in before]
    assert [d.ranking[:2] for d in after] == [d.ranking for d in before]
    np.testing.assert_array_equal(router.calibration().lower, curve.lower)
    np.testing.assert_array_equal(router.calibration().cost, curve.cost)


def test_cost_weight_one_trades_one_unit_of_error_for_the_cost_scale(shipped):
    state, embedder, repset = shipped
    router = UniRouter(state, embedder, repset, cost_scale=0.02)
    ids = router.repset.ids
    # "dear" is right everywhere and costs 0.01 more a request than "cheap", right on 60% of prompts
    # everywhere: at λ the dear model is worth it while 0.4 > λ·0.01/0.02, i.e. up to λ = 0.8.
    router.add_model("dear", Price(per_request=0.011), scores={i: 1.0 for i in ids})
    router.add_model("cheap", Price(per_request=0.001), scores={i: float(n % 5 < 3) for n, i in enumerate(ids)})
    gap = {c.model: c.predicted_error for c in router.route(PROMPTS[0], cost_weight=0.0).candidates}
    switch = (gap["cheap"] - gap["dear"]) / (0.01 / 0.02)
    assert router.route(PROMPTS[0], cost_weight=switch * 0.99).model == "dear"
    assert router.route(PROMPTS[0], cost_weight=switch * 1.01).model == "cheap"


# -- the support guard -------------------------------------------------------------------------


def test_a_model_without_support_in_a_prompts_cluster_is_not_chosen_there_even_cheap_and_accurate(shipped):
    router = two_model_router(shipped)
    ids, items = router.repset.ids, router.repset.repset.items
    # Profiled on the ARC prompts only, all right: high overall accuracy, support 0 in the
    # Winogrande clusters, where its error is its overall mean alone; nearly free.
    router.add_model("partial", Price(per_request=1e-9),
                     scores={i: 1.0 for i, item in zip(ids, items) if item.task == "arc-challenge"})
    winogrande, arc = PROMPTS[2], PROMPTS[0]
    d = router.route(winogrande, cost_weight=50.0)
    partial = next(c for c in d.candidates if c.model == "partial")
    assert partial.support == 0 and not partial.supported
    assert partial.predicted_error < min(c.predicted_error for c in d.candidates if c.model != "partial")
    assert d.model == "small" and d.ranking[-1] == "partial"  # kept as the last fallback
    assert all(c.supported for c in d.candidates if c.model != "partial")
    assert d.to_dict()["candidates"][-1]["supported"] is False
    # Where it has support it is routed on it.
    assert router.route(arc, cost_weight=50.0).model == "partial"
    # Alone (or when the others are excluded) it still answers.
    assert router.route(winogrande, cost_weight=50.0, models=["partial"]).model == "partial"


def test_where_no_model_reaches_the_floor_one_with_no_answers_there_still_goes_last(shipped):
    # A floor above every cluster's count: nobody is `supported`, but "big" and "small" answered
    # the Winogrande prompts and "partial" none of them (it declined them while profiled, say).
    router = two_model_router(shipped, min_support=1e6)
    ids, items = router.repset.ids, router.repset.repset.items
    router.add_model("partial", Price(per_request=1e-9),
                     scores={i: 1.0 for i, item in zip(ids, items) if item.task == "arc-challenge"})
    d = router.route(PROMPTS[2], cost_weight=50.0)
    assert not any(c.supported for c in d.candidates)
    assert d.model == "small" and d.ranking[-1] == "partial"
    assert router.route(PROMPTS[0], cost_weight=50.0).model == "partial"  # ARC: it has answers there


def test_a_model_without_support_is_chosen_over_one_that_fails_every_prompt_there(shipped):
    # The guard trusts support, but a model known to fail everything is no safer a choice than
    # one with no answers of that kind (before, "hopeless" won even at cost weight 0).
    router = two_model_router(shipped)
    ids, items = router.repset.ids, router.repset.repset.items
    router.add_model("partial", Price(per_request=1.0),
                     scores={i: 1.0 for i, item in zip(ids, items) if item.task == "arc-challenge"})
    router.add_model("hopeless", Price(per_request=1e-9), scores={i: 0.0 for i in ids})
    d = router.route(PROMPTS[2], cost_weight=0.0, models=["hopeless", "partial"])  # Winogrande
    partial = next(c for c in d.candidates if c.model == "partial")
    assert partial.support == 0 and not partial.supported
    assert d.model == "partial"
    # beside models that do not surely fail there, the guard keeps it out as before
    assert router.route(PROMPTS[2], cost_weight=0.0).model == "big"


def test_where_no_model_has_support_the_rule_ranks_all_and_says_none_is_supported(shipped):
    router = two_model_router(shipped)
    code = PROMPTS[1]  # the shipped set holds no code prompt: its cluster has no support for anyone
    d = router.route(code, cost_weight=0.0)
    assert all(c.support == 0 and not c.supported for c in d.candidates)
    assert d.model == "big"


def test_the_support_floor_is_the_states_prior_unless_given(shipped):
    state, embedder, repset = shipped
    assert two_model_router(shipped).table.min_support == state.prior
    assert UniRouter(state, embedder, repset, min_support=0.0).table.min_support == 0.0
    with pytest.raises(ValueError, match="cost_scale"):
        UniRouter(state, embedder, repset, cost_scale=0.0)


# -- the state's output scale: a prompt's answer is priced by its cluster's answer length -------

def _scaled_router(shipped, scale, pooled: tuple[int, ...] = ()) -> UniRouter:
    """Two output-priced models (the answer length is what costs) on the shipped state with the
    output `scale` (and `pooled` clusters)."""
    from dataclasses import replace

    state, embedder, repset = shipped
    router = UniRouter(replace(state, output_scale=scale, pooled=pooled), embedder, repset)
    rng = np.random.default_rng(0)
    for name, price, accuracy in (("big", 60.0, 0.9), ("small", 1.0, 0.6)):
        router.add_model(name, Price(output_per_mtok=price), avg_output_tokens=300,
                         scores={i: float(rng.random() < accuracy) for i in router.repset.ids})
    return router


def test_an_output_scale_prices_a_long_answer_cluster_dearer_and_keeps_a_models_mean_on_the_set(shipped):
    plain = _scaled_router(shipped, None)
    clusters = plain.weights(PROMPTS).argmax(axis=1)
    assert clusters[0] != clusters[1]
    scale = np.ones(shipped[0].k)
    scale[int(clusters[0])] = 0.25  # multiple choice: short answers
    scale[int(clusters[1])] = 8.0  # the coding prompt's cluster draws long answers
    scaled = _scaled_router(shipped, scale)
    short, long = (scaled.route(p, cost_weight=0.0) for p in PROMPTS[:2])
    assert (short.model, long.model) == ("big", "big")
    assert long.expected_cost / short.expected_cost == pytest.approx(32.0)  # output-priced: 8 / 0.25
    plain_costs = [plain.route(p, cost_weight=0.0).expected_cost for p in PROMPTS[:2]]
    assert plain_costs[0] == plain_costs[1]
    # at cost weight 0 the choice ignores costs: the curve's first point costs the same on average
    assert scaled.calibration().cost[0] == pytest.approx(plain.calibration().cost[0])


def test_a_cost_weight_that_keeps_the_accurate_model_on_short_answers_turns_to_the_cheap_one_on_long(shipped):
    router = _scaled_router(shipped, None)
    clusters = router.weights(PROMPTS).argmax(axis=1)
    scale = np.full(shipped[0].k, 0.2)
    scale[int(clusters[1])] = 20.0
    scaled = _scaled_router(shipped, scale)
    lams = np.geomspace(1e-3, 1e3, 121)
    chosen = {p: [scaled.route(p, cost_weight=float(lam)).model for lam in lams] for p in PROMPTS[:2]}
    switch = {p: next((lam for lam, m in zip(lams, models) if m == "small"), None) for p, models in chosen.items()}
    assert switch[PROMPTS[1]] is not None and switch[PROMPTS[0]] is not None
    assert switch[PROMPTS[1]] < switch[PROMPTS[0]]  # the long-answer prompt goes cheap first


def test_a_state_without_an_output_scale_routes_exactly_as_before(shipped):
    plain = _scaled_router(shipped, None)
    ones = _scaled_router(shipped, np.ones(shipped[0].k))
    for lam in (0.0, 0.1, 0.4, 3.0):
        a, b = plain.route(PROMPTS, cost_weight=lam), ones.route(PROMPTS, cost_weight=lam)
        assert [d.model for d in a] == [d.model for d in b]
        np.testing.assert_allclose([d.expected_cost for d in a], [d.expected_cost for d in b])


def test_under_a_pooled_cluster_the_curve_scores_and_prices_the_set_as_the_router_routes_it(shipped):
    # A pooled cluster weighs every representative prompt in the profiles, never in a routing:
    # with the profile weights the curve added two clusters' errors per prompt (expected scores
    # below 0) and blended answer lengths, and the output scale averaged 1 on no routed prompt.
    router = _scaled_router(shipped, np.linspace(0.1, 3.0, shipped[0].k), pooled=(0,))
    prompts = [item.prompt for item in shipped[2].items]
    assert (router.weights(prompts) @ router.table.output_scale).mean() == pytest.approx(1.0)
    curve = router.calibration()
    assert curve.score.min() >= 0.0
    for p in (0, len(curve.lambdas) // 2, len(curve.lambdas) - 1):
        decisions = router.route(prompts, cost_weight=float(curve.lambdas[p]))
        assert curve.score[p] == pytest.approx(np.mean([1.0 - d.predicted_error for d in decisions]))
        assert curve.cost[p] == pytest.approx(np.mean([d.expected_cost for d in decisions]))
