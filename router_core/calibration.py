"""Calibration: what each cost weight λ buys, measured on the representative set.

The routing rule sends a prompt to argmin_h gamma(x, h) + λ·c(x, h) (`policy.route`). For the
representative prompts, with their predicted errors gamma (n, M) = Φ(x)ᵀΨ and their expected
costs (n, M), each prompt's choice is piecewise constant in λ: as λ grows it moves to ever
cheaper models at breakpoints (the corners of the lower envelope of its M lines). Between two
consecutive breakpoints of any prompt nothing changes, so the curve below is exact: one point
per piece, with

- the expected score: the mean over the prompts of 1 - gamma of the chosen model (the router's
  own prediction, shrunk Ψ included, not the labels of the set it was estimated on),
- the expected cost per request: the mean of the chosen model's expected cost,
- each model's share of the prompts (a proxy for its share of traffic).

λ is on the router's scale: costs are divided by the fixed cost scale (`policy.DEFAULT_COST_SCALE`
unless configured), as `UniRouter.decide_batch` divides them, so a λ read off the curve routes
live traffic as it routed the curve's prompts, and adding a model that no prompt chooses leaves
the curve as it was. The support guard (`policy.supported`) applies here as in the router.

Score and cost only fall as λ grows, which is what lets targets be turned into λ:
`for_budget(b)` is the best-scoring piece whose expected cost is at most b, `for_quality(q)` the
cheapest piece whose expected score is at least q times the best single model's expected score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router_core import policy

# Routing L λ values for n prompts of M models holds an (L, n, M) objective: keep one block
# under ~2M floats so a large curve costs time, never memory.
_BLOCK_FLOATS = 2_000_000


@dataclass(frozen=True)
class Calibration:
    """The λ curve. Point p holds for λ in [lower[p], upper[p]); `lambdas[p]` is the λ inside
    that range the gateway uses for it (0 for the first piece, else the range's geometric
    middle, so that rounding at a breakpoint cannot tip a decision)."""

    models: list[str]
    lambdas: np.ndarray  # (P,)
    lower: np.ndarray  # (P,)
    upper: np.ndarray  # (P,) inf for the last piece
    score: np.ndarray  # (P,) expected score per request
    cost: np.ndarray  # (P,) expected cost per request, in the models' cost unit
    shares: np.ndarray  # (P, M) share of the prompts routed to each model
    best_model: str
    best_score: float  # the best single model's expected score
    n_prompts: int

    def piece(self, lam: float) -> int:
        """The point whose λ range holds `lam`."""
        return int(np.searchsorted(self.lower, lam, side="right")) - 1

    def for_budget(self, budget: float) -> tuple[int, bool]:
        """(point, met): the best-scoring point whose expected cost is at most `budget`; when
        even the cheapest routing costs more, the cheapest point and met=False."""
        feasible = self.cost <= budget * (1 + 1e-9)
        if not feasible.any():
            return len(self.cost) - 1, False
        # Highest score among the affordable points, the cheaper one on a tie.
        order = np.lexsort((self.cost, -self.score))
        return int(order[feasible[order]][0]), True

    def for_quality(self, quality: float) -> tuple[int, bool]:
        """(point, met): the cheapest point whose expected score reaches `quality` (a fraction)
        of the best single model's; when none does, the best-scoring point and met=False."""
        feasible = self.score >= quality * self.best_score - 1e-12
        if not feasible.any():
            return int(np.argmax(self.score)), False
        order = np.lexsort((-self.score, self.cost))
        return int(order[feasible[order]][0]), True

    def point(self, p: int) -> dict:
        """One point as plain data (for JSON)."""
        return {
            "cost_weight": float(self.lambdas[p]), "lower": float(self.lower[p]),
            "upper": None if np.isinf(self.upper[p]) else float(self.upper[p]),
            "expected_score": float(self.score[p]), "expected_cost": float(self.cost[p]),
            "shares": {m: float(s) for m, s in zip(self.models, self.shares[p]) if s > 0},
        }

    def to_dict(self) -> dict:
        """The whole curve as plain data (for JSON)."""
        return {"models": list(self.models), "best_model": self.best_model, "best_score": self.best_score,
                "n_prompts": self.n_prompts, "points": [self.point(p) for p in range(len(self.lambdas))]}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        """The curve `to_dict` wrote."""
        points = data["points"]

        def column(key: str) -> np.ndarray:
            return np.array([np.inf if p[key] is None else p[key] for p in points], dtype=np.float64)

        shares = np.array([[p["shares"].get(m, 0.0) for m in data["models"]] for p in points], dtype=np.float64)
        return cls(list(data["models"]), column("cost_weight"), column("lower"), column("upper"),
                   column("expected_score"), column("expected_cost"), shares, data["best_model"],
                   float(data["best_score"]), int(data["n_prompts"]))


