"""K-means profiles shrunk toward the transfer router's prediction (empirical Bayes).

UniRoute's K-means profile shrinks a new LLM h's error in cluster c toward h's global mean
(`router_core.profiles`). When the representative set is small, n_hc is a handful of answers and
the profile is mostly noise; the transfer router (`router_core.transfer`) predicts h's per-prompt
loss t(x, h) from the training LLMs' dense labels with a few numbers per LLM. Ways to combine
them, all using h's representative answers only (the evaluation's `combined_gammas` applies them):

- toward the transfer prior (`profiles_toward` with target `cluster_means` of t):
      Psi_hc = (sum_{i in rep, c} l_ih + m * p_hc) / (n_hc + m)
  with p_hc the mean of t(x, h) over the cluster's prompts: m = 0 is K-means without shrinkage,
  m -> infinity the cluster-averaged transfer prediction;
- transfer plus residual: t(x, h) + (sum_{i in rep, c} (l_ih - t_ih)) / (n_hc + m), i.e.
  `profiles_toward` of the residuals with target 0;
- a per-prompt blend (`blend`): gamma = w * gamma_kmeans + (1 - w) * gamma_transfer.
"""
from __future__ import annotations

import numpy as np

from router_core.profiles import shrunk_sums


def cluster_means(labels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Mean of `values` (n, M) over each cluster's rows, (M, k); a cluster without rows gets the
    mean over all rows."""
    onehot = np.eye(k)[np.asarray(labels)]  # (n, k)
    sizes = onehot.sum(axis=0)
    overall = np.broadcast_to(values.mean(axis=0)[:, None], (values.shape[1], k))
    return np.divide(values.T @ onehot, sizes, out=overall.copy(), where=sizes > 0)


def profiles_toward(labels: np.ndarray, losses: np.ndarray, k: int, target: np.ndarray, strength: float) -> np.ndarray:
    """Per-cluster errors (M, k) from hard cluster `labels` (n,) and losses (n, M) (NaN = not
    answered, skipped), shrunk toward `target` (M, k) with `strength` pseudo-prompts per cluster.
    With strength 0 a cluster without answers falls back to its target."""
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    loss = np.asarray(losses, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (loss.shape[1], k):
        raise ValueError(f"target must be (M, k) = {(loss.shape[1], k)}, got {target.shape}")
    observed = ~np.isnan(loss)
    num, den = shrunk_sums(np.eye(k)[np.asarray(labels)], np.where(observed, loss, 0.0),
                           observed.astype(np.float64), target, strength)
    return np.divide(num, den, out=target.copy(), where=den > 0)


def blend(gamma_kmeans: np.ndarray, gamma_transfer: np.ndarray, weight: float) -> np.ndarray:
    """weight * gamma_kmeans + (1 - weight) * gamma_transfer, weight in [0, 1]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return weight * gamma_kmeans + (1.0 - weight) * gamma_transfer
