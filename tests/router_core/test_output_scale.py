"""output_scale: each cluster's answer length relative to the average prompt, from the training
LLMs' answers; and the state field that carries it."""
from __future__ import annotations

import numpy as np
import pytest

from router_core.output_scale import cluster_scale, normalised_scale, relative_to_models
from router_core.state import RouterState


def test_relative_values_put_a_verbose_and_a_terse_model_on_one_footing():
    # model 0 writes ten times as much as model 1; both write twice as much on prompt 1
    values = np.array([[100.0, 10.0], [200.0, 20.0], [np.nan, 15.0]])
    rel = relative_to_models(values)
    np.testing.assert_allclose(rel, [100 / 150, 200 / 150, 1.0])
    assert np.isnan(relative_to_models(np.array([[np.nan, np.nan]])))[0]


def test_a_model_whose_every_value_is_zero_counts_as_one():
    np.testing.assert_allclose(relative_to_models(np.array([[0.0, 1.0], [0.0, 3.0]])), [(1 + 0.5) / 2, (1 + 1.5) / 2])


def test_a_clusters_scale_is_its_mean_over_the_overall_mean_shrunk_by_the_prior():
    weights = np.eye(3)[[0, 0, 1, 1, 2]]
    lengths = np.array([10.0, 10.0, 40.0, 40.0, np.nan])  # cluster 2 has no answered prompt
    raw = cluster_scale(weights, lengths, prior=0.0)
    np.testing.assert_allclose(raw, [10 / 25, 40 / 25, 1.0])
    shrunk = cluster_scale(weights, lengths, prior=2.0)
    np.testing.assert_allclose(shrunk, [(20 + 50) / (4 * 25), (80 + 50) / (4 * 25), 1.0])
    np.testing.assert_array_equal(cluster_scale(weights, np.full(5, np.nan)), np.ones(3))
    with pytest.raises(ValueError, match="prior"):
        cluster_scale(weights, lengths, prior=-1.0)


def test_the_normalised_scale_averages_one_over_the_prompts_it_is_normalised_on():
    scale = np.array([0.5, 2.0, 1.0])
    weights = np.eye(3)[[0, 0, 0, 1]]
    norm = normalised_scale(scale, weights)
    assert (weights @ norm).mean() == pytest.approx(1.0)
    np.testing.assert_allclose(norm / scale, np.full(3, norm[0] / scale[0]))  # a common factor only


def test_a_state_keeps_its_output_scale_through_save_and_load_and_refuses_a_bad_one(tmp_path):
    centroids = np.eye(3, 8, dtype=np.float32)
    state = RouterState("fast", 1000, centroids, output_scale=np.array([0.5, 1.0, 3.0]))
    state.save(tmp_path)
    again = RouterState.load(tmp_path)
    np.testing.assert_array_equal(again.output_scale, [0.5, 1.0, 3.0])
    assert again.version == RouterState("fast", 1000, centroids).version  # profiles stay valid
    assert RouterState.load(_saved(RouterState("fast", 1000, centroids), tmp_path / "none")).output_scale is None
    for bad in ([1.0, 2.0], [1.0, 0.0, 1.0], [1.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match="output_scale"):
            RouterState("fast", 1000, centroids, output_scale=np.array(bad))


def _saved(state: RouterState, directory) -> object:
    state.save(directory)
    return directory
