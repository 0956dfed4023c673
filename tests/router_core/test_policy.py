"""The routing rule: argmin gamma + lam * cost, ties to the cheaper model, vectorised."""
import numpy as np
import pytest

from router_core.policy import normalise_costs, rank, route, supported


def test_lambda_zero_picks_the_model_with_least_expected_loss():
    gamma = np.array([[0.3, 0.1, 0.5], [0.2, 0.4, 0.05]])
    assert route(gamma, np.array([0.1, 1.0, 0.5]), 0.0).tolist() == [1, 2]


def test_large_lambda_always_picks_the_cheapest_model():
    rng = np.random.default_rng(0)
    gamma = rng.uniform(size=(50, 6))
    cost = np.array([0.4, 0.9, 0.05, 1.0, 0.3, 0.6])
    assert (route(gamma, cost, 100.0) == 2).all()


def test_ties_in_the_objective_go_to_the_cheaper_model():
    gamma = np.array([[0.2, 0.2, 0.2]])
    cost = np.array([0.5, 0.1, 0.9])
    assert route(gamma, cost, 0.0).tolist() == [1]
    assert rank(gamma, cost, 0.0).tolist() == [[1, 0, 2]]


def test_rank_orders_all_models_by_objective_and_starts_with_route():
    rng = np.random.default_rng(1)
    gamma, cost = rng.uniform(size=(40, 5)), rng.uniform(size=5)
    order = rank(gamma, cost, 0.3)
    obj = gamma + 0.3 * cost
    assert (np.diff(np.take_along_axis(obj, order, axis=1), axis=1) >= 0).all()
    assert (order[:, 0] == route(gamma, cost, 0.3)).all()


def test_per_prompt_costs_and_a_lambda_stack_broadcast():
    gamma = np.array([[0.1, 0.3], [0.1, 0.3]])
    cost = np.array([[1.0, 0.0], [0.1, 0.0]])  # model 0 is dear on prompt 0 only
    choices = route(gamma[None], cost, np.array([0.0, 0.5])[:, None, None])
    assert choices.tolist() == [[0, 0], [1, 0]]


def test_normalise_costs_divides_by_the_dearest_models_mean_cost():
    assert normalise_costs(np.array([1.0, 4.0, 2.0])).tolist() == [0.25, 1.0, 0.5]
    per_prompt = normalise_costs(np.array([[1.0, 2.0], [3.0, 6.0]]))
    assert per_prompt.tolist() == [[0.25, 0.5], [0.75, 1.5]]
    assert normalise_costs(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_negative_costs_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        normalise_costs(np.array([1.0, -1.0]))


def test_the_support_guard_keeps_models_with_support_and_everyone_when_nobody_has_it():
    support = np.array([[0.0, 5.0, 4.0], [0.0, 0.0, 0.0]])
    assert supported(support, 4.0).tolist() == [[False, True, True], [True, True, True]]


def test_below_the_floor_everywhere_the_support_guard_keeps_the_best_informed_models():
    # No model reaches 4 answers: the ones with the most go first, not one with none at all.
    support = np.array([[3.0, 0.0, 3.0], [1.0, 0.0, 2.5]])
    assert supported(support, 4.0).tolist() == [[True, False, True], [False, False, True]]
    assert supported(np.zeros((2, 0)), 4.0).shape == (2, 0)


def test_ineligible_models_are_never_chosen_and_ranked_after_the_eligible_ones():
    gamma = np.array([[0.1, 0.3, 0.2]])
    cost = np.array([0.0, 1.0, 2.0])
    eligible = np.array([[False, True, True]])
    assert route(gamma, cost, 10.0, eligible).tolist() == [1]
    assert rank(gamma, cost, 0.0, eligible).tolist() == [[2, 1, 0]]


def test_a_model_without_support_goes_before_eligible_ones_that_surely_fail():
    # Two prompts; model 0 has support 20, model 1 none (its error is its overall mean, 0.1).
    support = np.array([[20.0, 0.0], [20.0, 0.0]])
    error = np.array([[1.0, 0.1], [0.5, 0.1]])  # model 0 fails every prompt like the first one
    overall = np.array([1.0, 0.1])
    assert supported(support, 4.0, error, overall, prior=4.0).tolist() == [[True, True], [True, False]]
    # Its own evidence counts: 3 failures in 3 answers keep it out beside a model failing 20 of 20
    # there (shrunk toward its 0.8 overall), where no evidence would not have got in either.
    fails_there = (20 + 4 * 0.8) / 24
    thin = np.array([[20.0, 3.0], [20.0, 0.0]])
    errors = np.array([[fails_there, (3 + 4 * 0.1) / 7], [fails_there, 0.1]])
    assert supported(thin, 4.0, errors, np.array([0.8, 0.1]), prior=4.0).tolist() == [[True, False], [True, False]]
    assert supported(thin, 4.0).tolist() == [[True, False], [True, False]]  # without errors: the floor alone
