"""Prices: expected cost of a request, validation with a named field, token estimates."""
from __future__ import annotations

import math

import pytest

from router_core.pricing import InvalidField, Price, estimate_tokens


def test_expected_cost_adds_token_prices_per_million_and_the_per_request_price():
    cost = Price(input_per_mtok=2.0, output_per_mtok=6.0, per_request=0.001)
    assert cost.expected(1000, 500) == pytest.approx(0.002 + 0.003 + 0.001)
    assert Price().expected(10**6, 10**6) == 0.0


@pytest.mark.parametrize("field", ["input_per_mtok", "output_per_mtok", "per_request"])
@pytest.mark.parametrize("value", [-0.01, math.inf, math.nan, "1"])
def test_costs_must_be_finite_numbers_not_below_zero(field, value):
    with pytest.raises(InvalidField) as err:
        Price(**{field: value})
    assert err.value.field == f"cost.{field}"


@pytest.mark.parametrize("field", ["input_per_mtok", "output_per_mtok", "per_request"])
@pytest.mark.parametrize("value", [-0.01, math.nan])
def test_a_price_changed_after_it_was_made_is_checked_as_a_new_one_and_kept_when_refused(field, value):
    # A routed model's price changed in place went unchecked into the next model table.
    price = Price(1.0, 2.0, 0.5)
    with pytest.raises(InvalidField) as err:
        setattr(price, field, value)
    assert err.value.field == f"cost.{field}" and price == Price(1.0, 2.0, 0.5)
    setattr(price, field, 3)
    assert getattr(price, field) == 3.0 and isinstance(getattr(price, field), float)


def test_a_price_round_trips_through_its_dict_and_ignores_unknown_keys():
    price = Price(1.5, 2.5, 0.01)
    assert Price.from_dict({**price.to_dict(), "currency": "USD"}) == price


def test_tokens_are_estimated_at_four_characters_each():
    assert estimate_tokens(400) == 100.0
