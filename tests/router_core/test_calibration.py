"""The λ curve: exact pieces of the routing rule on a prompt set, and targets turned into λ."""
import numpy as np
import pytest

from router_core import policy
from router_core.calibration import Calibration, breakpoints, calibrate

SCALE = 2.0  # the cost scale the curves below are measured with


def brute_force(weights, psi, costs, lam, eligible=None):
    """Expected score and cost of routing every prompt with `policy.route` at one λ."""
    gamma = weights @ psi.T
    choice = policy.route(gamma, costs / SCALE, lam, eligible)
    rows = np.arange(len(gamma))
    return (1 - gamma[rows, choice]).mean(), costs[rows, choice].mean(), choice


@pytest.fixture
def soft_problem():
    rng = np.random.default_rng(3)
    n, k, m = 120, 6, 5
    weights = rng.dirichlet(np.ones(k), size=n)
    psi = rng.uniform(0.05, 0.7, size=(m, k))
    # per-token style costs: each prompt has its own length, each model its own price
    costs = rng.uniform(0.5, 3.0, size=(n, 1)) * np.array([5.0, 1.0, 0.2, 3.0, 0.05]) + 0.01
    return weights, psi, costs, [f"m{j}" for j in range(m)]


def test_every_point_is_what_the_rule_gives_anywhere_in_its_range(soft_problem):
    weights, psi, costs, names = soft_problem
    cal = calibrate(weights, psi, costs, names, cost_scale=SCALE)
    for p in range(len(cal.lambdas)):
        hi = cal.upper[p] if np.isfinite(cal.upper[p]) else cal.lower[p] * 10
        for lam in (cal.lambdas[p], cal.lower[p] + 0.25 * (hi - cal.lower[p]), cal.lower[p] + 0.9 * (hi - cal.lower[p])):
            score, cost, choice = brute_force(weights, psi, costs, lam)
            assert cal.score[p] == pytest.approx(score, abs=1e-12)
            assert cal.cost[p] == pytest.approx(cost, rel=1e-12)
            np.testing.assert_allclose(cal.shares[p], np.bincount(choice, minlength=len(names)) / len(choice))
            assert cal.piece(lam) == p


def test_score_and_cost_only_fall_from_best_per_prompt_to_cheapest_per_prompt(soft_problem):
    weights, psi, costs, names = soft_problem
    cal = calibrate(weights, psi, costs, names, cost_scale=SCALE)
    assert len(cal.lambdas) > 5
    assert (np.diff(cal.score) <= 1e-12).all() and (np.diff(cal.cost) <= 1e-12).all()
    gamma = weights @ psi.T
    assert cal.score[0] == pytest.approx((1 - gamma.min(axis=1)).mean())
    assert cal.cost[-1] == pytest.approx(costs.min(axis=1).mean())
    # the router at λ = 0 is at least as good as any single model, by its own prediction
    assert cal.score[0] >= cal.best_score
    assert cal.best_model == names[int(np.argmin(gamma.mean(axis=0)))]


def test_a_budget_gets_the_best_score_it_can_afford(soft_problem):
    cal = calibrate(*soft_problem, cost_scale=SCALE)
    budget = float(np.median(cal.cost))
    p, met = cal.for_budget(budget)
    assert met and cal.cost[p] <= budget
    assert cal.score[p] == cal.score[cal.cost <= budget].max()
    p, met = cal.for_budget(cal.cost.min() / 2)
    assert not met and p == len(cal.cost) - 1


def test_a_quality_target_gets_the_cheapest_point_reaching_it(soft_problem):
    cal = calibrate(*soft_problem, cost_scale=SCALE)
    for q in (0.8, 0.95, 1.0):
        p, met = cal.for_quality(q)
        assert met and cal.score[p] >= q * cal.best_score
        assert cal.cost[p] == cal.cost[cal.score >= q * cal.best_score].min()


def test_hard_clusters_with_per_request_prices_give_few_exact_pieces():
    labels = np.array([0, 0, 1, 1, 1, 2])
    weights = np.eye(3)[labels]
    psi = np.array([[0.1, 0.2, 0.3], [0.4, 0.25, 0.3]])  # model 0 better, dearer
    costs = np.tile([1.0, 0.1], (6, 1))
    cal = calibrate(weights, psi, costs, ["dear", "cheap"], cost_scale=1.0)
    # cluster 2: equal errors, the cheap model wins at λ = 0; clusters 1 and 0 switch at
    # λ = 0.05 / 0.9 and 0.3 / 0.9
    np.testing.assert_allclose(cal.lower, [0.0, 0.05 / 0.9, 0.3 / 0.9])
    np.testing.assert_allclose(cal.shares[:, 1], [1 / 6, 4 / 6, 1.0])
    np.testing.assert_allclose(cal.cost, [(5 * 1.0 + 0.1) / 6, (2 * 1.0 + 4 * 0.1) / 6, 0.1])


