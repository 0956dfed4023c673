"""The shipped router states and representative sets: what a fresh install routes with."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from router_core import UniRouter
from router_core.repset import load_repset
from router_core.shipped import (
    DEFAULT_REPSET,
    DEFAULT_STATE,
    ROUTERBENCH_REPSET,
    SHIPPED_STATES,
)

GENERAL = ("fast", "accurate")
FLOOR = 15


@pytest.fixture(scope="module", params=GENERAL)
def general(request, shared_cache) -> UniRouter:
    return UniRouter.load(request.param, cache_dir=shared_cache)


def top_task(router: UniRouter, prompt: str, top: int = 1) -> str:
    """The `top` main tasks of the cluster `prompt` falls in, from the state's own cluster labels."""
    cluster = int(np.argmax(router.weights([prompt])[0]))
    return " ".join(task for task, _ in router.state.metadata["clusters"][cluster]["top_tasks"][:top])


def test_every_shipped_state_loads_with_the_default_set_and_fast_is_the_default(shared_cache):
    assert DEFAULT_STATE == "fast"
    for name in SHIPPED_STATES:
        # The run's cache: the set is embedded once per embedder, not once per state and test
        # (loading without a cache is test_the_first_routerbench_states_and_set_still_ship's).
        router = UniRouter.load(name, cache_dir=shared_cache)
        assert router.repset.repset.items == load_repset(DEFAULT_REPSET).items
        assert router.repset.weights.shape == (len(router.repset.ids), router.n_clusters)


def test_every_cluster_of_the_general_states_holds_at_least_15_graded_items(general):
    per_cluster = general.repset.weights.sum(axis=0)
    assert per_cluster.min() >= FLOOR, per_cluster
    graders = Counter(item.grader for item in general.repset.repset.items)
    assert set(graders) == {"mc_letter", "numeric", "code_tests", "llm_judge:rating"}


def test_the_general_states_name_every_cluster_in_words(general):
    clusters = general.state.metadata["clusters"]
    assert [c["id"] for c in clusters] == list(range(general.n_clusters))
    assert all(c["label"] and c["examples"] and c["size"] > 0 for c in clusters)


def test_the_general_states_tell_code_maths_and_open_ended_requests_apart(general):
    code = top_task(general, "Write a Python function that returns the longest palindromic substring of a string. "
                             "Your code should pass these tests: assert longest('babad') == 'bab'")
    maths = top_task(general, "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                              "clips in May. How many clips did Natalia sell altogether in April and May?")
    chat = top_task(general, "I run a small bakery. Draft a friendly email to my customers announcing that we "
                             "now open on Sundays, and suggest three subject lines.", top=3)
    assert any(word in code for word in ("mbpp", "humaneval", "javascript"))
    assert any(word in maths for word in ("gsm8k", "MATH"))
    assert "arena" in chat


def test_the_first_routerbench_states_and_set_still_ship():
    router = UniRouter.load("routerbench-fast", ROUTERBENCH_REPSET)
    assert router.n_clusters == 10 and len(router.repset.ids) == 400
