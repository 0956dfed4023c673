"""Spherical K-means (FAISS) and nearest-centroid assignment."""
import numpy as np
import pytest

from router_core.clustering import assign, fit_kmeans


def _blobs(n_per: int = 40, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:3]
    labels = np.repeat(np.arange(3), n_per)
    x = centres[labels] + 0.05 * rng.normal(size=(labels.size, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_kmeans_recovers_well_separated_groups():
    x, truth = _blobs()
    centroids = fit_kmeans(x, 3, seed=0)
    labels, sims = assign(centroids, x)
    # Same partition up to renaming of clusters.
    assert len({(a, b) for a, b in zip(truth, labels)}) == 3
    assert sims.min() > 0.9


def test_centroids_are_unit_norm_float32_and_seeded():
    x, _ = _blobs()
    a, b = fit_kmeans(x, 3, seed=7), fit_kmeans(x, 3, seed=7)
    assert a.dtype == np.float32 and a.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)


def test_assign_returns_the_most_similar_centroid():
    centroids = np.eye(4, dtype=np.float32)
    x = np.array([[0.1, 0.9, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]], dtype=np.float32)
    labels, sims = assign(centroids, x)
    assert labels.tolist() == [1, 3] and labels.dtype == np.int64
    np.testing.assert_allclose(sims, [0.9, 0.8], rtol=1e-6)


def test_more_clusters_than_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="between 1 and the number of prompts"):
        fit_kmeans(np.eye(3, dtype=np.float32), 5)


def test_dimension_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        assign(np.eye(4, dtype=np.float32), np.ones((2, 3), dtype=np.float32))
