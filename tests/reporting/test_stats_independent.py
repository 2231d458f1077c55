"""The intervals that decide verdicts, against references built here: the two-way ANOVA by the sums of
squares identity with scipy.stats.t.interval, and the nominal coverage by simulation (a binomial test).
Then claims and pooled win rates built from per-example scores designed so that the verdict depends on
the interval's level and method: a 99% interval, or one that treats the (seed, input) cells as
independent, would decide otherwise."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from tests.reporting.conftest import SEEDS, make_config, write_results
from xkdbench.reporting.claims import claims_table
from xkdbench.reporting.settings import report_settings
from xkdbench.reporting.stats import crossed_interval
from xkdbench.reporting.tables import compare, win_rates


def anova_interval(x, confidence=0.95):
    """(mean, low, high): variance of the mean (MS_seed + MS_input - MS_res) / (S I), at least MS_res / (S I),
    with MS_res from SS_total - SS_seed - SS_input; Student t with S - 1 degrees of freedom (scipy)."""
    x = np.asarray(x, dtype=float)
    s, i = x.shape
    grand = x.mean()
    ss_total = ((x - grand) ** 2).sum()
    ss_seed = i * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_input = s * ((x.mean(axis=0) - grand) ** 2).sum()
    ms_seed, ms_input = ss_seed / (s - 1), ss_input / (i - 1)
    ms_res = (ss_total - ss_seed - ss_input) / ((s - 1) * (i - 1))
    variance = max(ms_seed + ms_input - ms_res, ms_res) / (s * i)
    low, high = stats.t.interval(confidence, s - 1, loc=grand, scale=math.sqrt(variance))
    return grand, low, high


def crossed(rng, seeds, inputs, effect, seed_sd, input_sd, noise_sd):
    return (effect + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, input_sd, (1, inputs))
            + rng.normal(0, noise_sd, (seeds, inputs)))


@pytest.mark.parametrize("shape,sds,floor", [((4, 25), (0.3, 0.2, 0.1), False), ((3, 12), (0.0, 0.0, 1.0), True),
                                            ((2, 40), (0.05, 0.3, 0.2), False), ((6, 8), (0.1, 0.0, 0.3), None)])
def test_crossed_interval_is_the_anova_t_interval(shape, sds, floor):
    """Random matrices with seed, input and residual effects, with the lower bound MS_res binding (pure
    noise) and not; the interval is scipy's 95% t-interval around the ANOVA variance of the mean."""
    x = crossed(np.random.default_rng(sum(shape)), *shape, 0.1, *sds)
    mean, low, high = anova_interval(x)
    interval = crossed_interval(x)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high), rel=1e-10)
    assert interval.df == shape[0] - 1 and (interval.n_seeds, interval.n_inputs) == shape
    if floor is not None:  # which branch of max(MS_seed + MS_input - MS_res, MS_res) this case takes
        s, i = shape
        residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
        ms_res = (residual ** 2).sum() / ((s - 1) * (i - 1))
        assert (((high - mean) / stats.t.ppf(0.975, s - 1)) ** 2 == pytest.approx(ms_res / (s * i))) == floor


def test_crossed_interval_covers_the_true_mean_at_its_nominal_level():
    """1500 simulated studies (4 seeds x 20 inputs, the seed effect dominating as in training runs):
    the interval covers the true difference in 95% of them (binomial test), which a 90% or 99% interval
    or one over the cells as if independent would not."""
    rng = np.random.default_rng(11)
    studies, covered = 1500, 0
    for _ in range(studies):
        interval = crossed_interval(crossed(rng, 4, 20, 0.3, 1.0, 0.1, 0.1))
        covered += interval.low <= 0.3 <= interval.high
    assert binom_ok(covered, studies, 0.95), covered / studies


def binom_ok(k, n, p):
    return stats.binomtest(k, n, p).pvalue > 1e-3


# -- claims and win rates on designed scores ----------------------------------------------------
DESIGN_SEED, N = 30, 20
# seconds to the common validation level, A - B per seed: faster on average, but with 3 runs the
# t-interval (2 df, half-width 6.25) contains 0; a normal quantile (half-width 2.85) would not
TIME_DIFFERENCES = [-6.0, -4.0, -1.0]


def designed_differences():
    """(score, oracle) differences A - B, each (3 seeds, 20 inputs). The score: mean 0.1 with seed, input
    and residual effects, t = mean / se about 6.6 with 2 df: decided at 95% (t 4.30) but not at 99%
    (t 9.92). The oracle: a small mean under a large seed effect, t about 1.4 (inconclusive), while a
    t-interval over the 60 cells as if independent would call it decided."""
    rng = np.random.default_rng(DESIGN_SEED)
    score = crossed(rng, 3, N, 0.1, 0.03, 0.05, 0.05)
    oracle = crossed(rng, 3, N, 0.02, 0.04, 0.01, 0.01)
    return score, oracle


