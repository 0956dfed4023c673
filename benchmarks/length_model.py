"""A prompt's answer length relative to the average prompt, log-linear in its embedding: the
`lengthmodel` and `gw_length` cost models of `benchmarks.prompt_costs` (docs/evaluation.md,
"A length model per prompt"). Tried as a per-prompt refinement of the shipped per-cluster output
scale (router_core.output_scale); not shipped: its gain in the protocol is the prompt's own
length, which the gateway prices exactly as input tokens already.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ridge strengths chosen among by leave-one-out error (a 256- or 384-d embedding against a few
# hundred to a few thousand prompts).
ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass(frozen=True)
class LengthModel:
    """exp(bias + emb @ weights), the log clipped to the range seen in fitting, so that a prompt
    unlike any fitted one is priced as the longest or shortest seen, never beyond."""

    weights: np.ndarray  # (d,)
    bias: float
    low: float  # the least and greatest log length fitted
    high: float
    alpha: float  # the ridge strength chosen

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """(n,) predicted length of prompts with embeddings `emb` (n, d), relative to the mean of
        the lengths fitted."""
        return np.exp(np.clip(self.bias + np.asarray(emb, dtype=np.float64) @ self.weights, self.low, self.high))

    def relative(self, emb: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(n,) `predict(emb)` over the mean prediction on the `reference` prompts' embeddings (the
        representative set, where a model's mean cost is measured): 1 is an average prompt there."""
        mean = float(self.predict(reference).mean()) if len(reference) else 0.0
        return self.predict(emb) / mean if mean > 0 else self.predict(emb)


def fit_length_model(emb: np.ndarray, lengths: np.ndarray, alphas: tuple[float, ...] = ALPHAS) -> LengthModel:
    """Ridge regression of log `lengths` (n,) (answer lengths or relative costs; NaN or <= 0 =
    unknown, left out), over their mean, on the embeddings `emb` (n, d), its strength the one of
    `alphas` with the least leave-one-out squared error (exact for ridge, from one SVD).
    ValueError with fewer than 3 known lengths."""
    values = np.asarray(lengths, dtype=np.float64)
    known = np.isfinite(values) & (values > 0)
    if known.sum() < 3:
        raise ValueError(f"need at least 3 prompts with a known length, got {int(known.sum())}")
    x = np.asarray(emb, dtype=np.float64)[known]
    y = np.log(values[known] / values[known].mean())
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    errors = []
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        fitted = y_mean + u @ (shrink * uty)
        leverage = 1.0 / len(y) + (u**2) @ shrink  # the intercept counts too
        errors.append(float(np.mean(((y - fitted) / np.maximum(1.0 - leverage, 1e-9)) ** 2)))
    alpha = alphas[int(np.argmin(errors))]
    weights = vt.T @ (s / (s**2 + alpha) * uty)
    return LengthModel(weights, y_mean - float(x_mean @ weights), float(y.min()), float(y.max()), float(alpha))
