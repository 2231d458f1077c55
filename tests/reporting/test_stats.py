"""Unit tests of the report's statistics, GKD grid labels and report settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.reporting.conftest import make_config
from xkdbench.config import ConfigError
from xkdbench.reporting.calibration import Scenario, verdict_rates
from xkdbench.reporting.gkd_grid import divergence_label, placement
from xkdbench.reporting.settings import report_settings
from xkdbench.reporting.stats import crossed_interval, paired_matrix, t_interval, win_tie_lose


def test_t_interval_matches_scipy_and_handles_small_n():
    x = [1.0, 2.5, 2.0, 4.0]
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    mean, half, n = t_interval(x)
    assert (mean, n) == (pytest.approx(np.mean(x)), 4)
    assert half == pytest.approx((high - low) / 2)
    assert t_interval([3.0])[2] == 1 and math.isnan(t_interval([3.0])[1])
    assert t_interval([2.0, 2.0, 2.0])[1] == 0.0
    assert t_interval([1.0, float("nan"), 3.0])[2] == 2
    assert t_interval([])[2] == 0


def test_win_tie_lose_counts_ties_within_tolerance():
    a = [1.0, 0.5, 0.2, 0.3, 0.7 + 1e-12]
    b = [0.5, 0.5, 0.4, 0.1, 0.7]
    assert win_tie_lose(a, b) == (2, 2, 1)


def test_crossed_interval_on_a_hand_computed_case():
    """2 seeds x 3 inputs: MS_seed 6, MS_input 1.5, MS_res 0.5 (by hand), so Var(mean) = 7/6 / ... and
    the t quantile has S - 1 = 1 degree of freedom."""
    x = np.array([[1.0, 2.0, 3.0], [3.0, 5.0, 4.0]])
    interval = crossed_interval(x)
    half = 12.706204736174696 * math.sqrt((6 + 1.5 - 0.5) / 6)  # t_{0.975, 1} from tables
    assert interval.mean == pytest.approx(3.0)
    assert (interval.low, interval.high) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert (interval.n_seeds, interval.n_inputs, interval.df) == (2, 3, 1.0)


def test_without_input_variation_it_is_the_t_interval_over_seed_means():
    """Rows constant over inputs: MS_input = MS_res = 0 and the interval is scipy's t over the seeds."""
    seed_means = np.array([0.1, 0.4, 0.25, 0.3])
    x = np.repeat(seed_means[:, None], 7, axis=1)
    low, high = stats.t.interval(0.95, len(seed_means) - 1, loc=seed_means.mean(), scale=stats.sem(seed_means))
    interval = crossed_interval(x)
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


def test_one_seed_covers_the_inputs_only_and_never_decides():
    x = np.array([[0.5, 0.6, 0.7, 0.9, 0.8]])  # clearly above 0, but one training run
    interval = crossed_interval(x)
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x.ravel()))
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    assert interval.low > 0 and interval.verdict == "inconclusive" and interval.covers == "inputs only (1 seed)"


def test_verdicts_follow_the_interval():
    rng = np.random.default_rng(0)
    up = 0.5 + 0.01 * rng.normal(size=(3, 50))
    assert crossed_interval(up).verdict == "A better" and crossed_interval(-up).verdict == "B better"
    assert crossed_interval(np.zeros((3, 5))).verdict == "inconclusive"  # identical models: a point at 0
    assert crossed_interval(up).covers == "seeds and inputs"
    with pytest.raises(ValueError, match="complete"):
        crossed_interval(np.array([[1.0, np.nan], [1.0, 2.0]]))


def test_paired_matrix_keeps_the_inputs_every_seed_has():
    import pandas as pd

    per_seed = {0: pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 0.0, 1.0]}, index=[0, 1, 2]),
                1: pd.DataFrame({"a": [5.0, 6.0], "b": [1.0, 1.0]}, index=[1, 2])}
    np.testing.assert_array_equal(paired_matrix(per_seed), [[2.0, 2.0], [4.0, 5.0]])


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("scenario", [Scenario(0.05, 0.10, 0.20), Scenario(0.20, 0.05, 0.10)],
                         ids=["moderate seed effect", "seed effect dominates"])
