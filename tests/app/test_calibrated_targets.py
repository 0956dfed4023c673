"""Budgets and quality targets, turned into λ by the curve measured on the representative set,
hold on RouterBench prompts the curve never saw.

The router is built in process with the public API (`UniRouter`, the gateway's own decision
path) and the models `uniroute demo` registers (their RouterBench labels on the 400
representative prompts as scores, their mean recorded cost per request as price) over the
shipped router state; the held-out prompts are routed with `UniRouter.route` for the target,
and scored with their RouterBench labels.

Held-out prompts: RouterBench's test split (`test_split_ids`) of the tasks the representative
set covers (arc-challenge, winogrande), minus the representative prompts: n = 417. mbpp is left
out: the representative set holds none of it, so the curve makes no claim about it.

Tolerance, from the sample sizes. The curve's expected score at a point estimates a rate from
n_rep = 400 labelled prompts; the realised score is a mean of n = 417 0/1 labels. Both are
binomial means of independent samples, so their difference has standard error
se = sqrt(s (1 - s) (1/n + 1/n_rep)) at score s (0.024 at s = 0.85), and the realised score must
lie within 3 se of the expected score of the chosen point (a quality target's realised score, in
turn, at least q x the best model's expected score minus 3 se). Costs likewise: the realised
cost per request is a mean of n prices with standard deviation sd (measured over the held-out
prompts), its tolerance 3 sd sqrt(1/n + 1/n_rep); a budget's realised cost must not exceed the
budget by more than that. Three standard errors keep the twelve comparisons below from failing
by chance (0.3% each) while still catching a curve that is off by a few points.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.demo.models import add_demo_models
from app.routing.prompts import chat_routing_text
from router_core.embedding import CachedEmbedder
from router_core.repset import MC_TASKS, load_repset
from router_core.router import UniRouter
from router_core.shipped import ROUTERBENCH_REPSET
from router_core.targets import RoutingTarget

pytestmark = pytest.mark.slow

TARGETS = [RoutingTarget("quality", q) for q in (0.90, 0.95, 0.99)] + [
    RoutingTarget("budget", b) for b in (0.0005, 0.001, 0.003)]


@pytest.fixture(scope="module")
def held_out(routerbench, default_state, shared_cache, test_split_ids):
    """(router with the demo models, held-out dataset rows, their routing texts, n_rep)."""
    state, embedder = default_state
    repset = load_repset(ROUTERBENCH_REPSET)
    router = UniRouter(state, embedder, repset, repset_embedder=CachedEmbedder(embedder, shared_cache))
    add_demo_models(router, routerbench, None)
    represented = {item.id for item in repset.items}
    row = {pid: i for i, pid in enumerate(routerbench.ids)}
    rows = [row[pid] for pid in test_split_ids
            if pid not in represented and pid in row and routerbench.tasks[row[pid]] in MC_TASKS]
    texts = [chat_routing_text([{"role": "user", "content": routerbench.prompts[i]}]) for i in rows]
    return router, rows, texts, len(repset.items)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.kind}={t.value:g}")
def test_target_holds_on_held_out_prompts_within_sampling_error(held_out, routerbench, target):
    router, rows, texts, n_rep = held_out
    n = len(rows)
    assert n == 417
    decisions = router.route(texts, **{target.kind: target.value})
    res = decisions[0].target
    assert res.met and all(d.target == res for d in decisions)
    column = {name: j for j, name in enumerate(routerbench.models)}
    scores = np.array([routerbench.scores[r, column[d.model]] for r, d in zip(rows, decisions)])
    # demo models are priced per request: what the gateway bills is the expected cost
    costs = np.array([d.expected_cost for d in decisions])
    score, cost = scores.mean(), costs.mean()
    s = res.expected_score
    score_tol = 3 * math.sqrt(s * (1 - s) * (1 / n + 1 / n_rep))
    cost_tol = 3 * costs.std(ddof=1) * math.sqrt(1 / n + 1 / n_rep)
    curve = router.calibration()
    best_realised = routerbench.scores[rows, column[curve.best_model]].mean()
    print(f"\n{target.kind}={target.value:g}: λ={res.cost_weight:.4g} | score expected {s:.4f} realised {score:.4f} "
          f"(tolerance {score_tol:.4f}) | cost/request expected {res.expected_cost:.6f} realised {cost:.6f} "
          f"(tolerance {cost_tol:.6f}) | best model expected {curve.best_score:.4f} realised {best_realised:.4f}, "
          f"fraction of it realised {score / best_realised:.3f}")
    assert abs(score - s) <= score_tol
    assert abs(cost - res.expected_cost) <= cost_tol
    if target.kind == "quality":
        assert score >= target.value * curve.best_score - score_tol
    else:
        assert cost <= target.value + cost_tol
