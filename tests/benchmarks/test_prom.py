"""Quantiles of a Prometheus histogram over an interval, as Prometheus interpolates them."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.prom import Histogram

BOUNDS = np.array([0.001, 0.002, 0.005, math.inf])


def test_quantiles_interpolate_inside_the_bucket_holding_the_rank():
    # 10 observations: 4 in (0, 1 ms], 4 in (1, 2 ms], 2 in (2, 5 ms].
    h = Histogram(BOUNDS, np.array([4.0, 8.0, 10.0, 10.0]))
    p50, p90 = h.quantiles((0.5, 0.9))
    assert p50 == pytest.approx(0.00125)  # rank 5: 1/4 of the way through (1, 2 ms]
    assert p90 == pytest.approx(0.0035)  # rank 9: half way through (2, 5 ms]


def test_an_interval_is_the_difference_of_two_scrapes():
    earlier = Histogram(BOUNDS, np.array([100.0, 100.0, 100.0, 100.0]))
    later = Histogram(BOUNDS, np.array([100.0, 100.0, 110.0, 110.0]))
    interval = later - earlier
    assert interval.count == 10
    assert interval.quantiles((0.5,))[0] == pytest.approx(0.0035)


def test_a_quantile_beyond_the_top_bucket_is_infinite_and_an_empty_histogram_has_none():
    h = Histogram(BOUNDS, np.array([1.0, 1.0, 1.0, 10.0]))
    assert h.quantiles((0.99,)) == [math.inf]
    assert math.isnan(Histogram(BOUNDS, np.zeros(4)).quantiles((0.5,))[0])
