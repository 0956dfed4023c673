"""Choosing K on the data: the silhouette criterion finds well-separated groups and respects the
smallest cluster size."""
from __future__ import annotations

import numpy as np
import pytest

from router_core.choose_k import candidate_ks, choose_k, silhouette


def blobs(k: int, per: int, d: int = 16, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`k` tight groups of `per` unit vectors around random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(k * per, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_silhouette_is_high_for_true_groups_and_low_for_a_random_split():
    x, labels = blobs(3, 30)
    assert silhouette(x, labels) > 0.8
    shuffled = np.random.default_rng(1).permutation(labels)
    assert silhouette(x, shuffled) < 0.05


def test_a_singleton_scores_zero_in_the_silhouette():
    x = np.eye(3, dtype=np.float32)
    assert silhouette(x, np.array([0, 1, 1])) == pytest.approx((0 + 0 + 0) / 3)


def test_choose_k_finds_four_separated_groups():
    x, _ = blobs(4, 40)
    choice = choose_k(x, candidate_ks(len(x), min_size=15))
    assert choice.k == 4
    assert choice.silhouettes[4] == max(choice.silhouettes.values())


def test_the_largest_k_near_the_best_silhouette_wins():
    x, _ = blobs(4, 40, spread=0.05)
    choice = choose_k(x, [2, 3, 4, 5, 6], min_size=15, tolerance=1.0)  # every K is "near"
    assert choice.k == max(k for k in [2, 3, 4, 5, 6] if choice.smallest[k] >= 15)
    assert choose_k(x, [2, 3, 4, 5, 6], min_size=15, tolerance=0.0).k == 4


def test_choose_k_refuses_a_k_with_a_cluster_below_min_size():
    x, _ = blobs(4, 40)
    tiny = np.vstack([x, blobs(1, 5, seed=9)[0]])  # a fifth, tiny group
    choice = choose_k(tiny, [2, 3, 4, 5], min_size=15)
    assert choice.smallest[5] < 15 and choice.k != 5


def test_candidate_ks_stop_where_clusters_would_be_too_small():
    assert candidate_ks(120, 15) == [2, 3, 4, 5, 6, 7, 8]
    assert candidate_ks(20, 15) == [1]
