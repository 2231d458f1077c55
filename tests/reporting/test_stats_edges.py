"""The edges of the report's statistics, by hand: the smallest layouts (one seed, one input, two inputs),
a constant matrix, the validation of the input, and ties at the tolerance. Expected numbers are written
out or come from scipy directly."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.reporting.test_stats_independent import anova_interval
from xkdbench.reporting.stats import Interval, crossed_interval, t_interval, win_tie_lose


def test_a_single_value_has_a_mean_and_no_interval():
    result = crossed_interval([[0.5]])
    assert (result.mean, result.n_seeds, result.n_inputs) == (0.5, 1, 1)
    assert math.isnan(result.low) and math.isnan(result.high) and math.isnan(result.df)
    assert result.verdict == "inconclusive"


def test_one_seed_two_inputs_is_the_t_interval_over_the_two():
    result = crossed_interval([[0.0, 1.0]])
    half = stats.t.ppf(0.975, 1) * 0.5  # sd sqrt(0.5) over sqrt(2) inputs
    assert result == Interval(0.5, pytest.approx(0.5 - half), pytest.approx(0.5 + half), 1, 2, 1.0)
    assert result.covers == "inputs only (1 seed)" and result.verdict == "inconclusive"


def test_two_inputs_and_three_seeds_take_the_crossed_interval():
    """Two inputs are the smallest input sample of the crossed layout, not a one-factor case."""
    x = np.array([[0.30, 0.10], [0.25, 0.20], [0.50, 0.15]])
    mean, low, high = anova_interval(x)
    result = crossed_interval(x)
    assert (result.mean, result.low, result.high) == pytest.approx((mean, low, high), abs=1e-12)
    assert (result.n_seeds, result.n_inputs, result.df) == (3, 2, 2.0)


def test_a_constant_matrix_has_an_exact_mean():
    assert crossed_interval(np.full((3, 4), 0.25)) == Interval(0.25, 0.25, 0.25, 3, 4, 2.0)


@pytest.mark.parametrize("x,message", [
    (np.zeros(4), r"shape \(4,\) with 0 missing values"),
    (np.zeros((0, 3)), r"shape \(0, 3\) with 0 missing values"),
    (np.array([[0.1, np.nan], [0.2, 0.3]]), r"shape \(2, 2\) with 1 missing values"),
])
def test_an_incomplete_matrix_is_refused_naming_its_shape_and_gaps(x, message):
    with pytest.raises(ValueError, match=r"expected a complete \(seeds, inputs\) matrix, got " + message):
        crossed_interval(x)


def test_t_interval_drops_missing_values_and_matches_scipy():
    mean, half, n = t_interval([0.2, None, 0.4, float("nan"), 0.9])
    low, high = stats.t.interval(0.95, 2, loc=0.5, scale=stats.sem([0.2, 0.4, 0.9]))
    assert (mean, n) == (pytest.approx(0.5), 3) and half == pytest.approx(high - 0.5)
    assert t_interval([]) == (pytest.approx(math.nan, nan_ok=True), pytest.approx(math.nan, nan_ok=True), 0)
    single = t_interval([0.7])
    assert single[0] == 0.7 and math.isnan(single[1]) and single[2] == 1


def test_a_difference_at_the_tolerance_is_a_tie():
    # differences 0.5 (at the tolerance: a tie), 0.75 (a win), -0.5 (a tie), -1 (a loss), 0 (a tie)
    assert win_tie_lose([1.5, 1.75, 1.0, 0.0, 2.0], [1.0, 1.0, 1.5, 1.0, 2.0], tolerance=0.5) == (1, 3, 1)
    assert win_tie_lose([1.0, 2.0, 3.0], [1.0, 1.0, 4.0], tolerance=0.0) == (1, 1, 1)
