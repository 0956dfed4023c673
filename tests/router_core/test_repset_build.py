"""Drawing a representative set: stratified by cluster, near-duplicates and duplicates kept out."""
from __future__ import annotations

import numpy as np
import pytest

from router_core.cluster_summary import describe, nearest_examples
from router_core.repset_build import stratified_draw


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_each_cluster_gets_its_share_and_no_two_kept_items_are_near_duplicates():
    rng = np.random.default_rng(0)
    emb = unit(rng.normal(size=(300, 32)))
    labels = rng.integers(0, 3, size=300)
    draw = stratified_draw(emb, labels, 3, per_cluster=10, threshold=0.9)
    assert draw.per_cluster == {0: 10, 1: 10, 2: 10} and len(draw.indices) == 30
    assert [labels[i] for i in draw.indices] == sorted(labels[i] for i in draw.indices)  # by cluster
    sims = emb[draw.indices] @ emb[draw.indices].T
    assert (sims[~np.eye(30, dtype=bool)] < 0.9).all()


def test_nothing_is_drawn_from_a_pooled_cluster_nor_reported_short():
    rng = np.random.default_rng(2)
    emb = unit(rng.normal(size=(300, 32)))
    labels = rng.integers(0, 3, size=300)
    draw = stratified_draw(emb, labels, 3, per_cluster=10, threshold=0.9, pooled=[1])
    assert draw.per_cluster == {0: 10, 2: 10} and len(draw.indices) == 20
    assert 1 not in {int(labels[i]) for i in draw.indices} and draw.short(10) == {}


def test_exact_and_near_duplicates_are_refused():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=(5, 64)))
    near = unit(base + 0.01 * rng.normal(size=base.shape))
    emb = np.vstack([base, base, near])  # each prompt three times: itself, a copy, a rewording
    labels = np.zeros(15, dtype=int)
    draw = stratified_draw(emb, labels, 1, per_cluster=15, threshold=0.95)
    assert len(draw.indices) == 5 and draw.near_duplicates == 10
    assert draw.short(15) == {0: 5}


def test_the_draw_is_reproducible_by_seed_and_varies_with_it():
    rng = np.random.default_rng(2)
    emb = unit(rng.normal(size=(200, 16)))
    labels = rng.integers(0, 4, size=200)
    a = stratified_draw(emb, labels, 4, 5, seed=3)
    assert a == stratified_draw(emb, labels, 4, 5, seed=3)
    assert a.indices != stratified_draw(emb, labels, 4, 5, seed=4).indices


def test_bad_arguments_are_refused():
    emb = unit(np.ones((2, 2)))
    with pytest.raises(ValueError, match="per_cluster"):
        stratified_draw(emb, np.zeros(2, dtype=int), 1, 0)
    with pytest.raises(ValueError, match="threshold"):
        stratified_draw(emb, np.zeros(2, dtype=int), 1, 1, threshold=0)


def test_examples_are_the_members_nearest_each_centroid():
    centroids = np.eye(2, dtype=np.float32)
    emb = unit(np.array([[1, 0.1], [1, 0.5], [0.2, 1], [1, 0.0]], dtype=np.float32))
    texts = ["a  near", "b", "c", "d " * 200]
    examples = nearest_examples(centroids, emb, texts, n=2)
    assert examples[0][0].startswith("d d") and examples[0][0].endswith("…") and len(examples[0][0]) == 200
    assert examples[0][1] == "a near" and examples[1] == ["c"]
    assert [c["size"] for c in describe(centroids, emb, texts)] == [3, 1]
