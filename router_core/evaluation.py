"""The paper's evaluation protocol for routing among LLMs never seen in training.

One trial: the LLMs are split into a training pool and a test pool (default 1/3 test), the
prompts into train / validation / test (60 / 10 / 30). Routers are fitted on the training
prompts (and, for the learned map and the transfer routers, the training LLMs' labels on them). The test LLMs are
known only through their labels on the validation prompts (the representative set). Each
router then routes the test prompts among the TEST LLMs for a sweep of lambda, from 0 to the
value where the cheapest model is always chosen, tracing a deferral curve of (mean cost, mean
score): the rule sees each test LLM's mean cost on the validation prompts, the curve counts the
realised cost of each (prompt, LLM). Metrics per curve, with cost divided by the test pool's most expensive model's mean
cost so x runs over [0, 1]:

- area:   integral of the curve over x in [0, 1]; the curve is held flat left of its cheapest
          point and right of its dearest one, and linear in between (randomising between two
          neighbouring lambdas achieves every point of the segment).
- area50: the same over x in [0, 0.5], divided by 0.5 (mean score over the cheaper half).
- qnc:    quality-neutral cost, the least x at which the curve reaches the score of the test
          pool's best single LLM; None if it never does.
- peak:   the best score on the curve.
- closure (per method, over trials): (area - zero router's area) / (oracle's - zero router's),
          the share of the gap to the oracle the method captures, with a 95% bootstrap
          interval over the trials (`closure_ci`): a target such as "closure >= 15%" is met
          only if the interval says so, and one run's closure moves by points between seeds.

Routers: the zero router, K-NN, UniRoute's K-means and learned map, and the transfer routers of
`router_core.transfer` (the training LLMs' dense labels describe the prompts; a new LLM gets a
few numbers fitted from its representative answers only), and three combinations of K-means with
a transfer router (`router_core.shrinkage`: K-means profiles shrunk toward the transfer
prediction, transfer plus a shrunk per-cluster residual, a per-prompt blend).

Hyper-parameters (K, shrinkage prior, k of K-NN; k, rank, ridge of the transfer routers, see
`_choose_transfer`; K, strength, blend weight and transfer router of the combinations, see
`_choose_combined`) are chosen per trial without touching test
prompts or test LLMs (see `_choose`): the TRAINING LLMs route among themselves on the training
prompts, two-fold cross-fitted (fit on one half, score on the other, swap), with their Psi taken
from the validation prompts exactly as the test LLMs' will be; the largest summed area wins and
is refitted on all training prompts.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from router_core import shrinkage, transfer
from router_core.clustering import assign, fit_kmeans
from router_core.learned_map import LearnedMapConfig, fit_learned_map, soft_assign
from router_core.neighbours import knn_gamma
from router_core.output_scale import cluster_scale, normalised_scale, relative_to_models
from router_core.policy import normalise_costs, route
from router_core.profiles import cluster_profiles, soft_profiles

# Transfer routers (router_core.transfer) by name -> link.
TRANSFER_LINKS = {"transfer": "identity", "transfer_irt": "logit"}
# K-means combined with a transfer router (router_core.shrinkage), see `_choose_combined`.
COMBINED = ("kmeans_shrunk_transfer", "transfer_kmeans_residual", "kmeans_transfer_blend")
METHODS = ("zero_router", "knn", "uniroute_kmeans", "uniroute_learned_map", *TRANSFER_LINKS, *COMBINED, "oracle")
# Differences reported with their intervals: every router against the zero router, every
# router that reads prompts against K-NN and K-means, and the combined ones against transfer.
_ROUTERS = tuple(m for m in METHODS if m not in ("zero_router", "oracle"))
PAIRS = (tuple((a, "zero_router") for a in _ROUTERS)
         + tuple((a, b) for b in ("knn", "uniroute_kmeans") for a in _ROUTERS if a not in ("knn", b))
         + tuple((a, b) for b in TRANSFER_LINKS for a in COMBINED))
VALIDATION_SELECTIONS = ("random", "disagreement")


@dataclass(frozen=True)
class EvalConfig:
    """Protocol settings. `clusters`/`prior`/`knn_k` fixed to a value skip their search."""

    trials: int = 20
    test_models_fraction: float = 1 / 3
    train_fraction: float = 0.6
    validation_fraction: float = 0.1
    seed: int = 0
    clusters: int | None = None
    cluster_grid: tuple[int, ...] = (3, 5, 10, 20, 40, 80)
    prior: float | None = None
    prior_grid: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    knn_k: int | None = None
    knn_grid: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
    # None leaves the learned map out (it is the slowest router to fit), e.g. for size studies.
    learned_map: LearnedMapConfig | None = field(default_factory=LearnedMapConfig)
    transfer_k_grid: tuple[int, ...] = (10, 40, 160)
    transfer_rank_grid: tuple[int, ...] = (1, 2, 4, 64)  # capped at the number of training LLMs
    transfer_alpha_grid: tuple[float, ...] = (0.1, 0.8, 6.4, 51.2)
    # The combined routers: pseudo-prompts of the transfer prior per cluster (a large value is
    # the prior itself), and K-means' weight in the per-prompt blend (0 = transfer, 1 = K-means).
    strength_grid: tuple[float, ...] = (0.0, 1.0, 4.0, 16.0, 64.0, 1e6)
    blend_grid: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    n_lambdas: int = 200
    # Representative-set size study: with `validation_size`, the test prompts are drawn first
    # (1 - train_fraction - validation_fraction of them) and the representative set is taken
    # from the rest, at random or where the training LLMs disagree most; the test prompts are
    # then the same for every size and selection of the same seed.
    validation_size: int | None = None
    validation_selection: str = "random"
    # Price each test prompt as the gateway does with a state's output scale (`cluster_costs`):
    # every router but the zero router and the oracle sees the test LLM's mean cost times the
    # prompt's cluster's relative cost among the training LLMs.
    costs_by_cluster: bool = False


@dataclass(frozen=True)
class Curve:
    """A deferral curve: normalised mean cost x (ascending) and mean score y."""

    x: np.ndarray
    y: np.ndarray


@dataclass
class TrialResult:
    """One trial: each method's curve and metrics, the settings chosen, the test LLMs."""

    curves: dict[str, Curve]
    metrics: dict[str, dict[str, float | None]]
    settings: dict[str, int | float | str]
    test_models: list[int]


