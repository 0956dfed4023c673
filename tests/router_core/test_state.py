"""RouterState: save/load round trip, cluster weights, and build_state with the real embedder."""
import json

import numpy as np
import pytest

from router_core.clustering import assign
from router_core.state import RouterState, build_state


def _centroids(k=4, d=8, seed=0):
    c = np.random.default_rng(seed).normal(size=(k, d))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def test_kmeans_state_round_trips_through_npz_and_json(tmp_path):
    state = RouterState("accurate", 1000, _centroids(), prior=4.0, metadata={"training_set": "x", "n_prompts": 9})
    state.save(tmp_path)
    again = RouterState.load(tmp_path)
    np.testing.assert_array_equal(again.centroids, state.centroids)
    assert (again.embedder, again.max_chars, again.method, again.prior, again.theta) == ("accurate", 1000, "uniroute_kmeans", 4.0, None)
    assert again.metadata == state.metadata
    assert json.loads((tmp_path / "state.json").read_text())["k"] == 4


def test_learned_map_state_round_trips_theta(tmp_path):
    c = _centroids()
    RouterState("accurate", 500, c, theta=30 * c, method="uniroute_learned_map").save(tmp_path)
    again = RouterState.load(tmp_path)
    np.testing.assert_array_equal(again.theta, 30 * c)
    assert again.method == "uniroute_learned_map"


def test_kmeans_weights_are_one_hot_at_the_nearest_centroid():
    c = _centroids()
    emb = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    w = RouterState("accurate", 1000, c).cluster_weights(emb)
    labels, _ = assign(c, emb)
    assert w.shape == (30, 4) and set(np.unique(w)) == {0.0, 1.0}
    assert (w.argmax(axis=1) == labels).all()


def test_learned_map_weights_are_soft_distributions():
    c = _centroids()
    emb = np.random.default_rng(2).normal(size=(30, 8)).astype(np.float32)
    w = RouterState("accurate", 1000, c, theta=2 * c, method="uniroute_learned_map").cluster_weights(emb)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert 0 < w.max() < 1


def test_embeddings_of_the_wrong_width_are_a_clear_error():
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        RouterState("accurate", 1000, _centroids()).cluster_weights(np.zeros((2, 5), dtype=np.float32))


def test_theta_only_with_the_learned_map():
    with pytest.raises(ValueError, match="theta"):
        RouterState("accurate", 1000, _centroids(), theta=_centroids())
    with pytest.raises(ValueError, match="theta"):
        RouterState("accurate", 1000, _centroids(), method="uniroute_learned_map")


def test_loading_a_missing_or_damaged_state_says_so(tmp_path):
    # A missing folder is most often a shipped state's name misspelt ("fats"): the names are listed.
    with pytest.raises(ValueError, match="no valid router state .*no such folder.*shipped state: fast, accurate, "):
        RouterState.load(tmp_path / "nowhere")
    RouterState("accurate", 1000, _centroids()).save(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="no valid router state"):
        RouterState.load(tmp_path)


PROMPTS = [f"What is {a} plus {b}?" for a in range(6) for b in range(3)] + [
    f"Translate '{w}' into French." for w in ("house", "dog", "tree", "car", "book", "water", "bread", "sun")
] + [f"Write a Python function that returns the {k}th prime." for k in range(1, 9)]


def test_build_state_with_the_real_embedder_separates_topics(embedder):
    state = build_state(PROMPTS, embedder, k=3, seed=0, embedder_spec="accurate", max_chars=1000,
                        metadata={"training_set": "toy"})
    assert (state.k, state.dim, state.method, state.max_chars) == (3, embedder.dim, "uniroute_kmeans", 1000)
    assert state.metadata["n_prompts"] == len(PROMPTS) and "created" in state.metadata
    from router_core.embedding import embed_for_routing

    labels = state.cluster_weights(embed_for_routing(embedder, PROMPTS, 1000)).argmax(axis=1)
    groups = [labels[:18], labels[18:26], labels[26:]]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 3


def test_build_state_learned_map_needs_labels_and_uses_them(embedder):
    with pytest.raises(ValueError, match="labels"):
        build_state(PROMPTS, embedder, k=3, method="uniroute_learned_map", embedder_spec="accurate", max_chars=1000)
    losses = np.zeros((len(PROMPTS), 2))
    losses[26:, 0] = 1.0  # model 0 fails the coding prompts
    state = build_state(PROMPTS, embedder, k=3, method="uniroute_learned_map", embedder_spec="accurate",
                        max_chars=1000, losses=losses)
    assert state.theta is not None and state.theta.shape == state.centroids.shape


def test_a_pooled_cluster_weighs_every_representative_prompt_and_round_trips(tmp_path):
    c = _centroids()
    emb = np.random.default_rng(3).normal(size=(30, 8)).astype(np.float32)
    state = RouterState("fast", 1000, c, pooled=(2,))
    w, one_hot = state.profile_weights(emb), state.cluster_weights(emb)
    assert (w[:, 2] == 1).all()
    np.testing.assert_array_equal(np.delete(w, 2, axis=1), np.delete(one_hot, 2, axis=1))  # the others unchanged
    assert set(np.unique(one_hot[:, 2])) <= {0.0, 1.0}  # routing still assigns prompts to it
    state.save(tmp_path)
    again = RouterState.load(tmp_path)
    assert again.pooled == (2,) and again.version == state.version
    assert state.version != RouterState("fast", 1000, c).version  # profiles under one do not fit the other
    np.testing.assert_array_equal(RouterState("fast", 1000, c).profile_weights(emb), one_hot)


def test_pooled_clusters_out_of_range_are_refused():
    with pytest.raises(ValueError, match="pooled"):
        RouterState("fast", 1000, _centroids(), pooled=(4,))
