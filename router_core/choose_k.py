"""Choosing the number of clusters K on the data itself, when the operator does not give it.

Criterion: the mean silhouette of the spherical K-means clustering (cosine distance), among
the K that leave every cluster at least `min_size` prompts (a cluster needs prompts to be
profiled on; a representative set draws from each). Silhouette compares each prompt's mean
distance to its own cluster (a) with the nearest other cluster (b): (b - a) / max(a, b), in
[-1, 1]. On large inputs it is measured on a fixed random sample of `sample` prompts (its cost
is quadratic in that number).

The LARGEST K whose silhouette is within `tolerance` of the best wins: on sentence embeddings of
real prompts the silhouette is low and nearly flat (measured on 500 Arena-Hard v0.1 prompts with
MiniLM: 0.043 at K = 2 and at K = 6, 0.033 at K = 10), so the best value alone would mostly pick
K = 2, while finer clusters route better as long as each holds enough prompts to profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router_core import clustering


@dataclass(frozen=True)
class KChoice:
    """The chosen K and, for every K tried, its mean silhouette and smallest cluster's size."""

    k: int
    silhouettes: dict[int, float]
    smallest: dict[int, int]


def silhouette(emb: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of `labels` (n,) over unit-norm `emb` (n, d) under cosine distance; a
    prompt alone in its cluster scores 0 (the usual convention)."""
    k = int(labels.max()) + 1
    onehot = np.eye(k, dtype=np.float64)[labels]  # (n, K)
    dist = 1.0 - emb.astype(np.float64) @ emb.T.astype(np.float64)  # (n, n)
    sums = dist @ onehot  # (n, K): summed distance of each prompt to each cluster
    sizes = onehot.sum(axis=0)
    own = sizes[labels]
    a = np.take_along_axis(sums, labels[:, None], axis=1)[:, 0] / np.maximum(own - 1, 1)
    others = np.where(onehot > 0, np.inf, sums / np.maximum(sizes, 1))
    others[:, sizes == 0] = np.inf
    b = others.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def candidate_ks(n: int, min_size: int, max_k: int = 32) -> list[int]:
    """The K worth trying for `n` prompts: 2 up to the K that could still give every cluster
    `min_size` prompts (at most `max_k`); [1] when even 2 could not."""
    top = min(max_k, n // max(min_size, 1))
    return list(range(2, top + 1)) or [1]


DEFAULT_TOLERANCE = 0.005


def choose_k(emb: np.ndarray, ks: list[int], min_size: int = 15, seed: int = 0, sample: int = 2000,
             tolerance: float = DEFAULT_TOLERANCE) -> KChoice:
    """Among the K of `ks` whose smallest cluster holds at least `min_size` prompts, the largest
    whose mean silhouette is within `tolerance` of the best (if no K qualifies, the K with the
    largest smallest cluster)."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(emb), size=min(sample, len(emb)), replace=False)
    silhouettes: dict[int, float] = {}
    smallest: dict[int, int] = {}
    for k in ks:
        if k == 1:
            silhouettes[k], smallest[k] = 0.0, len(emb)
            continue
        centroids = clustering.fit_kmeans(emb, k, seed=seed)
        labels, _ = clustering.assign(centroids, emb)
        smallest[k] = int(np.bincount(labels, minlength=k).min())
        silhouettes[k] = silhouette(emb[idx], labels[idx])
    eligible = [k for k in ks if smallest[k] >= min_size]
    if eligible:
        top = max(silhouettes[k] for k in eligible)
        best = max(k for k in eligible if silhouettes[k] >= top - tolerance)
    else:
        best = max(ks, key=lambda k: (smallest[k], -k))
    return KChoice(best, silhouettes, smallest)
