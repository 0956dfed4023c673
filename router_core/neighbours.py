"""Nearest-neighbour averages of per-prompt labels (cosine similarity on unit embeddings).

Used twice: the K-NN router averages a model's losses over the representative prompts nearest a
query, and the transfer router (`router_core.transfer`) averages the training LLMs' dense
losses over the training prompts nearest it.
"""
from __future__ import annotations

import numpy as np


def knn_gamma(query: np.ndarray, ref: np.ndarray, ref_loss: np.ndarray, k: int) -> np.ndarray:
    """Mean loss of each model over the k most similar reference prompts (NaN skipped; a model
    with no labelled neighbour falls back to its mean over the whole reference set)."""
    k = min(k, ref.shape[0])
    sims = query @ ref.T
    nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n, k)
    neigh = ref_loss[nn]  # (n, k, M)
    obs = ~np.isnan(neigh)
    total = np.where(obs, neigh, 0.0).sum(axis=1)
    count = obs.sum(axis=1)
    fallback = np.broadcast_to(np.nanmean(ref_loss, axis=0), total.shape)
    return np.divide(total, count, out=fallback.copy(), where=count > 0)
