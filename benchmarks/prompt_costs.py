"""Pricing each prompt in the routing rule: `python -m benchmarks.prompt_costs`.

`uniroute eval` routes with each test LLM's MEAN cost on the representative prompts, c(h), the
same for every prompt, and counts the realised cost of each (prompt, LLM) on the curve. The
gateway prices each request instead (router_core.router `expected_costs`: the prompt's input
tokens plus the model's mean output tokens). This study asks what a per-prompt cost prediction
c(x, h) in the rule argmin_h gamma(x, h) + lambda c(x, h) is worth, on the seeded splits of
`uniroute eval` (router_core.evaluation's `draw_split` and `fit_routers`, learned map left out),
for the routers zero_router, uniroute_kmeans, knn, transfer_irt and the oracle. Cost models, all
built from what the UniRoute contract allows (the training LLMs' data, the new LLM's answers on
the representative set) but the last:

- mean:      the test LLM's mean representative cost (what `uniroute eval` uses);
- lenfit:    the test LLM's cost linear in the prompt's length in characters, least squares on
             its representative prompts (the nearest to the gateway's input-token pricing);
- knnrel:    the prompt's relative cost (each training LLM's cost over its mean on the training
             prompts, averaged over the training LLMs) averaged over its `--knn-k` nearest
             training prompts, times the test LLM's mean representative cost;
- ownclus:   the test LLM's own mean representative cost in the prompt's K-means cluster, shrunk
             toward its overall mean with `--prior` pseudo-prompts (Psi's rule, on costs);
- trainclus: the mean relative cost of the training prompts of the prompt's cluster, times the
             test LLM's mean representative cost;
- owntrain:  ownclus shrunk with `--own-prior` pseudo-prompts toward trainclus (the test LLM's
             own costs where it has answers, the training LLMs' pattern where it has few);
- transcost: the transfer router's model on log relative costs: a cost per (prompt, test LLM)
             from the training LLMs' costs near the prompt and the test LLM's representative costs;
- lengthmodel: the prompt's relative cost among the training LLMs predicted from its embedding
             (benchmarks.length_model: log-linear, ridge) over its mean prediction on the
             representative prompts, times the test LLM's mean representative cost;
- realised:  the true cost of the (prompt, LLM): no router can know it; it bounds the others.

With `--input-prices` (the data's list prices per million input tokens, and its token rule,
ceil(characters / 4), as arena_bench_v1 states them) three more price as the gateway does: the
prompt's input tokens exactly, and only the answer's cost predicted (the test LLM's mean
representative answer cost, the cost less its input part) times
- gw_mean:    1 (the gateway with no output scale);
- gw_cluster: the prompt's cluster's relative answer cost among the training LLMs, shrunk and
             normalised over the representative prompts as the gateway's output scale is;
- gw_length:  the length model on the training LLMs' relative answer costs.

The clusters are K-means on the training prompts with the K the K-means router chose in the
trial (seed 0). Every cost model is normalised by the test pool's dearest mean representative
cost, as `uniroute eval` normalises the mean. Reported per router and cost model: mean area
with its 95% interval, closure (against the zero router and the oracle both with mean costs, as
`uniroute eval` reports it) with its bootstrap interval, and the paired per-trial difference in
area to the same router with mean costs (95% interval, trials won), and for the length model
to the same router with the cluster pricing it would refine (`lengthmodel` against `trainclus`,
`gw_length` against `gw_cluster`: `versus` in the JSON). The JSON keeps every per-trial area.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.length_model import fit_length_model
from benchmarks.repset_size import data_arguments, load_embedded
from router_core import transfer
from router_core.clustering import assign, fit_kmeans
from router_core.evaluation import (
    EvalConfig,
    TrialSplit,
    area_under,
    closure,
    closure_ci,
    deferral_curve,
    draw_split,
    fit_routers,
    mean_ci,
)
from router_core.neighbours import knn_gamma
from router_core.output_scale import (
    DEFAULT_SCALE_PRIOR,
    cluster_scale,
    normalised_scale,
    relative_to_models,
)
from router_core.profiles import cluster_profiles

ROUTERS = ("zero_router", "uniroute_kmeans", "knn", "transfer_irt", "oracle")
COST_MODELS = ("mean", "lenfit", "knnrel", "ownclus", "trainclus", "owntrain", "transcost", "lengthmodel", "realised")
# Priced as the gateway prices: the input exactly, the answer predicted (`--input-prices`).
GATEWAY_MODELS = ("gw_mean", "gw_cluster", "gw_length")
# The length model against the cluster pricing it would refine.
VERSUS = {"lengthmodel": "trainclus", "gw_length": "gw_cluster"}


def own_toward_train(val_lab: np.ndarray, val_cost: np.ndarray, mean: np.ndarray, train_scale: np.ndarray,
                     clusters: int, prior: float) -> np.ndarray:
    """(M, K) each test LLM's mean representative cost per cluster, shrunk with `prior`
    pseudo-prompts toward its mean times the training LLMs' relative cost there (`train_scale`,
    normalised over the representative prompts as the gateway normalises a state's output scale)."""
    one_hot = np.eye(clusters)[val_lab]
    scale = normalised_scale(train_scale, one_hot)
    return (val_cost.T @ one_hot + prior * mean[:, None] * scale) / (one_hot.sum(axis=0) + prior)


