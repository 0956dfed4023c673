"""Psi: each LLM's error rate per prompt cluster, estimated from a labelled prompt set.

Estimation rule (the same for hard and soft clusters). For model h and cluster k, with
cluster weights w_ik (one-hot for K-means, soft for the learned map) and losses l_ih
(NaN = not labelled, skipped):

    count_hk = sum_i w_ik [l_ih observed]
    Psi_hk   = (sum_i w_ik l_ih + prior * mean_h) / (count_hk + prior)

where mean_h is h's overall mean loss on the set. This is the posterior mean of a Beta prior
centred on the model's own mean carrying `prior` pseudo-prompts: a cluster seen a few times
moves only part of the way from the model's average, an empty cluster falls back to it, and
the result is never NaN. `prior` is a hyper-parameter; `uniroute eval` picks it on the
training LLMs and training/validation prompts (never on test data), see docs/evaluation.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from router_core.pricing import InvalidField


def soft_profiles(weights: np.ndarray, losses: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Psi from cluster weights (n, K) and losses (n, M): (errors (M, K), weighted counts (M, K))."""
    w = np.asarray(weights, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    if w.ndim != 2 or loss.ndim != 2 or w.shape[0] != loss.shape[0]:
        raise ValueError(f"weights (n, K) and losses (n, M) must share n, got {w.shape} and {loss.shape}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    observed = ~np.isnan(loss)
    n_obs = observed.sum(axis=0)
    if np.any(n_obs == 0):
        raise ValueError("every model needs at least one labelled prompt to build its profile")
    filled = np.where(observed, loss, 0.0)
    mean = filled.sum(axis=0) / n_obs  # (M,)
    num, den = shrunk_sums(w, filled, observed.astype(np.float64), mean, prior)
    # den is 0 only for an empty cluster with prior 0: fall back to the model's mean there.
    errors = np.divide(num, den, out=np.broadcast_to(mean[:, None], den.shape).copy(), where=den > 0)
    return errors, den - prior


def shrunk_sums(weights, filled, observed, mean, prior: float):
    """Numerator and denominator of the shrunk estimate, (M, K) each.

    `mean` is the shrinkage target: (M,) one value per model (its own mean), or (M, K) one per
    model and cluster (`router_core.shrinkage` shrinks toward the transfer router's prediction).
    Written with matrix operators only, so the learned map can run the very same rule on
    torch tensors and differentiate through it.
    """
    target = mean if mean.ndim == 2 else mean[:, None]
    return filled.T @ weights + prior * target, observed.T @ weights + prior


def cluster_profiles(
    labels: np.ndarray, losses: np.ndarray, k: int, prior: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Psi for hard clusters: `labels` (n,) in [0, k) -> (errors (M, k), counts (M, k))."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or (lab.size and (lab.min() < 0 or lab.max() >= k)):
        raise ValueError(f"labels must be a 1-d array of cluster ids in [0, {k})")
    return soft_profiles(np.eye(k)[lab], losses, prior)


@dataclass
class Profile:
    """A model's Ψ on the representative set under one router state.

    `errors[k]` is its error rate in cluster k; `counts[k]` the weight of labelled prompts behind
    it (a float: the learned map spreads one prompt over several clusters).
    """

    errors: list[float]
    counts: list[float]
    accuracy: float
    n_prompts: int
    avg_output_tokens: float
    repset_version: str
    state_version: str

    def validate(self) -> None:
        """Raise InvalidField unless Ψ is a well-formed vector in [0, 1]^K, the mean score
        (`accuracy`) in [0, 1] and the mean answer length a finite number >= 0."""
        # A stored profile missing its vectors failed in len() with a TypeError naming no field.
        for name in ("errors", "counts"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise InvalidField(f"profile.{name}", f"must be a list, got {type(getattr(self, name)).__name__}")
        if len(self.errors) != len(self.counts):
            raise InvalidField("profile.counts", f"has {len(self.counts)} entries for {len(self.errors)} clusters")
        for e in self.errors:
            if not (isinstance(e, (int, float)) and 0.0 <= e <= 1.0):
                raise InvalidField("profile.errors", f"must lie in [0, 1], got {e!r}")
        for c in self.counts:
            if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
                raise InvalidField("profile.counts", f"must be finite and >= 0, got {c!r}")
        # The mean score is each cluster's shrinkage target in the support guard and picks the
        # "most accurate" model of the cost-saved metric: NaN or 2 passed unnoticed.
        a = self.accuracy
        if not (isinstance(a, (int, float)) and 0.0 <= a <= 1.0):
            raise InvalidField("profile.accuracy", f"must lie in [0, 1], got {a!r}")
        # A model's mean answer length prices its answers: below 0 or NaN, so would its costs.
        t = self.avg_output_tokens
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise InvalidField("profile.avg_output_tokens", f"must be finite and >= 0, got {t!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        if not isinstance(data, dict):
            raise InvalidField("profile", f"expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