@dataclass
class EvalReport:
    """All trials, per-method summaries, paired differences, and how often each setting won."""

    trials: list[TrialResult]
    summary: dict[str, dict]
    paired: dict[str, dict[str, float | list[float]]]
    settings: dict[str, dict[str, int]]


# ---------------------------------------------------------------- curve metrics


def lambda_grid(gamma: np.ndarray, cost: np.ndarray, n: int) -> np.ndarray:
    """Sorted lambdas from 0 to just past the last switch (the cheapest model always wins).

    Between 0 and the largest breakpoint, lambdas are quantiles of all pairwise breakpoints
    (gamma_i - gamma_j) / (c_j - c_i), so the grid is dense where decisions actually change.
    `cost` is per model (M,) or per prompt and model (n, M); with the latter each prompt's
    breakpoints come from its own costs.
    """
    g = np.asarray(gamma, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    dc = c[..., None, :] - c[..., :, None]  # (M, M) or (n, M, M): c_j - c_i
    dg = g[:, :, None] - g[:, None, :]  # (n, M, M): gamma_i - gamma_j
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = dg / dc
    bp = bp[np.isfinite(bp) & (bp > 0) & (dc > 0)]
    if bp.size == 0:
        return np.zeros(1)
    top = bp.max()
    inner = np.quantile(bp, np.linspace(0.0, 1.0, max(n - 2, 1)))
    return np.unique(np.concatenate([[0.0], inner, [top * (1 + 1e-9) + 1e-12]]))


def deferral_curve(
    gamma: np.ndarray, route_cost: np.ndarray, score: np.ndarray, spend: np.ndarray, c_max: float, n_lambdas: int
) -> Curve:
    """Route every prompt for each lambda; return (mean spend / c_max, mean score) per lambda.

    gamma (n, M) expected losses, route_cost (M,) or (n, M) normalised costs the rule sees
    (per model, or priced per prompt), score and spend (n, M) the realised score and cost of
    each (prompt, model).
    """
    lams = lambda_grid(gamma, route_cost, n_lambdas)
    choice = route(gamma[None], route_cost, lams[:, None, None])  # (L, n)
    rows = np.arange(gamma.shape[0])[None, :]
    x = spend[rows, choice].mean(axis=1) / c_max
    y = score[rows, choice].mean(axis=1)
    order = np.lexsort((y, x))
    return Curve(x[order], y[order])


def area_under(curve: Curve, upto: float = 1.0) -> float:
    """Mean score over normalised cost [0, upto]: flat outside the curve, linear inside."""
    x0 = np.concatenate([[0.0], curve.x])
    x1 = np.concatenate([curve.x, [max(upto, float(curve.x[-1]))]])
    y0 = np.concatenate([[curve.y[0]], curve.y])
    y1 = np.concatenate([curve.y, [curve.y[-1]]])
    a, b = np.clip(x0, 0.0, upto), np.clip(x1, 0.0, upto)  # each segment's part inside [0, upto]
    width = x1 - x0
    slope = np.divide(y1 - y0, width, out=np.zeros_like(width), where=width > 0)
    ya, yb = y0 + slope * (a - x0), y0 + slope * (b - x0)
    return float(np.sum((b - a) * (ya + yb) / 2) / upto)


def quality_neutral_cost(curve: Curve, target: float) -> float | None:
    """Least normalised cost at which the (linear) curve reaches `target`; None if never."""
    hit = np.flatnonzero(curve.y >= target - 1e-12)
    if hit.size == 0:
        return None
    j = hit[0]
    if j == 0:
        return float(curve.x[0])
    x0, x1, y0, y1 = curve.x[j - 1], curve.x[j], curve.y[j - 1], curve.y[j]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def curve_metrics(curve: Curve, best_single: float) -> dict[str, float | None]:
    """area, area50, qnc, peak of one curve (see the module docstring)."""
    return {
        "area": area_under(curve),
        "area50": area_under(curve, 0.5),
        "qnc": quality_neutral_cost(curve, best_single),
        "peak": float(curve.y.max()),
    }


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and two-sided 95% Student-t interval of independent trial values."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    half = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


# ---------------------------------------------------------------- routers (gamma estimators)


@dataclass
class _Split:
    """Everything a router may see in one (pool, prompts) setting."""

    fit_emb: np.ndarray  # prompts the router is fitted on
    fit_loss: np.ndarray  # training LLMs' losses on them (learned map only)
    val_emb: np.ndarray  # representative prompts
    val_loss: np.ndarray  # candidate LLMs' losses on them
    query_emb: np.ndarray  # prompts to route


def _uniroute_gammas(
    s: _Split, k: int, priors: tuple[float, ...], lm: LearnedMapConfig | None, seed: int
) -> dict:
    """gamma for K-means (and, if `lm`, the learned map and its "theta") at each prior, for one K."""
    centroids = fit_kmeans(s.fit_emb, k, seed=seed)
    val_lab, _ = assign(centroids, s.val_emb)
    q_lab, _ = assign(centroids, s.query_emb)
    out = {}
    for prior in priors:
        psi, _ = cluster_profiles(val_lab, s.val_loss, k, prior)
        out[("uniroute_kmeans", prior)] = psi[:, q_lab].T
    if lm is not None:
        theta = out["theta"] = fit_learned_map(s.fit_emb, s.fit_loss, centroids, replace(lm, seed=seed))
        w_val, w_q = soft_assign(theta, s.val_emb), soft_assign(theta, s.query_emb)
        for prior in priors:
            psi, _ = soft_profiles(w_val, s.val_loss, prior)
            out[("uniroute_learned_map", prior)] = w_q @ psi.T
    return out


# ---------------------------------------------------------------- one trial


def _split_indices(n: int, fractions: tuple[float, float], rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n)
    a = int(round(fractions[0] * n))
    b = a + max(1, int(round(fractions[1] * n)))
    return [np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:])]