def breakpoints(gamma: np.ndarray, cost: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """Sorted distinct λ > 0 at which some prompt's choice changes (gamma, cost: (n, M)), among
    each prompt's `eligible` models (all when None).

    Walks every prompt's lower envelope at once: from its choice at λ = 0, the next corner is the
    smallest λ at which a cheaper model's line crosses the current one; at most M - 1 steps.
    """
    n = gamma.shape[0]
    rows = np.arange(n)
    eligible = np.ones(gamma.shape, dtype=bool) if eligible is None else eligible
    current = policy.route(gamma, cost, 0.0, eligible)
    at = np.zeros(n)
    found: list[np.ndarray] = []
    for _ in range(gamma.shape[1] - 1):
        g0 = gamma[rows, current][:, None]
        c0 = cost[rows, current][:, None]
        cheaper = (cost < c0) & eligible
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(cheaper, (gamma - g0) / (c0 - cost), np.inf)
        # The current model is optimal at `at`, so no crossing lies before it but by rounding.
        cross = np.maximum(cross, at[:, None])
        nxt = cross.min(axis=1)
        live = np.isfinite(nxt)
        if not live.any():
            break
        # Where several cheaper models cross at once, the cheapest wins beyond the corner.
        winner = np.where(cheaper & (cross <= nxt[:, None]), cost, np.inf).argmin(axis=1)
        found.append(nxt[live])
        current = np.where(live, winner, current)
        at = np.where(live, nxt, at)
    values = np.unique(np.concatenate(found)) if found else np.zeros(0)
    return values[values > 0]


def piece_lambdas(corners: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lambdas, lower, upper) of the pieces between `corners`. Beyond `max_points` pieces, the
    corners are thinned evenly by rank, and a point then stands for several pieces."""
    if len(corners) + 1 > max_points:
        keep = np.unique(np.linspace(0, len(corners) - 1, max_points - 1).round().astype(int))
        corners = corners[keep]
    lower = np.concatenate([[0.0], corners])
    upper = np.concatenate([corners, [np.inf]])
    inner = np.sqrt(lower[1:-1] * upper[1:-1])
    last = [2.0 * lower[-1]] if len(corners) else []
    lambdas = np.concatenate([[0.0], inner, last])
    return lambdas, lower, upper


def calibrate(
    weights: np.ndarray,
    psi: np.ndarray,
    costs: np.ndarray,
    models: list[str],
    *,
    cost_scale: float,
    eligible: np.ndarray | None = None,
    max_points: int = 512,
) -> Calibration:
    """The λ curve for prompts with cluster weights (n, K), models' Ψ (M, K) and the prompts'
    expected costs (n, M), with λ weighing costs divided by `cost_scale` (as the router does) and
    each prompt routed among its `eligible` models (n, M) (all when None)."""
    w = np.asarray(weights, dtype=np.float64)
    psi = np.asarray(psi, dtype=np.float64)
    raw = np.asarray(costs, dtype=np.float64)
    n, m = w.shape[0], psi.shape[0]
    if n == 0 or m == 0 or raw.shape != (n, m) or psi.shape[1] != w.shape[1] or len(models) != m:
        raise ValueError(f"need n > 0 prompts and M > 0 models: weights {w.shape}, psi {psi.shape}, "
                         f"costs {raw.shape}, {len(models)} names")
    if not cost_scale > 0:
        raise ValueError(f"cost_scale must be > 0, got {cost_scale}")
    gamma = w @ psi.T
    ok = np.ones((n, m), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    # Prompts with the same predicted errors, costs and eligibility (all of a cluster's under
    # K-means with per-request prices) route alike: work on the distinct rows, weighted by count.
    rows, inverse = np.unique(np.hstack([gamma, raw, ok]), axis=0, return_inverse=True)
    count = np.bincount(inverse.ravel(), minlength=len(rows)).astype(np.float64)
    g, r, e = rows[:, :m], rows[:, m:2 * m], rows[:, 2 * m:] > 0
    c = r / cost_scale
    lambdas, lower, upper = piece_lambdas(breakpoints(g, c, e), max_points)
    score, cost = np.empty(len(lambdas)), np.empty(len(lambdas))
    shares = np.empty((len(lambdas), m))
    block = max(1, _BLOCK_FLOATS // (len(rows) * m))
    idx = np.arange(len(rows))
    for start in range(0, len(lambdas), block):
        lam = lambdas[start:start + block]
        choice = policy.route(g[None], c[None], lam[:, None, None], e[None])  # (L, u)
        score[start:start + block] = (1.0 - g[idx, choice]) @ count / n
        cost[start:start + block] = r[idx, choice] @ count / n
        onehot = np.eye(m)[choice]  # (L, u, M)
        shares[start:start + block] = np.einsum("lum,u->lm", onehot, count) / n
    model_scores = 1.0 - gamma.mean(axis=0)
    best = int(np.argmax(model_scores))
    return Calibration(list(models), lambdas, lower, upper, score, cost, shares, models[best],
                       float(model_scores[best]), n)
