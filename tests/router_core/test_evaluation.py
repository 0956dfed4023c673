"""The evaluation protocol on synthetic data with known answers."""
from dataclasses import replace

import numpy as np
import pytest

from router_core.evaluation import (
    COMBINED,
    METHODS,
    TRANSFER_LINKS,
    Curve,
    EvalConfig,
    area_under,
    closure_ci,
    deferral_curve,
    draw_split,
    evaluate,
    fit_routers,
    quality_neutral_cost,
)
from router_core.learned_map import LearnedMapConfig
from router_core.policy import route
from tests.support.labels import flipped_outside_validation

FAST = EvalConfig(trials=2, cluster_grid=(4, 8), prior_grid=(0.0, 4.0), knn_grid=(5, 20),
                  learned_map=LearnedMapConfig(steps=30), n_lambdas=60)


def centred_data(n=600, n_centres=4, n_models=6, d=24, seed=0, noise=0.1):
    """Prompts around a few centres; each model is right or wrong depending only on the centre."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:n_centres]
    which = rng.integers(n_centres, size=n)
    emb = centres[which] + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    right = rng.integers(2, size=(n_centres, n_models)).astype(float)
    right[:, -1] = 1.0  # one model always right, so every prompt has a correct answer
    costs = np.broadcast_to(np.linspace(0.1, 1.0, n_models), (n, n_models)).copy()
    return emb, right[which], costs, which


def test_flat_curve_area_is_its_height_and_area50_too():
    c = Curve(np.array([0.3, 0.6]), np.array([0.7, 0.7]))
    assert area_under(c) == pytest.approx(0.7)
    assert area_under(c, 0.5) == pytest.approx(0.7)


def test_curve_is_held_flat_left_and_right_and_linear_between():
    c = Curve(np.array([0.2, 0.6]), np.array([0.5, 0.9]))
    # 0.2 * 0.5 + 0.4 * 0.7 + 0.4 * 0.9
    assert area_under(c) == pytest.approx(0.1 + 0.28 + 0.36)
    # [0, 0.2] at 0.5, then 0.5 -> 0.8 over [0.2, 0.5]; divided by 0.5
    assert area_under(c, 0.5) == pytest.approx((0.1 + 0.3 * 0.65) / 0.5)


def test_qnc_interpolates_and_is_none_when_never_reached():
    c = Curve(np.array([0.1, 0.5]), np.array([0.6, 0.8]))
    assert quality_neutral_cost(c, 0.7) == pytest.approx(0.3)
    assert quality_neutral_cost(c, 0.6) == pytest.approx(0.1)
    assert quality_neutral_cost(c, 0.81) is None


def test_lambda_sweep_ends_at_the_cheapest_model_and_starts_at_least_loss():
    rng = np.random.default_rng(0)
    gamma = rng.uniform(size=(100, 4))
    cost = np.array([0.2, 1.0, 0.05, 0.5])
    score = rng.uniform(size=(100, 4))
    spend = np.broadcast_to(cost, (100, 4))
    curve = deferral_curve(gamma, cost, score, spend, 1.0, 50)
    assert curve.x[0] == pytest.approx(0.05) and curve.y[0] == pytest.approx(score[:, 2].mean())
    at_zero = route(gamma, cost, 0.0)
    assert curve.x[-1] == pytest.approx(spend[np.arange(100), at_zero].mean())


def test_per_prompt_costs_sweep_every_prompt_from_least_loss_to_its_own_cheapest_model():
    rng = np.random.default_rng(1)
    score = rng.uniform(size=(80, 4))
    cost = rng.uniform(0.1, 1.0, size=(80, 4))  # each prompt priced on its own
    # per-model costs given as (n, M) are the same sweep, to the bit
    flat = np.array([0.2, 1.0, 0.05, 0.5])
    one, many = (deferral_curve(1 - score, c, score, cost, 1.0, 50) for c in (flat, np.broadcast_to(flat, (80, 4))))
    assert np.array_equal(one.x, many.x) and np.array_equal(one.y, many.y)
    # with true losses and true costs, the sweep traces the upper hull from each prompt's cheapest
    # model to each prompt's best one
    curve = deferral_curve(1 - score, cost, score, cost, 1.0, 400)
    assert curve.x[0] == pytest.approx(cost.min(axis=1).mean())
    assert curve.y[-1] == pytest.approx(score.max(axis=1).mean())
    assert np.all(np.diff(curve.y) >= -1e-12)
    slopes = np.diff(curve.y)[np.diff(curve.x) > 1e-12] / np.diff(curve.x)[np.diff(curve.x) > 1e-12]
    assert np.all(np.diff(slopes) <= 1e-9)


def test_kmeans_router_matches_the_oracle_when_correctness_depends_only_on_the_centre():
    emb, scores, costs, _ = centred_data()
    cfg = replace(FAST, clusters=4, prior=0.0, trials=3)
    report = evaluate(emb, scores, costs, cfg)
    for t in report.trials:
        assert t.metrics["uniroute_kmeans"]["area"] == pytest.approx(t.metrics["oracle"]["area"], abs=1e-9)
    assert report.summary["uniroute_kmeans"]["area"] > report.summary["zero_router"]["area"] + 0.05


def test_a_model_better_everywhere_is_always_picked_at_lambda_zero():
    emb, _, costs, _ = centred_data(seed=1)
    scores = (np.random.default_rng(1).uniform(size=costs.shape) < 0.3).astype(float)
    scores[:, 0] = 1.0  # model 0 is right everywhere, the others on 30% of prompts; it is the dearest
    costs[:, 0] = 2.0
    rng = np.random.default_rng(3)
    split = draw_split(scores, FAST, rng)
    if 0 not in split.test_models:  # force model 0 into the test pool
        split = replace(split, test_models=np.sort(np.r_[0, split.test_models[1:]]),
                        train_models=np.setdiff1d(split.train_models, [0]))
    routers = fit_routers(emb, scores, costs, split, replace(FAST, prior=4.0, knn_k=20), rng)
    best = int(np.flatnonzero(split.test_models == 0)[0])
    for name in ("zero_router", "knn", "uniroute_kmeans", "uniroute_learned_map"):
        assert (route(routers.gammas[name], routers.route_cost, 0.0) == best).all(), name
        cheapest = int(np.argmin(routers.route_cost))
        assert (route(routers.gammas[name], routers.route_cost, 1e6) == cheapest).all(), name


def test_test_llm_labels_outside_validation_never_change_theta_or_any_decision():
    emb, scores, costs, _ = centred_data(seed=2)
    split = draw_split(scores, FAST, np.random.default_rng(5))
    changed = flipped_outside_validation(scores, split)
    a = fit_routers(emb, scores, costs, split, FAST, np.random.default_rng(9))
    b = fit_routers(emb, changed, costs, split, FAST, np.random.default_rng(9))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.settings == b.settings
    lams = np.linspace(0, 2, 21)[:, None, None]
    for name in a.gammas:
        np.testing.assert_array_equal(route(a.gammas[name][None], a.route_cost, lams),
                                      route(b.gammas[name][None], b.route_cost, lams))


def test_report_has_every_method_intervals_and_paired_differences():
    emb, scores, costs, _ = centred_data(seed=4)
    report = evaluate(emb, scores, costs, FAST)
    assert set(report.summary) == set(METHODS)
    for s in report.summary.values():
        assert s["area_ci"][0] <= s["area"] <= s["area_ci"][1]
        assert 0.0 <= s["area"] <= 1.0
    routers = set(METHODS) - {"zero_router", "oracle"}
    assert {f"{m} - zero_router" for m in routers} <= set(report.paired)
    assert {f"{m} - knn" for m in routers - {"knn"}} <= set(report.paired)
    assert {f"{m} - uniroute_kmeans" for m in routers - {"uniroute_kmeans", "knn"}} <= set(report.paired)
    assert report.summary["oracle"]["area"] >= max(s["area"] for s in report.summary.values()) - 1e-12


def test_closure_is_the_share_of_the_zero_router_to_oracle_gap():
    emb, scores, costs, _ = centred_data(seed=4)
    s = evaluate(emb, scores, costs, FAST).summary
    assert s["zero_router"]["closure"] == 0.0 and s["oracle"]["closure"] == pytest.approx(1.0)
    gap = s["oracle"]["area"] - s["zero_router"]["area"]
    assert s["knn"]["closure"] == pytest.approx((s["knn"]["area"] - s["zero_router"]["area"]) / gap)
    assert s["zero_router"]["closure_ci"] == [0.0, 0.0]
    assert s["oracle"]["closure_ci"] == pytest.approx([1.0, 1.0])


def test_closure_interval_is_exact_for_a_constant_share_and_narrows_with_more_trials():
    rng = np.random.default_rng(0)
    zero, oracle = rng.uniform(0.5, 0.7, 400), rng.uniform(0.8, 0.9, 400)
    steady = zero + 0.25 * (oracle - zero)  # every trial closes a quarter of its own gap
    assert closure_ci(steady, zero, oracle) == pytest.approx([0.25, 0.25])
    noisy = steady + rng.normal(0.0, 0.03, 400)
    wide, narrow = closure_ci(noisy[:25], zero[:25], oracle[:25]), closure_ci(noisy, zero, oracle)
    point = (noisy.mean() - zero.mean()) / (oracle.mean() - zero.mean())
    assert narrow[0] < point < narrow[1] and wide[0] < 0.25 < wide[1]
    assert narrow[1] - narrow[0] < 0.6 * (wide[1] - wide[0])


def test_closure_interval_is_none_when_a_resample_has_no_gap():
    area = np.array([0.5, 0.6, 0.7])
    assert closure_ci(area, area, area) is None


def test_without_the_learned_map_every_other_router_is_unchanged():
    emb, scores, costs, _ = centred_data(seed=8)
    full = evaluate(emb, scores, costs, FAST)
    lean = evaluate(emb, scores, costs, replace(FAST, learned_map=None))
    assert "uniroute_learned_map" not in lean.summary
    for name, s in lean.summary.items():
        assert s["area"] == full.summary[name]["area"], name


def test_trials_are_reproducible_from_the_seed():
    emb, scores, costs, _ = centred_data(seed=6)
    a, b = evaluate(emb, scores, costs, FAST), evaluate(emb, scores, costs, FAST)
    assert a.summary == b.summary


def test_too_few_models_is_a_clear_error():
    emb, scores, costs, _ = centred_data(n_models=2)
    with pytest.raises(ValueError, match="at least 3 LLMs"):
        evaluate(emb, scores, costs, FAST)


def test_unknown_costs_are_a_clear_error():
    emb, scores, costs, _ = centred_data()
    costs[3, 1] = np.nan
    with pytest.raises(ValueError, match="needs a known, non-negative cost"):
        evaluate(emb, scores, costs, FAST)


def test_combined_routers_reduce_to_kmeans_and_transfer_at_the_ends_of_their_grids():
    emb, scores, costs, _ = centred_data(seed=3)
    split = draw_split(scores, FAST, np.random.default_rng(2))
    # No shrinkage and K-means' own K: the shrunk router is K-means without a prior; blend weight 1 is K-means.
    ends = replace(FAST, clusters=4, prior=0.0, strength_grid=(0.0,), blend_grid=(1.0,))
    r = fit_routers(emb, scores, costs, split, ends, np.random.default_rng(4))
    np.testing.assert_allclose(r.gammas["kmeans_shrunk_transfer"], r.gammas["uniroute_kmeans"], atol=1e-12)
    np.testing.assert_array_equal(r.gammas["kmeans_transfer_blend"], r.gammas["uniroute_kmeans"])
    # An overwhelming prior on the residual, and blend weight 0: the chosen transfer router itself.
    ends = replace(ends, strength_grid=(1e12,), blend_grid=(0.0,))
    r = fit_routers(emb, scores, costs, split, ends, np.random.default_rng(4))
    for method in ("transfer_kmeans_residual", "kmeans_transfer_blend"):
        source = r.gammas[str(r.settings[f"{method}.transfer"])]
        np.testing.assert_allclose(r.gammas[method], source, atol=1e-9)


def test_combined_routers_are_paired_with_both_transfer_routers():
    emb, scores, costs, _ = centred_data(seed=4)
    report = evaluate(emb, scores, costs, replace(FAST, trials=2))
    for method in COMBINED:
        assert {f"{method} - {b}" for b in ("zero_router", "knn", "uniroute_kmeans", *TRANSFER_LINKS)} <= set(report.paired)


def _length_priced_data(seed: int):
    """centred_data where the dear models are right more often and every LLM's answers to two of
    the four centres cost 50 times those to the other two (long answers against short ones)."""
    emb, _, costs, which = centred_data(seed=seed)
    rng = np.random.default_rng(seed)
    skill = np.linspace(0.3, 0.95, costs.shape[1])
    scores = (rng.uniform(size=costs.shape) < skill).astype(float)
    costs = costs * np.where(which >= 2, 5.0, 0.1)[:, None]
    return emb, scores, costs, which


def test_costs_by_cluster_price_a_prompt_by_its_clusters_cost_among_the_training_llms():
    emb, scores, costs, which = _length_priced_data(seed=11)
    cfg = replace(FAST, clusters=4, prior=0.0, knn_k=20, costs_by_cluster=True)
    split = draw_split(scores, cfg, np.random.default_rng(2))
    routers = fit_routers(emb, scores, costs, split, cfg, np.random.default_rng(3))
    assert routers.prompt_cost.shape == (split.test_prompts.size, split.test_models.size)
    centre = which[split.test_prompts]
    for c in range(4):  # one price per cluster (here the centres) and test LLM
        assert np.ptp(routers.prompt_cost[centre == c], axis=0).max() < 1e-12
    ratio = routers.prompt_cost[centre >= 2].mean(axis=0) / routers.prompt_cost[centre < 2].mean(axis=0)
    assert (ratio > 10).all()  # 50 in the data, less after the shrinkage toward the overall mean
    np.testing.assert_allclose(routers.prompt_cost[0] / routers.prompt_cost[0].max(),
                               routers.route_cost / routers.route_cost.max())  # each LLM keeps its mean's share
    assert fit_routers(emb, scores, costs, split, replace(cfg, costs_by_cluster=False),
                       np.random.default_rng(3)).prompt_cost is None


def test_costs_by_cluster_leave_the_zero_router_and_oracle_as_they_were_and_help_kmeans_here():
    emb, scores, costs, _ = _length_priced_data(seed=12)
    cfg = replace(FAST, clusters=4, prior=0.0, knn_k=20, trials=4, learned_map=None)
    mean, priced = evaluate(emb, scores, costs, cfg), evaluate(emb, scores, costs, replace(cfg, costs_by_cluster=True))
    for a, b in zip(mean.trials, priced.trials):
        for name in ("zero_router", "oracle"):
            assert a.metrics[name]["area"] == b.metrics[name]["area"]
    # spending on the cheap centres and saving on the dear ones beats one price for all
    assert priced.summary["uniroute_kmeans"]["area"] > mean.summary["uniroute_kmeans"]["area"] + 0.01


def test_test_llm_costs_outside_validation_never_change_the_prompt_prices():
    emb, scores, costs, _ = _length_priced_data(seed=13)
    cfg = replace(FAST, clusters=4, prior=0.0, knn_k=20, costs_by_cluster=True)
    split = draw_split(scores, cfg, np.random.default_rng(4))
    changed = costs.copy()
    outside = np.setdiff1d(np.arange(len(costs)), split.val_prompts)
    changed[np.ix_(outside, split.test_models)] *= 7.0
    a = fit_routers(emb, scores, costs, split, cfg, np.random.default_rng(5))
    b = fit_routers(emb, scores, changed, split, cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a.prompt_cost, b.prompt_cost)
