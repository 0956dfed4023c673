"""The coverage a profiling job needs before its profile routes: enough of its prompts overall
AND enough of each cluster's weight (a job that answered one task only must not route)."""
from __future__ import annotations

import numpy as np

from app.profiling.profiles import coverage
from router_core.repset import RepItem, RepresentativeSet, RepsetClusters


def clusters_of(labels: list[int], k: int) -> RepsetClusters:
    items = [RepItem(f"p{i}", f"prompt {i}", "A", "mc_letter") for i in range(len(labels))]
    return RepsetClusters(RepresentativeSet("v1", items), np.eye(k)[labels], "s1", 1.0)


def test_a_cluster_left_unanswered_fails_the_floor_even_with_most_prompts_graded():
    clusters = clusters_of([0] * 19 + [1], k=3)  # cluster 2 has no prompt: nothing to cover there
    answered = {f"p{i}" for i in range(19)}
    cover = coverage(clusters, clusters.ids, answered)
    assert cover.share == 0.95 and cover.cluster_shares == [1.0, 0.0, 1.0]
    assert not cover.meets(0.9, 0.5)
    assert "thinnest cluster 1 at 0%" in cover.describe(0.9, 0.5)
    assert coverage(clusters, clusters.ids, answered | {"p19"}).meets(0.9, 0.5)


def test_soft_weights_count_by_weight_and_only_the_jobs_prompts_count():
    items = [RepItem(f"p{i}", f"prompt {i}", "A", "mc_letter") for i in range(4)]
    weights = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.0, 1.0]])
    clusters = RepsetClusters(RepresentativeSet("v1", items), weights, "s1", 1.0)
    cover = coverage(clusters, ["p0", "p1", "p2"], {"p0", "p1"})  # a job of 3 prompts (a limit)
    assert (cover.answered, cover.total) == (2, 3)
    np.testing.assert_allclose(cover.cluster_shares, [1.8 / 2.0, 0.2 / 1.0])
    assert not cover.meets(0.5, 0.5) and cover.meets(0.5, 0.2)
