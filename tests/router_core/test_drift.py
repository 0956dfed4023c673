"""Drift: distances to the nearest centroid, the threshold learned on training prompts, and the
share of recent prompts beyond it."""
import numpy as np
import pytest

from router_core.drift import (
    DRIFT_QUANTILE,
    DriftMonitor,
    drift_threshold,
    nearest_distance,
)
from router_core.state import RouterState, build_state


def unit(rows):
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distance_is_one_minus_the_cosine_to_the_nearest_centroid():
    centroids = unit([[1, 0, 0], [0, 1, 0]])
    emb = unit([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(nearest_distance(centroids, emb), [0.0, 1 - np.sqrt(0.5), 1.0], atol=1e-6)


def test_threshold_is_the_distance_99_percent_of_training_prompts_stay_within():
    distances = np.linspace(0, 1, 1001)
    assert drift_threshold(distances) == pytest.approx(0.99)
    assert np.mean(distances <= drift_threshold(distances)) >= DRIFT_QUANTILE


def test_monitor_shares_far_prompts_over_its_recent_window_only():
    monitor = DriftMonitor(threshold=0.5, window=4)
    assert monitor.snapshot()["far_share"] == 0.0
    assert monitor.observe(np.array([0.9, 0.1])).tolist() == [True, False]
    assert monitor.snapshot()["far_share"] == 0.5
    monitor.observe(np.array([0.1, 0.1, 0.1, 0.1]))  # the far one leaves the window
    snap = monitor.snapshot()
    assert (snap["recent"], snap["recent_far"], snap["far_share"]) == (4, 0, 0.0)
    assert (snap["seen"], snap["far"]) == (6, 1)
    monitor.observe(np.full(9, 0.7))  # more than a window at once keeps the last ones
    assert monitor.snapshot()["far_share"] == 1.0


def test_the_recent_far_count_kept_as_prompts_come_matches_a_recount_of_the_window():
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(threshold=0.5, window=7)
    seen: list[bool] = []
    for size in rng.integers(1, 12, size=60):  # batches smaller and larger than the window
        seen += monitor.observe(rng.uniform(size=size)).tolist()
        recent = seen[-7:]
        snap = monitor.snapshot()
        assert (snap["recent"], snap["recent_far"]) == (len(recent), sum(recent))
        assert monitor.far_share == snap["far_share"] == sum(recent) / len(recent)


def test_a_built_state_records_its_drift_threshold_and_old_states_have_none(embedder, tmp_path):
    prompts = [f"What is {a} plus {b}?" for a in range(5) for b in range(4)] + [
        f"Translate '{w}' into French." for w in ("house", "dog", "tree", "car", "book", "water")]
    state = build_state(prompts, embedder, k=2, embedder_spec="accurate", max_chars=1000)
    from router_core.embedding import embed_for_routing

    distances = state.nearest_distance(embed_for_routing(embedder, prompts, 1000))
    assert state.drift_threshold == pytest.approx(drift_threshold(distances), abs=1e-6)
    assert 0 < state.drift_threshold < 1
    state.save(tmp_path)
    assert RouterState.load(tmp_path).drift_threshold == pytest.approx(state.drift_threshold)
    assert RouterState("accurate", 1000, state.centroids).drift_threshold is None
