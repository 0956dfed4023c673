"""Intervals of predicted error rates: narrow with many prompts behind them, wide with few."""
import numpy as np
import pytest

from router_core.confidence import error_interval
from router_core.profiles import cluster_profiles


def test_interval_holds_the_estimate_and_narrows_as_support_grows():
    lo, hi = error_interval(np.full(3, 0.3), np.array([1.0, 20.0, 500.0]), prior=4.0)
    assert (lo < 0.3).all() and (hi > 0.3).all()
    widths = hi - lo
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.08


def test_interval_matches_the_jeffreys_interval_without_prior():
    # 3 failures in 10 prompts: Jeffreys 90% interval is Beta(3.5, 7.5) quantiles 5% and 95%
    from scipy.stats import beta

    lo, hi = error_interval(0.3, 10.0, prior=0.0, level=0.9)
    assert lo == pytest.approx(beta.ppf(0.05, 3.5, 7.5))
    assert hi == pytest.approx(beta.ppf(0.95, 3.5, 7.5))


def test_a_cluster_with_one_labelled_prompt_is_shrunk_and_its_interval_is_wide():
    # model right on the one prompt of cluster 1 and on 1 of 4 prompts of cluster 0 (mean loss 0.6)
    labels = np.array([0, 0, 0, 0, 1])
    losses = np.array([[1.0], [1.0], [1.0], [0.0], [0.0]])
    errors, counts = cluster_profiles(labels, losses, k=2, prior=4.0)
    assert counts[0, 1] == 1.0
    thin = errors[0, 1]
    assert thin == pytest.approx((0.0 + 4 * 0.6) / (1 + 4))  # 0.48: not the raw 0
    lo, hi = error_interval(thin, counts[0, 1], prior=4.0)
    assert hi - lo > 0.5


def test_estimates_of_exactly_zero_or_one_get_proper_intervals():
    lo, hi = error_interval(np.array([0.0, 1.0]), np.array([5.0, 5.0]), prior=0.0)
    assert 0 < lo[0] < 0.01 and 0.2 < hi[0] < 0.5
    assert lo[1] == pytest.approx(1 - hi[0]) and hi[1] == pytest.approx(1 - lo[0])
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
