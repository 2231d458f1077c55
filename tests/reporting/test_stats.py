"""Unit tests of the report's statistics, GKD grid labels and report settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.reporting.conftest import make_config
from xkdbench.config import ConfigError
from xkdbench.reporting.gkd_grid import divergence_label, placement
from xkdbench.reporting.settings import report_settings
from xkdbench.reporting.stats import paired_bootstrap, t_interval, win_tie_lose


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


def test_paired_bootstrap_contains_true_mean_difference():
    rng = np.random.default_rng(1)
    b = rng.normal(0.0, 1.0, 400)
    a = b + 0.3 + rng.normal(0.0, 0.5, 400)  # true mean difference 0.3; b's spread cancels by pairing
    mean, low, high = paired_bootstrap(a, b, n_resamples=2000, seed=0)
    assert mean == pytest.approx(np.mean(a - b))
    assert low < 0.3 < high and low < mean < high
    assert high - low < 0.2  # paired: far narrower than an unpaired interval (b's sd is 1)
    assert paired_bootstrap(a, b, n_resamples=2000, seed=0) == (mean, low, high)  # seeded
    assert paired_bootstrap([1.0, 2.0], [0.5, 1.5]) == (0.5, 0.5, 0.5)  # constant difference


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
                       ({"bootstrap_resamples": 5}, "bootstrap_resamples")):
        with pytest.raises(ConfigError, match=field):
            report_settings(make_config(**bad))


def test_verdict_needs_a_ci_that_excludes_zero():
    from xkdbench.reporting.tables import verdict
    assert verdict(0.01, 0.2) == "A better"
    assert verdict(-0.2, -0.01) == "B better"
    assert verdict(-0.01, 0.2) == "inconclusive"
    assert verdict(0.0, 0.2) == "inconclusive"  # a CI touching 0 does not exclude it
