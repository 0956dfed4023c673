"""What switching router states buys, measured on graded prompts before the switch.

Two (or more) states are compared on the same prompts, the same models and the same seeded
splits: in each trial half of the prompts profile every model under each state's clusters
(Ψ from their graded answers, `profiles.soft_profiles` with the state's prior) and the other
half are routed with those profiles over a λ sweep, giving each state a deferral curve
(`evaluation.deferral_curve`) and its area. Every model is known to both states, so this
measures the clusters alone: which state's cluster map lets the same answers predict which model
is good where. Paired differences against the first state (the active one) carry 95% intervals.
"""
from __future__ import annotations

import numpy as np

from router_core.evaluation import area_under, deferral_curve, mean_ci
from router_core.profiles import soft_profiles


def compare_states(weights: dict[str, np.ndarray], priors: dict[str, float], scores: np.ndarray,
                   costs: np.ndarray, trials: int = 20, seed: int = 0, n_lambdas: int = 100,
                   progress=None, profile_weights: dict[str, np.ndarray] | None = None) -> dict:
    """Compare states given each one's (n, K_s) cluster weights of the same n prompts, on the
    prompts' (n, M) scores in [0, 1] and costs per request (prompts not graded for every model
    are left out). `profile_weights`: a state's weights of the prompts that profile the models,
    where they differ from its routing weights (a pooled cluster, `RouterState.profile_weights`).
    The first state is the reference of the paired differences."""
    if len(weights) < 2:
        raise ValueError("give at least two states to compare")
    names = list(weights)
    scores = np.asarray(scores, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    keep = ~np.isnan(scores).any(axis=1) & ~np.isnan(costs).any(axis=1)
    n = int(keep.sum())
    if n < 10 or scores.shape[1] < 2:
        raise ValueError(f"need at least 10 prompts graded for every model and 2 models; have {n} and "
                         f"{scores.shape[1]}")
    scores, costs = scores[keep], costs[keep]
    rows = {name: np.asarray(w, dtype=np.float64)[keep] for name, w in weights.items()}
    profiling = {name: np.asarray(w, dtype=np.float64)[keep] for name, w in (profile_weights or {}).items()}
    rng = np.random.default_rng(seed)
    areas: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(trials):
        order = rng.permutation(n)
        fit, test = order[: n // 2], order[n // 2:]
        route_cost = costs[fit].mean(axis=0)
        c_max = float(route_cost.max()) or 1.0
        for name in names:
            psi, _ = soft_profiles(profiling.get(name, rows[name])[fit], 1.0 - scores[fit], priors[name])
            gamma = rows[name][test] @ psi.T
            curve = deferral_curve(gamma, route_cost / c_max, scores[test], costs[test], c_max, n_lambdas)
            areas[name].append(area_under(curve))
        if progress is not None:
            progress()
    summary = {}
    for name in names:
        mean, lo, hi = mean_ci(np.array(areas[name]))
        summary[name] = {"area": mean, "area_ci": [lo, hi]}
    paired = {}
    reference = np.array(areas[names[0]])
    for name in names[1:]:
        diff = np.array(areas[name]) - reference
        mean, lo, hi = mean_ci(diff)
        paired[f"{name} - {names[0]}"] = {"area_diff": mean, "ci": [lo, hi], "wins": int((diff > 0).sum())}
    return {"n_prompts": n, "n_models": int(scores.shape[1]), "trials": trials, "states": summary,
            "paired": paired}