def _two_folds(train_p: np.ndarray, loss: np.ndarray, train_m: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The training prompts every training LLM is labelled on (only those can be scored), and
    their two (fit, hold) folds: a random half on either side."""
    usable = train_p[~np.isnan(loss[np.ix_(train_p, train_m)]).any(axis=1)]
    halves = np.array_split(rng.permutation(usable), 2)
    return usable, [(np.sort(halves[f]), np.sort(halves[1 - f])) for f in (0, 1)]


def _hold_out_area(route_cost: np.ndarray, score: np.ndarray, spend: np.ndarray, hold: np.ndarray,
                   train_m: np.ndarray, n_lambdas: int) -> Callable[[np.ndarray], float]:
    """The area under the deferral curve of a gamma (hold prompts x training LLMs), the training
    LLMs routing among themselves on the `hold` prompts."""
    h_score, h_spend = score[np.ix_(hold, train_m)], spend[np.ix_(hold, train_m)]
    c_max = h_spend.mean(axis=0).max() or 1.0
    return lambda gamma: area_under(deferral_curve(gamma, route_cost, h_score, h_spend, c_max, n_lambdas // 2))


def _cluster_grid(cfg: EvalConfig, folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, ...]:
    """The K to try: the fixed one, else the grid's that leave every cluster of a fit half about
    two prompts."""
    half = len(folds[0][1])  # the second half, as the folds were drawn
    return (cfg.clusters,) if cfg.clusters else tuple(k for k in cfg.cluster_grid if k <= half // 2) or (1,)


def _choose(
    emb: np.ndarray, loss: np.ndarray, score: np.ndarray, spend: np.ndarray,
    train_p: np.ndarray, val_p: np.ndarray, train_m: np.ndarray, cfg: EvalConfig, rng: np.random.Generator,
) -> dict[str, int | float]:
    """Pick K and prior (per UniRoute variant) and knn's k with the training LLMs only.

    Two-fold cross-fitting over the training prompts: fit on one half, score on the other,
    and swap; a candidate's score is its summed area. Psi always comes from the validation
    prompts, as it will for the test LLMs. The learned map, costlier to fit, reuses the K
    chosen for K-means and picks only its prior.
    """
    usable, folds = _two_folds(train_p, loss, train_m, rng)
    val_loss = loss[np.ix_(val_p, train_m)]
    route_cost = normalise_costs(np.nanmean(spend[np.ix_(val_p, train_m)], axis=0))
    seed = int(rng.integers(1 << 31))
    areas = [_hold_out_area(route_cost, score, spend, hold, train_m, cfg.n_lambdas) for _, hold in folds]

    def crossfit(k: int, priors: tuple[float, ...], lm: LearnedMapConfig | None) -> Counter:
        total: Counter = Counter()
        for (fit, hold), area in zip(folds, areas, strict=True):
            split = _Split(emb[fit], loss[np.ix_(fit, train_m)], emb[val_p], val_loss, emb[hold])
            for key, gamma in _uniroute_gammas(split, k, priors, lm, seed).items():
                if key != "theta":
                    total[key] += area(gamma)
        return total

    ks = _cluster_grid(cfg, folds)
    priors = (cfg.prior,) if cfg.prior is not None else cfg.prior_grid
    km = {(k, prior): v for k in ks for (_, prior), v in crossfit(k, priors, None).items()}
    k_best, prior_km = max(km, key=km.get)
    chosen = {"uniroute_kmeans.clusters": k_best, "uniroute_kmeans.prior": prior_km}
    if cfg.learned_map is not None:
        lm_scores = {prior: v for (method, prior), v in crossfit(k_best, priors, cfg.learned_map).items()
                     if method == "uniroute_learned_map"}
        chosen.update({"uniroute_learned_map.clusters": k_best,
                       "uniroute_learned_map.prior": max(lm_scores, key=lm_scores.get)})
    knn_ks = (cfg.knn_k,) if cfg.knn_k else cfg.knn_grid
    # K-NN fits nothing on the training prompts: score it on all of them.
    knn_area = _hold_out_area(route_cost, score, spend, usable, train_m, cfg.n_lambdas)
    knn = {k: knn_area(knn_gamma(emb[usable], emb[val_p], val_loss, k)) for k in knn_ks}
    return {**chosen, "knn.k": max(knn, key=knn.get)}


def _sized_split(train_scores: np.ndarray, cfg: EvalConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """(train, validation, test) prompts with a representative set of `cfg.validation_size`,
    chosen from the non-test prompts at random or by the training LLMs' disagreement (the
    variance of their scores; training LLMs' labels only, never a test LLM's)."""
    n = train_scores.shape[0]
    perm = rng.permutation(n)
    n_test = int(round((1.0 - cfg.train_fraction - cfg.validation_fraction) * n))
    test_p, pool = np.sort(perm[:n_test]), perm[n_test:]
    if not 0 < cfg.validation_size < pool.size:
        raise ValueError(f"validation size must be between 1 and {pool.size - 1}, got {cfg.validation_size}")
    if cfg.validation_selection == "random":
        val_p = pool[: cfg.validation_size]
    elif cfg.validation_selection == "disagreement":
        spread = np.nan_to_num(np.nanvar(train_scores[pool], axis=1), nan=-1.0)
        val_p = pool[np.argsort(-spread, kind="stable")[: cfg.validation_size]]
    else:
        raise ValueError(f"unknown validation selection {cfg.validation_selection!r}; expected one of {VALIDATION_SELECTIONS}")
    return [np.sort(np.setdiff1d(pool, val_p)), np.sort(val_p), test_p]


def _choose_transfer(
    emb: np.ndarray, loss: np.ndarray, score: np.ndarray, spend: np.ndarray,
    train_p: np.ndarray, val_p: np.ndarray, train_m: np.ndarray, cfg: EvalConfig, rng: np.random.Generator,
) -> dict[str, int | float]:
    """Pick k, rank and alpha of each transfer router with the training LLMs only.

    As `_choose`, two-fold over the training prompts: the features come from one half, the
    training LLMs route among themselves on the other. Each training LLM plays a new LLM in
    turn: its features are built from the OTHER training LLMs (basis and neighbour averages),
    its profile from its own validation labels; so no LLM ever predicts itself.
    """
    _, folds = _two_folds(train_p, loss, train_m, rng)
    val_loss = loss[np.ix_(val_p, train_m)]
    route_cost = normalise_costs(np.nanmean(spend[np.ix_(val_p, train_m)], axis=0))
    m = train_m.size
    totals: Counter = Counter()
    for fit, hold in folds:
        fit_loss = loss[np.ix_(fit, train_m)]
        area = _hold_out_area(route_cost, score, spend, hold, train_m, cfg.n_lambdas)
        # Without its own column, a lone training LLM has nothing to transfer from.
        directions = _leave_one_out_directions(fit_loss) if m > 1 else []
        for k in cfg.transfer_k_grid:
            g_hold = knn_gamma(emb[hold], emb[fit], fit_loss, k)
            g_val = knn_gamma(emb[val_p], emb[fit], fit_loss, k)
            gammas = {(name, k, rank, alpha): _transfer_as_new(g_hold, g_val, val_loss, directions, rank, alpha, link)
                      for rank in cfg.transfer_rank_grid for name, link in TRANSFER_LINKS.items()
                      for alpha in cfg.transfer_alpha_grid} if directions else {}
            for key, gamma in gammas.items():
                totals[key] += area(gamma)
    chosen: dict[str, int | float] = {}
    for name in TRANSFER_LINKS:
        scored = {key[1:]: v for key, v in totals.items() if key[0] == name}
        # With a single training LLM nothing was scored: the largest ridge, i.e. the zero router.
        k, rank, alpha = max(scored, key=scored.get) if scored else (cfg.transfer_k_grid[0], 1, cfg.transfer_alpha_grid[-1])
        chosen.update({f"{name}.k": k, f"{name}.rank": rank, f"{name}.alpha": alpha})
    return chosen


def _leave_one_out_directions(fit_loss: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each training LLM j, the centre and principal directions of the OTHER training LLMs'
    losses (n, m): the prompt side of the transfer router when j plays a new LLM."""
    m = fit_loss.shape[1]
    return [transfer.principal_directions(np.delete(fit_loss, j, axis=1)) for j in range(m)]