def transfer_costs(emb: np.ndarray, costs: np.ndarray, split: TrialSplit, mean: np.ndarray, k: int = 20,
                   rank: int = 4, alpha: float = 1.0) -> np.ndarray:
    """(n_test, M) the transfer router's model (router_core.transfer, identity link) fitted to
    log relative costs instead of losses: the training LLMs' costs near the prompt describe it,
    each test LLM's representative costs fit its few numbers; mapped to [0, 1] by the training
    range, then back, each LLM's prediction rescaled to its mean on the representative prompts."""
    tr_p, val_p, q, tr_m, te = split.train_prompts, split.val_prompts, split.test_prompts, split.train_models, \
        split.test_models
    fit = costs[np.ix_(tr_p, tr_m)]
    log_rel = np.log(np.clip(fit / fit.mean(axis=0), 1e-6, None))
    lo, hi = float(log_rel.min()), float(log_rel.max())
    basis = transfer.fit_basis(emb[tr_p], (log_rel - lo) / (hi - lo), k, min(rank, tr_m.size))
    val = np.log(np.clip(costs[np.ix_(val_p, te)] / mean, 1e-6, None))
    profiles = transfer.fit_profiles(basis, emb[val_p], np.clip((val - lo) / (hi - lo), 0, 1), alpha, "identity")
    rel_q, rel_v = (np.exp(transfer.transfer_gamma(basis, profiles, emb[rows]) * (hi - lo) + lo) for rows in (q, val_p))
    return rel_q / rel_v.mean(axis=0) * mean


