"""UniRoute's learned soft cluster map."""
from dataclasses import replace

import numpy as np
import pytest

from router_core.learned_map import LearnedMapConfig, fit_learned_map, soft_assign
from router_core.profiles import soft_profiles


def _quadrants(n: int, seed: int):
    """Prompts in four groups at (+-e1 +- e2); model 0 is right only where the e2 sign is +,
    model 1 only where it is -. The e1 split is irrelevant to correctness."""
    rng = np.random.default_rng(seed)
    s1, s2 = rng.choice([-1.0, 1.0], size=(2, n))
    x = np.zeros((n, 8))
    x[:, 0], x[:, 1] = s1, s2
    x += 0.1 * rng.normal(size=x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    losses = np.stack([s2 < 0, s2 > 0], axis=1).astype(float)
    return x.astype(np.float32), losses


def _log_loss(theta, x_rep, loss_rep, x, loss):
    w_rep, w = soft_assign(theta, x_rep), soft_assign(theta, x)
    psi, _ = soft_profiles(w_rep, loss_rep, prior=1.0)
    p = np.clip(w @ psi.T, 1e-6, 1 - 1e-6)
    return float(-(loss * np.log(p) + (1 - loss) * np.log(1 - p)).mean())


def test_soft_assign_is_a_distribution_over_clusters():
    rng = np.random.default_rng(0)
    w = soft_assign(rng.normal(size=(5, 8)), rng.normal(size=(20, 8)))
    assert w.shape == (20, 5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert (w >= 0).all()


def test_untrained_map_is_a_soft_kmeans_of_the_centroids():
    centroids = np.eye(3, 8, dtype=np.float32)
    x = np.array([[0.9, 0.1, 0, 0, 0, 0, 0, 0], [0, 0.2, 0.8, 0, 0, 0, 0, 0]], dtype=np.float32)
    theta = fit_learned_map(x.repeat(4, axis=0), np.zeros((8, 1)), centroids, LearnedMapConfig(steps=0, temperature=50))
    np.testing.assert_allclose(theta, 50 * centroids)
    assert soft_assign(theta, x).argmax(axis=1).tolist() == [0, 2]


def test_training_learns_the_split_that_predicts_correctness():
    x, losses = _quadrants(400, seed=0)
    x_rep, loss_rep = _quadrants(100, seed=1)  # representative set of the same LLMs
    x_new, loss_new = _quadrants(400, seed=2)
    bad_start = np.eye(2, 8, dtype=np.float32)[[0]].repeat(2, axis=0) * [[1], [-1]]  # splits on e1
    cfg = LearnedMapConfig(temperature=5.0, steps=150, lr=0.05)
    before = _log_loss(5.0 * bad_start, x_rep, loss_rep, x_new, loss_new)
    theta = fit_learned_map(x, losses, bad_start, cfg)
    after = _log_loss(theta, x_rep, loss_rep, x_new, loss_new)
    assert before > 0.6  # the e1 split says nothing: coin-flip log-loss
    assert after < 0.3 * before


def test_training_is_deterministic_for_a_seed_and_ignores_unlabelled_entries():
    x, losses = _quadrants(200, seed=3)
    cfg = LearnedMapConfig(temperature=5.0, steps=20)
    start = np.eye(2, 8, dtype=np.float32)
    a = fit_learned_map(x, losses, start, cfg)
    np.testing.assert_array_equal(a, fit_learned_map(x, losses, start, cfg))
    with_nan = np.concatenate([losses, np.full((200, 1), np.nan)], axis=1)
    np.testing.assert_allclose(fit_learned_map(x, with_nan, start, cfg), a, atol=1e-5)
    assert not np.allclose(fit_learned_map(x, losses, start, replace(cfg, seed=1)), a)


def test_mismatched_inputs_are_a_clear_error():
    with pytest.raises(ValueError, match="must share n"):
        fit_learned_map(np.zeros((10, 4)), np.zeros((9, 2)), np.eye(2, 4))