def test_false_verdict_rate_holds_the_nominal_level(seeds, scenario):
    """500 simulated null studies (true difference 0) with seed, input and noise effects: at most 7%
    false verdicts, while treating (seed, input) pairs as independent (the old bootstrap) fails."""
    rates = verdict_rates(scenario, seeds, studies=500, seed=seeds)
    assert rates["crossed"] <= 0.07
    assert rates["naive"] > 0.3


def test_power_at_a_stated_effect():
    """5 seeds, a small seed effect and a true difference of 0.05: most studies decide "A better"."""
    rates = verdict_rates(Scenario(0.02, 0.05, 0.20), 5, effect=0.05, studies=300, seed=7)
    assert rates["crossed"] > 0.8


@pytest.mark.parametrize("divergence, beta, label", [
    ("forward_kl", None, "FKL"), ("reverse_kl", None, "RKL"), ("jsd", 0.0, "FKL"), ("jsd", 1.0, "RKL"),
    ("jsd", 0.1, "JSD(0.1)"), ("jsd", None, "JSD(0.5)"), ("jsd", 0.9, "JSD(0.9)")])
def test_divergence_label(divergence, beta, label):
    assert divergence_label(divergence, beta) == label


def test_placement_uses_the_gkd_config_defaults():
    assert placement({}) == (0.5, "JSD(0.5)")
    assert placement({"divergence": "reverse_kl", "student_data_fraction": 0.0}) == (0.0, "RKL")


def test_the_off_policy_row_takes_the_same_objective_under_other_names():
    # GKD with student_data_fraction 0 is the divergence on gold outputs: token_divergence, or supervised_kd
    assert placement({"divergence": "reverse_kl"}, "token_divergence") == (0.0, "RKL")
    assert placement({"divergence": "jsd", "beta": 0.1}, "token_divergence") == (0.0, "JSD(0.1)")
    assert placement({}, "supervised_kd") == (0.0, "FKL")
    assert placement({"hard_label_weight": 0.5}, "supervised_kd") is None  # adds a gold NLL: another objective
    assert placement({}, "seqkd") is None


def test_report_settings_defaults_and_errors():
    settings = report_settings(make_config())
    assert settings.headline_fraction == 1.0 and settings.win_rate_pairs == () and settings.gkd_grid_task == "reasoning"
    config = make_config()
    config.fractions = [0.25, 0.5]
    assert report_settings(config).headline_fraction == 0.5  # 1.0 not run: the largest fraction
    config.methods[1].method = "xkd_test"  # the default pairs: every xkd variant against every other one
    assert report_settings(config).win_rate_pairs == (("gkd_default", "sft"), ("gkd_default", "gkd_jsd09"))
    for bad, field in (({"colour": 1}, "colour"), ({"headline_fraction": 0.3}, "headline_fraction"),
                       ({"win_rate_pairs": [["sft", "nope"]]}, "win_rate_pairs"),
                       ({"bootstrap_resamples": 5}, "bootstrap_resamples")):  # the bootstrap is gone
        with pytest.raises(ConfigError, match=field):
            report_settings(make_config(**bad))


def test_verdict_needs_an_interval_that_excludes_zero():
    from xkdbench.reporting.stats import Interval
    assert Interval(0.1, 0.01, 0.2, 3, 10, 2).verdict == "A better"
    assert Interval(-0.1, -0.2, -0.01, 3, 10, 2).verdict == "B better"
    assert Interval(0.1, -0.01, 0.2, 3, 10, 2).verdict == "inconclusive"
    assert Interval(0.1, 0.0, 0.2, 3, 10, 2).verdict == "inconclusive"  # touching 0 does not exclude it
