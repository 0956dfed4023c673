"""Routing targets turned into λ, and the named policies of the config."""
import numpy as np
import pytest
from pydantic import ValidationError

from app.runtime.config import Settings
from router_core.calibration import calibrate
from router_core.targets import RoutingTarget, resolve


@pytest.fixture
def curve():
    labels = np.array([0, 0, 1, 1, 1, 2])
    psi = np.array([[0.1, 0.2, 0.3], [0.4, 0.25, 0.3]])  # "dear" better, "cheap" ten times cheaper
    return calibrate(np.eye(3)[labels], psi, np.tile([1.0, 0.1], (6, 1)), ["dear", "cheap"], cost_scale=1.0)


def test_a_cost_weight_is_kept_and_reports_its_piece_of_the_curve(curve):
    res = resolve(RoutingTarget("cost_weight", 0.2), curve)
    assert res.cost_weight == 0.2 and res.met
    assert res.expected_cost == pytest.approx(curve.cost[1])  # 0.2 lies in [0.056, 0.333)
    assert resolve(RoutingTarget("cost_weight", 0.2), None).expected_score is None


def test_budget_and_quality_become_a_lambda_inside_the_chosen_piece(curve):
    res = resolve(RoutingTarget("budget", 0.5), curve)
    assert res.met and curve.lower[1] < res.cost_weight < curve.upper[1]
    res = resolve(RoutingTarget("quality", 1.0), curve)
    assert res.met and res.cost_weight == 0.0
    res = resolve(RoutingTarget("budget", 0.01), curve)
    assert not res.met and res.cost_weight == curve.lambdas[-1]


def test_budget_and_quality_need_a_curve():
    with pytest.raises(ValueError, match="calibration curve"):
        resolve(RoutingTarget("quality", 0.9), None)


@pytest.mark.parametrize("policies", [
    {"nan": {"quality": 0.9}}, {"1.5": {"quality": 0.9}}, {"budget": {"quality": 0.9}},
    {"two words": {"quality": 0.9}}, {"both": {"quality": 0.9, "budget": 1.0}}, {"none": {}},
    {"loose": {"quality": 1.2}},
])
def test_policies_must_be_words_holding_exactly_one_valid_target(policies):
    with pytest.raises(ValidationError):
        Settings(policies=policies)


@pytest.mark.parametrize("weight", [float("inf"), float("nan"), -1.0])
def test_the_default_cost_weight_must_be_a_finite_number_at_least_zero(weight):
    # An infinite one passed the config and only failed when the router was made.
    with pytest.raises(ValidationError, match="default_cost_weight"):
        Settings(default_cost_weight=weight)


def test_default_policies_span_cheap_to_best():
    targets = {name: p.target(name) for name, p in Settings().policies.items()}
    assert targets == {"economy": RoutingTarget("quality", 0.9, "economy"),
                       "balanced": RoutingTarget("quality", 0.97, "balanced"),
                       "best": RoutingTarget("cost_weight", 0.0, "best")}
