"""The routing rule: send x to argmin_h gamma(x, h) + lam * c(h), ties to the cheaper model.

`gamma` holds expected losses (n, M); `cost` is per model (M,) or per prompt and model (n, M),
on a scale that makes lam comparable with an error rate. The paper's evaluation protocol divides
by the dearest model's mean cost (`normalise_costs`); the router divides by a fixed cost scale
(`DEFAULT_COST_SCALE`), so that a lam means the same whichever models are registered.
All functions work on the last axis, so a stack of gammas (L, n, M) with lam shaped (L, 1, 1)
routes a whole lambda sweep at once.

`eligible` (same shape as gamma, optional) marks the models a prompt may be sent to on the rule;
the others are ranked after every eligible one (`supported` builds it from the support guard).
"""
from __future__ import annotations

import numpy as np

from router_core.confidence import error_interval

# The router's cost scale: the expected cost per request (in the prices' unit, USD for the
# shipped configs) that a cost weight of 1 weighs as one full unit of error rate. At cost weight
# lam the router pays up to DEFAULT_COST_SCALE / lam more per request for one unit less error,
# i.e. DEFAULT_COST_SCALE / (100 lam) per accuracy point.
DEFAULT_COST_SCALE = 0.01


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
    c = np.asarray(cost, dtype=np.float64)
    if c.shape != g.shape:
        c = np.broadcast_to(c, g.shape)
    return g + np.asarray(lam, dtype=np.float64) * c, c


def supported(support: np.ndarray, min_support: float, error: np.ndarray | None = None,
              overall: np.ndarray | None = None, prior: float = 0.0) -> np.ndarray:
    """The support guard, (..., M) bool: a model is eligible for a prompt when the labelled
    prompts behind its predicted error there (`support`) reach `min_support`. Where no model's
    do, the floor falls to the most any model has: a model with some answers of that kind goes
    before one whose prediction there is only its overall mean (one profiled where it declined
    every such prompt); where nobody has any, every model is eligible.

    With the predicted `error` (shrunk with `prior` pseudo-prompts toward each model's `overall`
    error, (M,)), a model below the floor is eligible too where the upper end of a 90% interval
    of its error from its own answers there alone (the pseudo-prompts taken back out) is below
    every eligible model's predicted error: no evidence, or little, still beats firm evidence
    that the eligible models fail."""
    s = np.asarray(support, dtype=np.float64)
    eligible = s >= np.minimum(min_support, s.max(axis=-1, keepdims=True, initial=0.0))
    if error is None or overall is None or eligible.all():
        return eligible
    e = np.asarray(error, dtype=np.float64)
    best = np.broadcast_to(np.where(eligible, e, np.inf).min(axis=-1, keepdims=True), e.shape)
    maybe = ~eligible & (e < best)  # the interval only where it could change anything
    if not maybe.any():
        return eligible
    seen = s[maybe]
    failures = np.clip(e[maybe] * (seen + prior) - prior * np.broadcast_to(overall, e.shape)[maybe], 0.0, seen)
    rate = np.divide(failures, seen, out=np.full_like(seen, 0.5), where=seen > 0)
    out = eligible.copy()
    out[maybe] = error_interval(rate, seen, 0.0)[1] < best[maybe]
    return out


def route(gamma: np.ndarray, cost: np.ndarray, lam: float | np.ndarray,
          eligible: np.ndarray | None = None) -> np.ndarray:
    """Index of the chosen model for each prompt: shape gamma.shape[:-1], int64. With `eligible`,
    only among the eligible models (each prompt needs one)."""
    obj, c = _objective(gamma, cost, lam)
    if eligible is not None:
        obj = np.where(eligible, obj, np.inf)
    best = obj == obj.min(axis=-1, keepdims=True)
    return np.where(best, c, np.inf).argmin(axis=-1)


def rank(gamma: np.ndarray, cost: np.ndarray, lam: float | np.ndarray,
         eligible: np.ndarray | None = None) -> np.ndarray:
    """All models per prompt, best first (fallback order): shape gamma.shape, int64. With
    `eligible`, the eligible models first, then the others, each group by the rule."""
    obj, c = _objective(gamma, cost, lam)
    # lexsort sorts by the last key first: eligibility, objective, then cost breaks ties.
    keys = (c, obj) if eligible is None else (c, obj, ~np.broadcast_to(eligible, obj.shape))
    return np.lexsort(keys, axis=-1)