def _transfer_as_new(
    g_query: np.ndarray, g_val: np.ndarray, val_loss: np.ndarray, directions: list, rank: int, alpha: float, link: str
) -> np.ndarray:
    """Transfer gamma (n_query, m) of each training LLM j playing a new LLM: its prompt features
    from the other training LLMs' neighbour averages `g_query`/`g_val` (n, m) and `directions[j]`,
    its profile from its own validation losses `val_loss[:, j]` only."""
    m = val_loss.shape[1]
    out = np.empty((g_query.shape[0], m))
    for j, (centre, dirs) in enumerate(directions):
        o = np.delete(np.arange(m), j)
        prof = transfer.profiles_from_features((g_val[:, o] - centre) @ dirs[:, :rank], val_loss[:, [j]], alpha, link)
        out[:, j] = transfer.gamma_from_features((g_query[:, o] - centre) @ dirs[:, :rank], prof)[:, 0]
    return out


def combined_gammas(
    t_fit: np.ndarray, t_val: np.ndarray, t_query: np.ndarray, labels: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int, val_loss: np.ndarray, strength: float,
) -> dict[str, np.ndarray]:
    """gamma (n_query, M) of the two cluster-level combinations of K-means and a transfer router.

    t_* the transfer router's gamma of the candidate LLMs on the fit / representative / query
    prompts, `labels` their clusters (fit, val, query) among `k`, `val_loss` the candidates'
    representative losses. "kmeans_shrunk_transfer": per-cluster errors shrunk toward the
    transfer gamma averaged over the cluster's fit prompts; "transfer_kmeans_residual": the
    transfer gamma plus the cluster's mean representative residual, shrunk toward 0.
    """
    fit_lab, val_lab, q_lab = labels
    toward = shrinkage.profiles_toward(val_lab, val_loss, k, shrinkage.cluster_means(fit_lab, t_fit, k), strength)
    residual = shrinkage.profiles_toward(val_lab, val_loss - t_val, k, np.zeros((val_loss.shape[1], k)), strength)
    return {"kmeans_shrunk_transfer": toward[:, q_lab].T,
            "transfer_kmeans_residual": np.clip(t_query + residual[:, q_lab].T, 0.0, 1.0)}