@pytest.fixture(scope="module")
def designed(tmp_path_factory):
    """The synthetic results tree with the summarization cells of gkd_jsd09 and sft at fraction 1 replaced
    by designed per-example scores (B random, A = B + the designed difference)."""
    results = tmp_path_factory.mktemp("designed") / "results"
    write_results(results)
    score, oracle = designed_differences()
    rng = np.random.default_rng(0)
    for s, seed in enumerate(SEEDS):
        base_score, base_oracle = rng.uniform(0.2, 0.6, N), rng.uniform(0.2, 0.6, N)
        for name, add_score, add_oracle in (("sft", 0.0, 0.0), ("gkd_jsd09", score[s], oracle[s])):
            records = [{"index": i, "reference": "r", "greedy": "g", "greedy_score": float(base_score[i] + add_score[i]
                                                                                       if name != "sft" else base_score[i]),
                        "greedy_oracle": float(base_oracle[i] + add_oracle[i] if name != "sft" else base_oracle[i])}
                       for i in range(N)]
            cell = results / "cells" / "summarization" / name / "f1" / f"seed{seed}"
            (cell / "eval" / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))
            # both runs reach their common lowest validation NLL (1.0) at step 20, after these many seconds
            seconds = 20.0 + (TIME_DIFFERENCES[s] if name != "sft" else 0.0)
            curve = [(10, 12.0, 2.0), (20, seconds, 1.0), (30, seconds + 10, 1.2)]
            (cell / "train_log.jsonl").write_text("".join(json.dumps({"step": k, "loss": 1.0, "seconds": t,
                                                                      "validation_nll": v}) + "\n"
                                                          for k, t, v in curve))
    claims = [{"claim": "gkd beats sft by the score", "a": "gkd_jsd09", "b": "sft", "tasks": ["summarization"],
               "measure": "score"},
              {"claim": "gkd beats sft by the oracle", "a": "gkd_jsd09", "b": "sft", "measure": "oracle",
               "tasks": ["summarization"]},
              {"claim": "sft beats gkd by the score", "a": "sft", "b": "gkd_jsd09", "tasks": ["summarization"],
               "measure": "score"},
              {"claim": "gkd is faster", "a": "gkd_jsd09", "b": "sft", "measure": "time_to_target",
               "tasks": ["summarization"]}]
    config = make_config(claims=claims, win_rate_pairs=[["gkd_jsd09", "sft"]])
    return config, report_settings(config), results


def test_the_design_separates_levels_and_methods():
    score, oracle = designed_differences()
    _, low, _ = anova_interval(score)
    assert low > 0 and anova_interval(score, 0.99)[1] < 0  # the level decides
    _, low, high = anova_interval(oracle)
    naive_low, _ = stats.t.interval(0.95, oracle.size - 1, loc=oracle.mean(), scale=stats.sem(oracle.ravel()))
    assert low < 0 < high and naive_low > 0  # the method decides


def test_claims_take_the_crossed_95_interval_and_its_verdict(designed):
    config, settings, results = designed
    table = claims_table(config, settings, results).set_index("claim")
    score, oracle = designed_differences()
    for claim, x, verdict in [("gkd beats sft by the score", score, "reproduced"),
                              ("gkd beats sft by the oracle", oracle, "inconclusive"),
                              ("sft beats gkd by the score", -score, "not reproduced (B better)")]:
        mean, low, high = anova_interval(x)
        row = table.loc[claim]
        assert (row["n_seeds"], row["n_inputs"]) == (3, N)
        assert (row["mean_difference"], row["ci95_low"], row["ci95_high"]) == pytest.approx((mean, low, high), rel=1e-9)
        assert row["verdict"] == verdict, claim
        assert row["seeds_a_better"] == int((x.mean(axis=1) > 0).sum())


def test_pooled_win_rates_decide_by_the_same_interval(designed):
    config, settings, results = designed
    table = win_rates(config, settings, results)
    here = table[(table["task"] == "summarization") & (table["method_a"] == "gkd_jsd09")]
    score, oracle = designed_differences()
    for measure, x, verdict in (("greedy_score", score, "A better"), ("greedy_oracle", oracle, "inconclusive")):
        pooled = here[(here["measure"] == measure) & (here["seed"] == "pooled")].iloc[0]
        mean, low, high = anova_interval(x)
        assert (pooled["ci95_low"], pooled["ci95_high"]) == pytest.approx((low, high), rel=1e-9)
        assert pooled["verdict"] == verdict
        assert (pooled["win"], pooled["tie"], pooled["lose"]) == (int((x > 1e-9).sum()), int((abs(x) <= 1e-9).sum()),
                                                                  int((x < -1e-9).sum()))
        for s, seed in enumerate(SEEDS):  # one seed: a t-interval over its inputs, no verdict
            row = here[(here["measure"] == measure) & (here["seed"] == seed)].iloc[0]
            low, high = stats.t.interval(0.95, N - 1, loc=x[s].mean(), scale=stats.sem(x[s]))
            assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((low, high), rel=1e-9)
            assert row["verdict"] == ""