def predicted_costs(emb: np.ndarray, lengths: np.ndarray, costs: np.ndarray, split: TrialSplit,
                    clusters: int, knn_k: int = 20, prior: float = 4.0, own_prior: float = 16.0,
                    input_cost: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each cost model's costs of the test LLMs on the test prompts, normalised by the dearest
    test LLM's mean representative cost: "mean" (M,), the others (n_test, M); with `input_cost`
    (n, all LLMs), the part of `costs` the prompt's input tokens make, the GATEWAY_MODELS too."""
    tr_p, val_p, q = split.train_prompts, split.val_prompts, split.test_prompts
    te = split.test_models
    val_cost = costs[np.ix_(val_p, te)]
    mean = np.nanmean(val_cost, axis=0)  # (M,), as `fit_routers` takes it

    design = np.c_[np.ones(val_p.size), lengths[val_p]]
    coef = np.linalg.lstsq(design, val_cost, rcond=None)[0]  # (2, M)
    lenfit = np.clip(np.c_[np.ones(q.size), lengths[q]] @ coef, 0.0, None)

    rel = relative_to_models(costs[np.ix_(tr_p, split.train_models)])  # (n_train,)
    knnrel = knn_gamma(emb[q], emb[tr_p], rel[:, None], knn_k)[:, 0]

    centroids = fit_kmeans(emb[tr_p], clusters, seed=0)
    tr_lab, val_lab, q_lab = (assign(centroids, emb[rows])[0] for rows in (tr_p, val_p, q))
    own = cluster_profiles(val_lab, val_cost, clusters, prior)[0]  # (M, K)
    # no shrinkage: the rule measured before the gateway shipped it (router_core.output_scale)
    rel_k = cluster_scale(np.eye(clusters)[tr_lab], rel, prior=0.0)
    raw = {"mean": mean,
           "lenfit": lenfit,
           "knnrel": knnrel[:, None] * mean,
           "ownclus": own[:, q_lab].T,
           "trainclus": rel_k[q_lab][:, None] * mean,
           "owntrain": own_toward_train(val_lab, val_cost, mean, rel_k, clusters, own_prior)[:, q_lab].T,
           "transcost": transfer_costs(emb, costs, split, mean),
           "lengthmodel": fit_length_model(emb[tr_p], rel).relative(emb[q], emb[val_p])[:, None] * mean,
           "realised": costs[np.ix_(q, te)]}
    if input_cost is not None:
        raw.update(gateway_costs(emb, costs, input_cost, split, centroids))
    top = mean.max()  # `normalise_costs` of the mean: "mean" is the very route cost of `uniroute eval`
    return {name: c / top if top > 0 else np.zeros_like(c) for name, c in raw.items()}


def gateway_costs(emb: np.ndarray, costs: np.ndarray, input_cost: np.ndarray, split: TrialSplit,
                  centroids: np.ndarray) -> dict[str, np.ndarray]:
    """The GATEWAY_MODELS' (n_test, M) costs, not normalised: the test prompts' input cost as it
    is, plus each test LLM's mean representative answer cost times the prompt's relative answer
    length (1, its cluster's, or the length model's), all from the training LLMs' answer costs."""
    tr_p, val_p, q, te = split.train_prompts, split.val_prompts, split.test_prompts, split.test_models
    answer = costs - input_cost
    mean_answer = np.nanmean(answer[np.ix_(val_p, te)], axis=0)
    rel = relative_to_models(answer[np.ix_(tr_p, split.train_models)])
    one_hot = np.eye(len(centroids))
    tr_lab, val_lab, q_lab = (assign(centroids, emb[rows])[0] for rows in (tr_p, val_p, q))
    scale = normalised_scale(cluster_scale(one_hot[tr_lab], rel, DEFAULT_SCALE_PRIOR), one_hot[val_lab])
    length = {"gw_mean": np.ones(q.size), "gw_cluster": scale[q_lab],
              "gw_length": fit_length_model(emb[tr_p], rel).relative(emb[q], emb[val_p])}
    return {name: input_cost[np.ix_(q, te)] + rl[:, None] * mean_answer for name, rl in length.items()}


def input_costs(prompts: list[str], models: list[str], prices_file: str) -> np.ndarray:
    """(n, M) each prompt's input cost for each LLM: ceil(characters / 4) tokens at its price per
    million input tokens in `prices_file` ({model: {"input_per_mtok": ...}}, arena_bench_v1's
    prices.json), the rule the data's costs were made by."""
    prices = json.loads(Path(prices_file).read_text())
    missing = [m for m in models if m not in prices]
    if missing:
        raise SystemExit(f"--input-prices has no price for {missing}")
    tokens = np.array([-(-len(p) // 4) for p in prompts], dtype=np.float64)
    return tokens[:, None] * np.array([prices[m]["input_per_mtok"] for m in models], dtype=np.float64) / 1e6


def run_trial(emb: np.ndarray, lengths: np.ndarray, scores: np.ndarray, costs: np.ndarray, cfg: EvalConfig,
              rng: np.random.Generator, knn_k: int, prior: float, own_prior: float = 16.0,
              input_cost: np.ndarray | None = None) -> dict[tuple[str, str], float]:
    """One `uniroute eval` trial (the same split and routers for the same rng): the area of every
    (router, cost model)."""
    split = draw_split(scores, cfg, rng)
    routers = fit_routers(emb, scores, costs, split, cfg, rng)
    q_score = scores[np.ix_(split.test_prompts, split.test_models)]
    q_spend = costs[np.ix_(split.test_prompts, split.test_models)]
    c_max = q_spend.mean(axis=0).max() or 1.0
    gammas = {**{r: routers.gammas[r] for r in ROUTERS[:-1]}, "oracle": 1.0 - q_score}
    priced = predicted_costs(emb, lengths, costs, split, int(routers.settings["uniroute_kmeans.clusters"]),
                             knn_k, prior, own_prior, input_cost)
    return {(r, c): area_under(deferral_curve(gammas[r], priced[c], q_score, q_spend, c_max, cfg.n_lambdas))
            for r in ROUTERS for c in priced}


def summarise(areas: dict[tuple[str, str], list[float]]) -> dict[str, dict[str, dict]]:
    """Per router and cost model: area and interval, closure (against the zero router and the
    oracle with mean costs) and interval, the paired difference to the router with mean costs."""
    a = {key: np.asarray(v, dtype=np.float64) for key, v in areas.items()}
    zero, oracle = a[("zero_router", "mean")], a[("oracle", "mean")]
    out: dict[str, dict[str, dict]] = {}
    for (router, cost), values in a.items():
        m, lo, hi = mean_ci(values)
        row = {"area": m, "area_ci": [lo, hi], "closure": closure(values, zero, oracle),
               "closure_ci": closure_ci(values, zero, oracle), "minus_mean_cost": None,
               "trial_areas": values.tolist()}
        if cost != "mean":
            row["minus_mean_cost"] = _paired(values, a[(router, "mean")])
        if cost in VERSUS:
            row["versus"] = {"cost_model": VERSUS[cost], **_paired(values, a[(router, VERSUS[cost])])}
        out.setdefault(router, {})[cost] = row
    return out


def _paired(values: np.ndarray, base: np.ndarray) -> dict:
    diff = values - base
    d, lo, hi = mean_ci(diff)
    return {"area_diff": d, "ci": [lo, hi], "wins": int((diff > 0).sum()), "trials": int(diff.size)}


def _shown(d: dict | None) -> str:
    return "" if d is None else f"  {d['area_diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] {d['wins']}/{d['trials']}"


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{100 * v:5.1f}%"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="the trials' seed (0: the splits of `uniroute eval`)")
    p.add_argument("--knn-k", type=int, default=20, help="nearest training prompts of the knnrel cost model")
    p.add_argument("--prior", type=float, default=4.0, help="pseudo-prompts of the ownclus cost model")
    p.add_argument("--own-prior", type=float, default=16.0, help="pseudo-prompts of the owntrain cost model")
    p.add_argument("--input-prices", metavar="FILE",
                   help="the data's prices per million input tokens ({model: {\"input_per_mtok\": ...}}): adds the "
                        "cost models priced as the gateway prices, input exact and answer predicted")
    p.add_argument("--json", dest="json_out", required=True)
    args = p.parse_args(argv)
    name, prompts, emb, scores, costs = load_embedded(args)
    input_cost = None
    if args.input_prices:
        from router_core.datasets import load_dataset

        input_cost = input_costs(prompts, list(load_dataset(args.data, args.format).models), args.input_prices)
    if np.isnan(costs).any() or (costs < 0).any():
        raise SystemExit("every (prompt, model) needs a known, non-negative cost (--model-costs prices a model)")
    if input_cost is not None and (costs - input_cost < -1e-12).any():
        raise SystemExit("--input-prices price some prompt's input above its whole cost: not the data's prices")
    lengths = np.array([len(text) for text in prompts], dtype=np.float64)
    cfg = EvalConfig(trials=args.trials, seed=args.seed, learned_map=None)
    master = np.random.default_rng(cfg.seed)  # the same trial seeds as `evaluate`
    areas: dict[tuple[str, str], list[float]] = {}
    for _ in tqdm(range(cfg.trials), desc="trials", unit="trial", file=sys.stderr):
        trial = run_trial(emb, lengths, scores, costs, cfg, np.random.default_rng(master.integers(1 << 63)),
                          args.knn_k, args.prior, args.own_prior, input_cost)
        for key, value in trial.items():
            areas.setdefault(key, []).append(value)
    methods = summarise(areas)
    result = {"dataset": name, "n_prompts": int(scores.shape[0]), "n_models": int(scores.shape[1]),
              "trials": cfg.trials, "seed": cfg.seed, "embedder": args.embedder, "knn_k": args.knn_k,
              "prior": args.prior, "own_prior": args.own_prior, "routers": list(ROUTERS),
              "cost_models": list(COST_MODELS) + (list(GATEWAY_MODELS) if input_cost is not None else []),
              "input_prices": args.input_prices, "methods": methods}
    Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}, {cfg.trials} trials; closure vs zero_router/oracle with mean costs; "
          "paired area difference vs the same router with mean costs (and, for the length model, with the "
          "cluster pricing it refines)")
    for router, rows in methods.items():
        for cost, row in rows.items():
            ci = row["closure_ci"]
            shown = " " * 16 if ci is None else f" [{100 * ci[0]:5.1f}, {100 * ci[1]:5.1f}]"
            paired = "".join(_shown(row.get(key)) for key in ("minus_mean_cost", "versus"))
            print(f"{router:<16} {cost:<11} area {row['area']:.4f}  closure {_pct(row['closure'])}{shown}{paired}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