def _choose_combined(
    emb: np.ndarray, loss: np.ndarray, score: np.ndarray, spend: np.ndarray,
    train_p: np.ndarray, val_p: np.ndarray, train_m: np.ndarray, cfg: EvalConfig, rng: np.random.Generator,
    chosen: dict[str, int | float],
) -> dict[str, int | float | str]:
    """Pick the settings of the routers combining K-means with a transfer router, with the
    training LLMs only, as `_choose_transfer` does (two folds; each training LLM plays a new LLM,
    its transfer gamma built from the others). The transfer routers keep their chosen k, rank and
    alpha; which of them to combine with is chosen too. The shrunk and residual routers pick K and
    the strength; the blend keeps K-means' chosen K and prior and picks the weight."""
    _, folds = _two_folds(train_p, loss, train_m, rng)
    seed = int(rng.integers(1 << 31))
    m = train_m.size
    if m < 2:  # a lone training LLM has nothing to transfer from: keep K-means' K, no shrinkage
        fixed: dict[str, int | float | str] = {"kmeans_transfer_blend.weight": 1.0,
                                               "kmeans_transfer_blend.transfer": "transfer"}
        for method in COMBINED[:2]:
            fixed.update({f"{method}.clusters": chosen["uniroute_kmeans.clusters"], f"{method}.strength": 0.0,
                          f"{method}.transfer": "transfer"})
        return fixed
    val_loss = loss[np.ix_(val_p, train_m)]
    route_cost = normalise_costs(np.nanmean(spend[np.ix_(val_p, train_m)], axis=0))
    ks = _cluster_grid(cfg, folds)
    k_km, prior_km = int(chosen["uniroute_kmeans.clusters"]), float(chosen["uniroute_kmeans.prior"])
    totals: Counter = Counter()
    for fit, hold in folds:
        fit_loss = loss[np.ix_(fit, train_m)]
        area = _hold_out_area(route_cost, score, spend, hold, train_m, cfg.n_lambdas)
        directions = _leave_one_out_directions(fit_loss)
        t: dict = {}  # transfer name -> (gamma on fit, val, hold prompts)
        for name, link in TRANSFER_LINKS.items():
            k, rank, alpha = int(chosen[f"{name}.k"]), int(chosen[f"{name}.rank"]), float(chosen[f"{name}.alpha"])
            g_val = knn_gamma(emb[val_p], emb[fit], fit_loss, k)
            t[name] = tuple(_transfer_as_new(knn_gamma(emb[rows], emb[fit], fit_loss, k), g_val, val_loss,
                                             directions, rank, alpha, link) for rows in (fit, val_p, hold))
        for k in ks:
            centroids = fit_kmeans(emb[fit], k, seed=seed)
            labels = tuple(assign(centroids, emb[rows])[0] for rows in (fit, val_p, hold))
            for name, (t_fit, t_val, t_hold) in t.items():
                for strength in cfg.strength_grid:
                    for method, gamma in combined_gammas(t_fit, t_val, t_hold, labels, k, val_loss, strength).items():
                        totals[(method, k, strength, name)] += area(gamma)
            if k == k_km:
                km = cluster_profiles(labels[1], val_loss, k, prior_km)[0][:, labels[2]].T
                for name, (_, _, t_hold) in t.items():
                    for w in cfg.blend_grid:
                        totals[("kmeans_transfer_blend", w, name)] += area(shrinkage.blend(km, t_hold, w))
    out: dict[str, int | float | str] = {}
    for method in COMBINED[:2]:
        scored = {key[1:]: v for key, v in totals.items() if key[0] == method}
        k, strength, name = max(scored, key=scored.get)
        out.update({f"{method}.clusters": k, f"{method}.strength": strength, f"{method}.transfer": name})
    scored = {key[1:]: v for key, v in totals.items() if key[0] == "kmeans_transfer_blend"}
    # K-means' K was chosen from the same grid under the same cap, so it is among `ks` and the
    # blend was scored; should it ever not be, the blend stays K-means.
    w, name = max(scored, key=scored.get) if scored else (1.0, "transfer")
    return {**out, "kmeans_transfer_blend.weight": w, "kmeans_transfer_blend.transfer": name}


