"""Psi: per-cluster error rates shrunk toward each model's mean, NaN labels ignored."""
import numpy as np
import pytest

from router_core.profiles import cluster_profiles, soft_profiles


def test_shrinkage_rule_matches_the_formula():
    labels = np.array([0, 0, 0, 1])
    losses = np.array([[1.0], [1.0], [0.0], [0.0]])  # model mean 0.5
    errors, counts = cluster_profiles(labels, losses, k=2, prior=1.0)
    assert counts.tolist() == [[3.0, 1.0]]
    np.testing.assert_allclose(errors, [[(2 + 0.5) / 4, (0 + 0.5) / 2]])


def test_prior_zero_gives_plain_cluster_means():
    labels = np.array([0, 1, 1])
    losses = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    errors, _ = cluster_profiles(labels, losses, k=2, prior=0.0)
    np.testing.assert_allclose(errors, [[1.0, 0.5], [0.0, 1.0]])


def test_empty_cluster_falls_back_to_the_model_mean_even_without_prior():
    errors, counts = cluster_profiles(np.array([0, 0]), np.array([[1.0], [0.0]]), k=3, prior=0.0)
    np.testing.assert_allclose(errors, [[0.5, 0.5, 0.5]])
    assert counts[0, 1:].tolist() == [0.0, 0.0]


def test_nan_losses_are_ignored_not_counted():
    labels = np.array([0, 0, 1])
    losses = np.array([[1.0, np.nan], [np.nan, 0.0], [0.0, 1.0]])
    errors, counts = cluster_profiles(labels, losses, k=2, prior=0.0)
    assert counts.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    np.testing.assert_allclose(errors, [[1.0, 0.0], [0.0, 1.0]])
    assert not np.isnan(errors).any()


def test_one_hot_weights_give_the_kmeans_profile():
    rng = np.random.default_rng(0)
    labels = rng.integers(4, size=60)
    losses = rng.uniform(size=(60, 3))
    hard = cluster_profiles(labels, losses, k=4, prior=2.0)
    soft = soft_profiles(np.eye(4)[labels], losses, prior=2.0)
    np.testing.assert_allclose(hard[0], soft[0])
    np.testing.assert_allclose(hard[1], soft[1])


def test_a_model_without_any_label_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one labelled"):
        cluster_profiles(np.array([0, 1]), np.array([[np.nan], [np.nan]]), k=2)


def test_labels_outside_the_cluster_range_are_rejected():
    with pytest.raises(ValueError, match="cluster ids"):
        cluster_profiles(np.array([0, 5]), np.zeros((2, 1)), k=2)
