"""The routing rule: send x to argmin_h gamma(x, h) + lam * c(h), ties to the cheaper model.

`gamma` holds expected losses (n, M); `cost` is per model (M,) or per prompt and model (n, M),
normalised (see `normalise_costs`) so that lam lives on the same [0, 1] scale as an error rate.
All functions work on the last axis, so a stack of gammas (L, n, M) with lam shaped (L, 1, 1)
routes a whole lambda sweep at once.
"""
from __future__ import annotations

import numpy as np


def normalise_costs(cost: np.ndarray) -> np.ndarray:
    """Divide costs (M,) or (n, M) by the most expensive model's mean cost; all-zero stays zero."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim not in (1, 2) or c.shape[-1] == 0:
        raise ValueError(f"cost must be (M,) or (n, M), got shape {c.shape}")
    if np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError("costs must be finite and non-negative")
    top = c.reshape(-1, c.shape[-1]).mean(axis=0).max()
    return c / top if top > 0 else np.zeros_like(c)


def _objective(gamma: np.ndarray, cost: np.ndarray, lam: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(gamma, dtype=np.float64)
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), g.shape)
    return g + np.asarray(lam, dtype=np.float64) * c, c


def route(gamma: np.ndarray, cost: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """Index of the chosen model for each prompt: shape gamma.shape[:-1], int64."""
    obj, c = _objective(gamma, cost, lam)
    best = obj == obj.min(axis=-1, keepdims=True)
    return np.where(best, c, np.inf).argmin(axis=-1)


def rank(gamma: np.ndarray, cost: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """All models per prompt, best first (fallback order): shape gamma.shape, int64."""
    obj, c = _objective(gamma, cost, lam)
    # lexsort sorts by the last key first: objective, then cost breaks ties.
    return np.lexsort((c, obj), axis=-1)