@dataclass(frozen=True)
class TrialSplit:
    """Which LLMs and prompts play which part in one trial (sorted index arrays)."""

    train_models: np.ndarray
    test_models: np.ndarray
    train_prompts: np.ndarray
    val_prompts: np.ndarray
    test_prompts: np.ndarray  # only prompts every test LLM has a label on


@dataclass
class Routers:
    """What the routers decided from a split, before any test label is read."""

    gammas: dict[str, np.ndarray]  # method -> expected loss (n_test_prompts, n_test_models)
    route_cost: np.ndarray  # (n_test_models,) normalised costs the rule sees
    theta: np.ndarray  # the learned map
    settings: dict[str, int | float | str]
    # (n_test_prompts, n_test_models) costs priced per prompt (EvalConfig.costs_by_cluster), else None
    prompt_cost: np.ndarray | None = None

    def cost_for(self, method: str) -> np.ndarray:
        """The costs `method`'s rule sees: the zero router and the oracle always see the mean, so
        they stay the prompt-blind baseline and the ceiling closure is measured between."""
        if self.prompt_cost is None or method in ("zero_router", "oracle"):
            return self.route_cost
        return self.prompt_cost


def draw_split(scores: np.ndarray, cfg: EvalConfig, rng: np.random.Generator) -> TrialSplit:
    """Random LLM pools (at least 2 test, 1 training LLM) and a train/val/test prompt split."""
    n, m = scores.shape
    models = rng.permutation(m)
    n_test = min(m - 1, max(2, int(round(cfg.test_models_fraction * m))))
    test_m, train_m = np.sort(models[:n_test]), np.sort(models[n_test:])
    if cfg.validation_size is None:
        train_p, val_p, test_p = _split_indices(n, (cfg.train_fraction, cfg.validation_fraction), rng)
    else:
        train_p, val_p, test_p = _sized_split(scores[:, train_m], cfg, rng)
    test_p = test_p[~np.isnan(scores[np.ix_(test_p, test_m)]).any(axis=1)]
    if test_p.size == 0:
        raise ValueError("no test prompt has labels for every test LLM")
    if np.isnan(scores[np.ix_(val_p, test_m)]).all(axis=0).any():
        raise ValueError("a test LLM has no label on the validation prompts")
    return TrialSplit(train_m, test_m, train_p, val_p, test_p)


