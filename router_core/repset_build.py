"""Drawing a representative set from prompts: stratified by cluster, without near-duplicates.

`stratified_draw` visits the prompts in a seeded random order and keeps one when its cluster
still needs items and it is not a near-duplicate of any prompt kept so far (cosine similarity
of their routing embeddings at or above `threshold`, across all clusters: the same question
asked twice, or reworded a little, would count twice in a model's profile). Exact duplicates
have similarity 1 and are always refused. A state's pooled clusters (router_core.state) are
profiled on the whole set, so an item there would tell nothing of its own: none is drawn there.
The pure part of `uniroute repset build`.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.92


@dataclass(frozen=True)
class Draw:
    """Indices of the kept prompts (by cluster, then draw order), and what was refused;
    `per_cluster` leaves out the clusters nothing was to be drawn from (pooled ones)."""

    indices: list[int]
    per_cluster: dict[int, int]
    near_duplicates: int

    def short(self, wanted: int) -> dict[int, int]:
        """Clusters that got fewer than `wanted` items, with how many they got."""
        return {c: n for c, n in self.per_cluster.items() if n < wanted}


def stratified_draw(emb: np.ndarray, labels: np.ndarray, n_clusters: int, per_cluster: int,
                    threshold: float = DEFAULT_THRESHOLD, seed: int = 0, pooled: Collection[int] = ()) -> Draw:
    """Up to `per_cluster` prompts from each of `n_clusters` clusters (`labels` (n,)) but the
    `pooled` ones, none two with cosine similarity >= `threshold` between their unit-norm
    embeddings `emb` (n, d)."""
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    emb = np.asarray(emb, dtype=np.float32)
    labels = np.asarray(labels)
    quota = np.full(n_clusters, per_cluster)
    quota[list(pooled)] = 0
    kept = np.empty((int(quota.sum()), emb.shape[1]), dtype=np.float32)
    n_kept = 0
    taken = np.zeros(n_clusters, dtype=int)
    chosen: list[tuple[int, int]] = []  # (cluster, index)
    refused = 0
    for i in np.random.default_rng(seed).permutation(len(emb)):
        c = int(labels[i])
        if taken[c] >= quota[c]:
            continue
        if n_kept and float((kept[:n_kept] @ emb[i]).max()) >= threshold:
            refused += 1
            continue
        kept[n_kept] = emb[i]
        n_kept += 1
        taken[c] += 1
        chosen.append((c, int(i)))
        if n_kept == len(kept):
            break
    ordered = [i for _c, i in sorted(chosen, key=lambda ci: ci[0])]  # stable: draw order within a cluster
    return Draw(ordered, {c: int(taken[c]) for c in range(n_clusters) if quota[c]}, refused)
