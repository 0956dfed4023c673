"""How sure a predicted error rate is: an interval from the estimate and the prompts behind it.

A profile's error for (model, cluster) is the posterior mean of a Beta prior worth `prior`
pseudo-prompts updated by `support` labelled prompts (profiles.py). Its uncertainty is that of a
rate seen over support + prior prompts with error * (support + prior) failures; the interval is
the equal-tailed Jeffreys interval of that rate, Beta(failures + 1/2, successes + 1/2), which
stays proper at an estimate of exactly 0 or 1. For a soft cluster map the prediction and its
support are the cluster-weighted sums, which the same formula takes as they are.
"""
from __future__ import annotations

import numpy as np
from scipy.special import betaincinv


def error_interval(
    error: np.ndarray | float, support: np.ndarray | float, prior: float, level: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) bounds of the error rate, elementwise, with probability `level` between them."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    e = np.clip(np.asarray(error, dtype=np.float64), 0.0, 1.0)
    total = np.asarray(support, dtype=np.float64) + prior
    a, b = e * total + 0.5, (1.0 - e) * total + 0.5
    tail = (1.0 - level) / 2
    return betaincinv(a, b, tail), betaincinv(a, b, 1.0 - tail)