def fit_routers(
    emb: np.ndarray, scores: np.ndarray, costs: np.ndarray, split: TrialSplit, cfg: EvalConfig,
    rng: np.random.Generator,
) -> Routers:
    """Fit every router and estimate gamma on the test prompts. Reads the test LLMs' labels
    and costs on the validation prompts only; the training LLMs' on train/val prompts."""
    loss = 1.0 - scores
    tr_m, te_m = split.train_models, split.test_models
    chosen = _choose(emb, loss, scores, costs, split.train_prompts, split.val_prompts, tr_m, cfg, rng)
    val_loss = loss[np.ix_(split.val_prompts, te_m)]
    s = _Split(emb[split.train_prompts], loss[np.ix_(split.train_prompts, tr_m)],
               emb[split.val_prompts], val_loss, emb[split.test_prompts])
    seed = int(rng.integers(1 << 31))
    n_q = split.test_prompts.size
    gammas = {
        "zero_router": np.broadcast_to(np.nanmean(val_loss, axis=0), (n_q, te_m.size)),
        "knn": knn_gamma(s.query_emb, s.val_emb, val_loss, int(chosen["knn.k"])),
    }
    theta = None
    uniroute = ("uniroute_kmeans",) if cfg.learned_map is None else ("uniroute_kmeans", "uniroute_learned_map")
    for method in uniroute:
        k, prior = int(chosen[f"{method}.clusters"]), float(chosen[f"{method}.prior"])
        lm = cfg.learned_map if method == "uniroute_learned_map" else None
        fitted = _uniroute_gammas(s, k, (prior,), lm, seed)
        gammas[method] = fitted[(method, prior)]
        theta = fitted.get("theta", theta)
    # Drawn after every other router's randomness, so those stay as they were without transfer.
    chosen.update(_choose_transfer(emb, loss, scores, costs, split.train_prompts, split.val_prompts, tr_m, cfg, rng))
    t: dict = {}  # transfer name -> its gamma of the test LLMs on (training, representative, test) prompts
    for name, link in TRANSFER_LINKS.items():
        basis = transfer.fit_basis(s.fit_emb, s.fit_loss, int(chosen[f"{name}.k"]), int(chosen[f"{name}.rank"]))
        profiles = transfer.fit_profiles(basis, s.val_emb, val_loss, float(chosen[f"{name}.alpha"]), link)
        t[name] = tuple(transfer.transfer_gamma(basis, profiles, e) for e in (s.fit_emb, s.val_emb, s.query_emb))
        gammas[name] = t[name][2]
    # Drawn last, so every router above stays as it was without the combined routers.
    chosen.update(_choose_combined(emb, loss, scores, costs, split.train_prompts, split.val_prompts, tr_m, cfg,
                                   rng, chosen))
    for method in COMBINED[:2]:
        k, name = int(chosen[f"{method}.clusters"]), str(chosen[f"{method}.transfer"])
        # The K-means router's seed: at strength 0 and the same K, the same clusters.
        centroids = fit_kmeans(s.fit_emb, k, seed=seed)
        labels = tuple(assign(centroids, e)[0] for e in (s.fit_emb, s.val_emb, s.query_emb))
        gammas[method] = combined_gammas(*t[name], labels, k, val_loss, float(chosen[f"{method}.strength"]))[method]
    name = str(chosen["kmeans_transfer_blend.transfer"])
    gammas["kmeans_transfer_blend"] = shrinkage.blend(gammas["uniroute_kmeans"], gammas[name],
                                                      float(chosen["kmeans_transfer_blend.weight"]))
    mean_cost = np.nanmean(costs[np.ix_(split.val_prompts, te_m)], axis=0)
    prompt_cost = None
    if cfg.costs_by_cluster:
        k = int(chosen["uniroute_kmeans.clusters"])
        prompt_cost = cluster_costs(fit_kmeans(s.fit_emb, k, seed=seed), s, costs[np.ix_(split.train_prompts, tr_m)],
                                    mean_cost)
    return Routers(gammas, normalise_costs(mean_cost), theta, chosen, prompt_cost)


def cluster_costs(centroids: np.ndarray, s: _Split, fit_costs: np.ndarray, mean_cost: np.ndarray) -> np.ndarray:
    """(n_query, M) the gateway's per-prompt pricing in the protocol: the test LLMs' mean
    representative cost times the query prompt's cluster's relative cost among the training
    LLMs on the training prompts (`output_scale.cluster_scale`, normalised over the
    representative prompts as the gateway normalises a state's output scale), over the dearest
    mean. Only costs exist here, not answer lengths: the whole cost is scaled."""
    fit_lab, val_lab, q_lab = (assign(centroids, e)[0] for e in (s.fit_emb, s.val_emb, s.query_emb))
    one_hot = np.eye(len(centroids))
    scale = cluster_scale(one_hot[fit_lab], relative_to_models(fit_costs))
    scale = normalised_scale(scale, one_hot[val_lab])
    top = mean_cost.max()
    return scale[q_lab][:, None] * mean_cost / (top if top > 0 else 1.0)


# A study's own routers, fitted after `uniroute eval`'s on the same split and trial rng (so
# those stay exactly as they are without it): gamma of the test LLMs on the test prompts per
# router name, and the settings the study chose.
ExtraRouters = Callable[[TrialSplit, np.random.Generator], tuple[dict[str, np.ndarray], dict[str, int | float | str]]]


def run_trial(
    emb: np.ndarray, scores: np.ndarray, costs: np.ndarray, cfg: EvalConfig, rng: np.random.Generator,
    extra: ExtraRouters | None = None,
) -> TrialResult:
    """One random split of LLMs and prompts; curves and metrics of every method (and of
    `extra`'s routers, which see the mean costs, as the zero router does)."""
    split = draw_split(scores, cfg, rng)
    routers = fit_routers(emb, scores, costs, split, cfg, rng)
    extra_gammas, extra_settings = extra(split, rng) if extra else ({}, {})
    q_score = scores[np.ix_(split.test_prompts, split.test_models)]
    q_spend = costs[np.ix_(split.test_prompts, split.test_models)]
    c_max = q_spend.mean(axis=0).max() or 1.0
    gammas = {**routers.gammas, "oracle": 1.0 - q_score}  # the oracle knows the test labels
    best_single = float(q_score.mean(axis=0).max())
    curves = {name: deferral_curve(gammas[name], routers.cost_for(name), q_score, q_spend, c_max, cfg.n_lambdas)
              for name in METHODS if name in gammas}
    curves.update({name: deferral_curve(g, routers.route_cost, q_score, q_spend, c_max, cfg.n_lambdas)
                   for name, g in extra_gammas.items()})
    metrics = {name: curve_metrics(c, best_single) for name, c in curves.items()}
    return TrialResult(curves, metrics, {**routers.settings, **extra_settings}, split.test_models.tolist())


# ---------------------------------------------------------------- many trials