def test_compare_on_the_designed_matrix_directly():
    import pandas as pd

    score, _ = designed_differences()
    per_seed = {seed: pd.DataFrame({"a": score[s] + 1.0, "b": np.ones(N)}) for s, seed in enumerate(SEEDS)}
    result = compare(per_seed)
    mean, low, high = anova_interval(score)
    assert (result["ci95_low"], result["ci95_high"]) == pytest.approx((low, high), rel=1e-9)
    assert result["verdict"] == "A better" and result["interval_covers"] == "seeds and inputs"


def test_a_time_claim_is_decided_by_the_t_interval_over_seeds_not_by_its_mean(designed):
    config, settings, results = designed
    row = claims_table(config, settings, results).set_index("claim").loc["gkd is faster"]
    diffs = np.array(TIME_DIFFERENCES)
    low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert (row["mean_difference"], row["ci95_low"], row["ci95_high"]) == pytest.approx((diffs.mean(), low, high))
    assert row["mean_difference"] < 0 and low < 0 < high and row["verdict"] == "inconclusive"
    assert row["seeds_a_better"] == 3 and (row["n_seeds"], row["n_inputs"]) == (3, 0)
    normal_high = diffs.mean() + stats.norm.ppf(0.975) * stats.sem(diffs)
    assert normal_high < 0  # the design: a normal interval would have decided


def test_variance_components_recover_a_simulated_study_and_project_its_interval():
    """Simulated x = a_s + b_i + e_si with known standard deviations: the components come back within
    sampling error, and the projected half-width at the simulated size matches the simulated spread of
    the mean (by the law of the model: sd(mean)^2 = seed/S + input/I + res/(S I))."""
    from xkdbench.reporting.stats import Components

    rng = np.random.default_rng(7)
    sd_seed, sd_input, sd_res, seeds, inputs = 0.05, 0.1, 0.3, 40, 400  # many seeds, so seed's estimate is tight
    x = (rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_input, (1, inputs)) + rng.normal(0, sd_res, (seeds, inputs)))
    c = Components.of(x)
    assert c.residual == pytest.approx(sd_res ** 2, rel=0.05)
    assert c.input == pytest.approx(sd_input ** 2, rel=0.25)
    assert c.seed == pytest.approx(sd_seed ** 2, rel=0.5)
    truth = math.sqrt(sd_seed ** 2 / 3 + sd_input ** 2 / 200 + sd_res ** 2 / 600)
    assert c.standard_error(3, 200) == pytest.approx(truth, rel=0.25)
    assert c.half_width(3, 200) == pytest.approx(4.302652729911275 * c.standard_error(3, 200))  # t(0.975, 2)
    # 80% power: t(0.975, 4) + t(0.8, 4) = 2.7764 + 0.9410 (tables)
    assert c.detectable_effect(5, 1000) == pytest.approx((2.776445105 + 0.940965) * c.standard_error(5, 1000),
                                                         rel=1e-5)


def test_variance_components_of_a_designed_matrix_by_hand():
    """x = seed effect (+1, -1) + input effect (0, 2, 4) exactly, no residual. By hand: seed means 3, 1
    (grand 2), MS_seed = 3 * (1 + 1) / 1 = 6; input means 0, 2, 4, MS_input = 2 * 8 / 2 = 8; residual 0.
    So seed = 6 / 3 = 2, input = 8 / 2 = 4."""
    from xkdbench.reporting.stats import Components

    x = np.array([[1.0, 3.0, 5.0], [-1.0, 1.0, 3.0]])
    assert Components.of(x) == Components(seed=2.0, input=4.0, residual=0.0)
    with pytest.raises(ValueError, match="at least 2 seeds and 2 inputs"):
        Components.of(x[:1])


def test_variance_components_match_the_anova_written_out_with_a_residual():
    """The two-way ANOVA written out with loops, on a matrix with a residual: seed = (MS_seed - MS_res) / I,
    input = (MS_input - MS_res) / S, residual = MS_res (components kept >= 0)."""
    from xkdbench.reporting.stats import Components

    x = np.array([[1.0, 3.5, 5.0, 2.0], [-1.0, 1.0, 4.0, 0.5], [0.5, 2.0, 6.0, 1.5]])
    s, i = x.shape
    grand = sum(sum(row) for row in x) / (s * i)
    rows = [sum(row) / i for row in x]
    cols = [sum(x[r][c] for r in range(s)) / s for c in range(i)]
    ms_seed = i * sum((m - grand) ** 2 for m in rows) / (s - 1)
    ms_input = s * sum((m - grand) ** 2 for m in cols) / (i - 1)
    ms_res = sum((x[r][c] - rows[r] - cols[c] + grand) ** 2 for r in range(s) for c in range(i)) / ((s - 1) * (i - 1))
    assert ms_res > 0.05  # a real residual, so seed and input are each lowered by it
    c = Components.of(x)
    assert (c.seed, c.input, c.residual) == pytest.approx(
        (max(0.0, (ms_seed - ms_res) / i), max(0.0, (ms_input - ms_res) / s), ms_res))
    assert Components.of(x.astype(int)) == Components.of(x.astype(int).astype(float))  # ints are read as floats
