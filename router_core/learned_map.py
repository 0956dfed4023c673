"""UniRoute's learned soft cluster map: Phi(x) = softmax(theta @ phi(x)), theta in R^{K x d}.

An LLM h is still a vector Psi(h) of per-cluster error rates; the clusters are now soft and
trained so that gamma(x, h) = Phi(x)^T Psi(h) predicts whether h answers x correctly.

Training uses the TRAINING LLMs on the TRAINING prompts only (the paper's log-loss). The
training prompts are split in two folds: Psi of each training LLM is computed (with the same
shrinkage rule as `profiles.soft_profiles`, differentiably) on one fold and scored with binary
cross-entropy on the other, both ways. Cross-fitting stops the map from carving tiny clusters
around single prompts, which would "predict" a label from itself. theta starts at the K-means
centroids times a temperature, i.e. as a soft K-means, and is pulled back toward that start by
an L2 penalty. Labels of any other LLM are never read here: a new LLM gets its Psi afterwards
from the representative prompts weighted by Phi (`soft_profiles(soft_assign(theta, emb), ...)`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from router_core.profiles import shrunk_sums


@dataclass(frozen=True)
class LearnedMapConfig:
    """Training knobs; `uniroute eval` chooses among a few of them on validation data."""

    temperature: float = 30.0  # scale of the initial logits: theta0 = temperature * centroids
    steps: int = 200  # full-batch Adam steps
    lr: float = 0.05
    l2: float = 1e-3  # weight of ||theta - theta0||^2 / ||theta0||^2
    prior: float = 1.0  # pseudo-counts of the Psi shrinkage during training
    seed: int = 0  # fold split


def soft_assign(theta: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Phi for each row of `emb` (n, d): softmax over K clusters, (n, K) float32."""
    logits = np.asarray(emb, dtype=np.float32) @ np.asarray(theta, dtype=np.float32).T
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


def fit_learned_map(
    emb: np.ndarray,
    losses: np.ndarray,
    centroids: np.ndarray,
    config: LearnedMapConfig = LearnedMapConfig(),
) -> np.ndarray:
    """Train theta (K, d) float32 from training prompts `emb` (n, d) and the training LLMs'
    `losses` (n, M) in [0, 1] (NaN = unlabelled, ignored), starting from `centroids` (K, d)."""
    with one_torch_thread() as torch:
        return _train(torch, emb, losses, centroids, config)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[ModuleType]:
    """torch (imported here: heavy, and only training needs it), on one thread for the block. The
    problems trained here are small: one thread avoids OpenMP spin-waiting when cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield torch
    finally:
        torch.set_num_threads(threads)


def _train(torch, emb, losses, centroids, config: LearnedMapConfig) -> np.ndarray:
    x_np = np.asarray(emb, dtype=np.float32)
    loss_np = np.asarray(losses, dtype=np.float64)
    if x_np.ndim != 2 or loss_np.shape[0] != x_np.shape[0] or loss_np.ndim != 2:
        raise ValueError(f"emb (n, d) and losses (n, M) must share n, got {x_np.shape} and {loss_np.shape}")
    if x_np.shape[0] < 4:
        raise ValueError("the learned map needs at least 4 training prompts")
    observed_np = ~np.isnan(loss_np)
    folds_np = np.random.default_rng(config.seed).permutation(x_np.shape[0]) % 2

    x = torch.from_numpy(x_np)
    observed = torch.from_numpy(observed_np.astype(np.float32))
    target = torch.from_numpy(np.where(observed_np, loss_np, 0.0).astype(np.float32))
    theta0 = torch.from_numpy(np.asarray(centroids, dtype=np.float32) * np.float32(config.temperature))
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=config.lr)
    folds = []  # (embeddings, losses, observed mask, model means) of each fold
    for f in (0, 1):
        idx = torch.from_numpy(np.flatnonzero(folds_np == f))
        obs, tgt = observed[idx], target[idx]
        folds.append((x[idx], tgt, obs, tgt.sum(0) / obs.sum(0).clamp(min=1)))
    scale = theta0.pow(2).sum().clamp(min=1e-12)
    n_labels = observed.sum().clamp(min=1)

    for _ in range(config.steps):
        opt.zero_grad()
        phis = [torch.softmax(xf @ theta.T, dim=1) for xf, *_ in folds]
        total = 0.0
        for src, dst in ((0, 1), (1, 0)):
            _, filled, obs, mean = folds[src]
            num, den = shrunk_sums(phis[src], filled, obs, mean, config.prior)
            p = (phis[dst] @ (num / den.clamp(min=1e-9)).T).clamp(1e-6, 1 - 1e-6)
            _, t, t_obs, _ = folds[dst]
            total = total + ((t * torch.log(p) + (1 - t) * torch.log1p(-p)) * t_obs).sum()
        objective = -total / n_labels + config.l2 * (theta - theta0).pow(2).sum() / scale
        objective.backward()
        opt.step()
    return theta.detach().numpy().astype(np.float32)