def evaluate(
    emb: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    cfg: EvalConfig = EvalConfig(),
    progress: Callable[[int], None] | None = None,
    extra: ExtraRouters | None = None,
    extra_pairs: tuple[tuple[str, str], ...] = (),
) -> EvalReport:
    """Run `cfg.trials` seeded trials; summarise each method with means and 95% intervals.

    emb (n, d) L2-normalised prompt embeddings, scores (n, M) in [0, 1] with NaN = unlabelled,
    costs (n, M) non-negative realised cost of each model on each prompt. `extra` adds a
    study's routers on the same splits, `extra_pairs` their paired differences.
    """
    emb = np.asarray(emb, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if emb.ndim != 2 or scores.ndim != 2 or emb.shape[0] != scores.shape[0] or costs.shape != scores.shape:
        raise ValueError(f"emb (n, d), scores (n, M), costs (n, M) disagree: {emb.shape} {scores.shape} {costs.shape}")
    if scores.shape[1] < 3:
        raise ValueError("need at least 3 LLMs: 2 to route among at test time and 1 to train on")
    if cfg.trials < 1:
        raise ValueError("trials must be >= 1")
    if not 0 < cfg.test_models_fraction < 1:
        raise ValueError("test models fraction must be strictly between 0 and 1")
    if np.isnan(costs).any() or (costs < 0).any():
        raise ValueError("every (prompt, model) needs a known, non-negative cost; "
                         "a model-cost table prices models that lack per-prompt costs")
    rng = np.random.default_rng(cfg.seed)
    trials = []
    for i in range(cfg.trials):
        trials.append(run_trial(emb, scores, costs, cfg, np.random.default_rng(rng.integers(1 << 63)), extra))
        if progress:
            progress(i + 1)
    return summarise(trials, extra_pairs)


def summarise(trials: list[TrialResult], extra_pairs: tuple[tuple[str, str], ...] = ()) -> EvalReport:
    """Means, intervals and paired differences across trials (`PAIRS` and `extra_pairs`); a
    study's own routers (`run_trial`'s `extra`) are summarised after `METHODS`."""
    methods = [m for m in METHODS if m in trials[0].metrics]
    methods += [m for m in trials[0].metrics if m not in METHODS]
    areas = {name: np.array([t.metrics[name]["area"] for t in trials]) for name in methods}
    summary = {}
    for name in methods:
        rows = [t.metrics[name] for t in trials]
        area, lo, hi = mean_ci(areas[name])
        qncs = [r["qnc"] for r in rows]
        summary[name] = {
            "area": area,
            "area_ci": [lo, hi],
            "area50": float(np.mean([r["area50"] for r in rows])),
            # Mean over the trials that reach the target; None if fewer than half of them do.
            "qnc": float(np.mean([q for q in qncs if q is not None])) if sum(q is not None for q in qncs) * 2 >= len(qncs) else None,
            "qnc_reached": sum(q is not None for q in qncs),
            "peak": float(np.mean([r["peak"] for r in rows])),
        }
    for name in methods:
        summary[name]["closure"] = closure(areas[name], areas["zero_router"], areas["oracle"])
        summary[name]["closure_ci"] = closure_ci(areas[name], areas["zero_router"], areas["oracle"])
    paired = {}
    for a, b in (p for p in PAIRS + tuple(extra_pairs) if set(p) <= set(methods)):
        diff = areas[a] - areas[b]
        mean, lo, hi = mean_ci(diff)
        paired[f"{a} - {b}"] = {"area_diff": mean, "ci": [lo, hi], "wins": int((diff > 0).sum())}
    keys = sorted({k for t in trials for k in t.settings})
    settings = {k: {str(v): c for v, c in sorted(Counter(t.settings[k] for t in trials).items())} for k in keys}
    return EvalReport(trials, summary, paired, settings)


def closure(area: np.ndarray, zero: np.ndarray, oracle: np.ndarray) -> float | None:
    """The share of the zero router -> oracle gap in mean area that a method captures, from
    per-trial areas (T,); None when there is no gap."""
    gap = float(np.mean(oracle) - np.mean(zero))
    return float((np.mean(area) - np.mean(zero)) / gap) if gap > 0 else None


def closure_ci(
    area: np.ndarray, zero: np.ndarray, oracle: np.ndarray, resamples: int = 4000
) -> list[float] | None:
    """95% percentile-bootstrap interval of closure from per-trial areas (T,) of a method, the
    zero router and the oracle: the trials are resampled together, as they are paired. Fixed
    seed, so a report is reproducible. None when a resample has no gap to close."""
    idx = np.random.default_rng(0).integers(0, area.size, size=(resamples, area.size))
    base = zero[idx].mean(axis=1)
    gap = oracle[idx].mean(axis=1) - base
    if (gap <= 0).any():
        return None
    lo, hi = np.quantile((area[idx].mean(axis=1) - base) / gap, [0.025, 0.975])
    return [float(lo), float(hi)]


def mean_curve(curves: list[Curve], grid: np.ndarray) -> np.ndarray:
    """Average of curves on a common cost grid (flat outside each curve), for plotting."""
    return np.mean([np.interp(grid, c.x, c.y) for c in curves], axis=0)