def test_breakpoints_are_the_corners_of_each_prompts_envelope():
    gamma = np.array([[0.1, 0.3, 0.6]])
    cost = np.array([[1.0, 0.5, 0.0]])
    # 0.1 + λ = 0.3 + 0.5λ at λ = 0.4; 0.3 + 0.5λ = 0.6 at λ = 0.6
    np.testing.assert_allclose(breakpoints(gamma, cost), [0.4, 0.6])
    # a middle model that never wins is skipped: 0.1 + λ = 0.6 at λ = 0.5
    np.testing.assert_allclose(breakpoints(np.array([[0.1, 0.5, 0.6]]), cost), [0.5])


def test_thinned_curve_keeps_its_bound_and_stays_exact_at_its_lambdas(soft_problem):
    weights, psi, costs, names = soft_problem
    cal = calibrate(weights, psi, costs, names, cost_scale=SCALE, max_points=8)
    assert len(cal.lambdas) <= 8
    for p, lam in enumerate(cal.lambdas):
        score, cost, _ = brute_force(weights, psi, costs, lam)
        assert cal.score[p] == pytest.approx(score) and cal.cost[p] == pytest.approx(cost)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="need n > 0"):
        calibrate(np.ones((3, 2)), np.ones((2, 2)), np.ones((3, 3)), ["a", "b"], cost_scale=1.0)


def test_the_curve_round_trips_through_plain_data(soft_problem):
    cal = calibrate(*soft_problem, cost_scale=SCALE)
    again = Calibration.from_dict(cal.to_dict())
    for name in ("lambdas", "lower", "upper", "score", "cost", "shares"):
        np.testing.assert_array_equal(getattr(again, name), getattr(cal, name))
    assert (again.models, again.best_model, again.best_score, again.n_prompts) == (
        cal.models, cal.best_model, cal.best_score, cal.n_prompts)


def test_lambda_weighs_costs_divided_by_the_fixed_scale_not_by_the_dearest_model():
    weights = np.eye(1)
    psi = np.array([[0.1], [0.3]])
    costs = np.array([[0.5, 0.1]])
    # 0.1 + λ·0.5/s = 0.3 + λ·0.1/s at λ = 0.2·s/0.4
    for scale in (1.0, 0.01):
        cal = calibrate(weights, psi, costs, ["dear", "cheap"], cost_scale=scale)
        np.testing.assert_allclose(cal.lower, [0.0, 0.5 * scale])


def test_a_model_no_prompt_chooses_leaves_the_curve_as_it_was(soft_problem):
    weights, psi, costs, names = soft_problem
    before = calibrate(weights, psi, costs, names, cost_scale=SCALE)
    # dearer than every model and wrong everywhere: chosen at no λ
    worse = np.vstack([psi, np.ones((1, psi.shape[1]))])
    dearer = np.hstack([costs, costs.max(axis=1, keepdims=True) * 100])
    after = calibrate(weights, worse, dearer, [*names, "useless"], cost_scale=SCALE)
    np.testing.assert_array_equal(after.lower, before.lower)
    np.testing.assert_array_equal(after.score, before.score)
    np.testing.assert_array_equal(after.cost, before.cost)
    assert (after.shares[:, -1] == 0).all()


def test_ineligible_models_are_left_out_of_every_point(soft_problem):
    weights, psi, costs, names = soft_problem
    eligible = np.ones(costs.shape, dtype=bool)
    eligible[::2, 4] = False  # the cheapest model lacks support on half the prompts
    cal = calibrate(weights, psi, costs, names, cost_scale=SCALE, eligible=eligible)
    for p, lam in enumerate(cal.lambdas):
        score, cost, choice = brute_force(weights, psi, costs, lam, eligible)
        assert cal.score[p] == pytest.approx(score, abs=1e-12) and cal.cost[p] == pytest.approx(cost, rel=1e-12)
        assert not (choice[::2] == 4).any()
    assert cal.shares[-1, 4] == pytest.approx(0.5)
