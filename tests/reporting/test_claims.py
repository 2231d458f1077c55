"""Claims: configured in `report.claims`, decided by the interval over seeds and inputs; the A/A control."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tests.reporting.conftest import MISSING, N_INPUTS, SEEDS, example_scores, make_config, write_results
from xkdbench.config import ConfigError
from xkdbench.reporting import build_report
from xkdbench.reporting.collect import time_to_target
from xkdbench.reporting.settings import report_settings

CLAIMS = [
    {"claim": "gkd beats sft by the oracle", "a": "gkd_jsd09", "b": "sft", "measure": "oracle"},
    {"claim": "sft beats gkd by the oracle", "a": "sft", "b": "gkd_jsd09", "measure": "oracle", "tasks": ["reasoning"]},
    {"claim": "gkd beats sft by the score at half the data", "a": "gkd_jsd09", "b": "sft", "fraction": 0.5,
     "tasks": ["summarization"], "measure": "score"},
    {"claim": "sft gets to its best faster", "a": "sft", "b": "gkd_jsd09", "measure": "time_to_target",
     "tasks": ["summarization"]},
    {"claim": "gkd gets to its best faster", "a": "gkd_jsd09", "b": "sft", "measure": "time_to_target",
     "tasks": ["summarization"], "fraction": 0.5},
]


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    write_results(root / "results")
    config = make_config(claims=CLAIMS)
    build_report(config, root / "results", root / "out")
    return pd.read_csv(root / "out" / "claims.csv"), (root / "out" / "claims.md").read_text()


def test_a_claim_row_per_task_with_the_pooled_effect(claims):
    table, _ = claims
    assert list(table["claim"]) == [CLAIMS[0]["claim"]] * 2 + [c["claim"] for c in CLAIMS[1:]]
    first = table.iloc[0]  # summarization, every seed present: the oracle is 0.05 higher on every input
    assert (first["task"], first["n_seeds"], first["n_inputs"]) == ("summarization", 3, N_INPUTS)
    assert first["mean_difference"] == pytest.approx(0.05)
    assert first["verdict"] == "reproduced" and first["seeds_a_better"] == 3
    reasoning = table.iloc[1]  # one reasoning cell of gkd_jsd09 is missing: its seed drops out of the pairs
    assert reasoning["task"] == MISSING[0] and reasoning["n_seeds"] == len(SEEDS) - 1
    assert table.iloc[2]["verdict"] == "not reproduced (B better)"


def test_the_verdict_follows_the_interval(claims):
    table, md = claims
    row = table.iloc[3]  # by score: +0.1 on 5 inputs, -0.2 on 3, tie on 12, in every seed
    diffs = np.concatenate([example_scores("summarization", "gkd_jsd09", s)[0] - example_scores("summarization", "sft", s)[0]
                            for s in SEEDS])
    assert row["mean_difference"] == pytest.approx(diffs.mean())
    expected = ("reproduced" if row["ci95_low"] > 0 else "not reproduced (B better)" if row["ci95_high"] < 0
                else "inconclusive")
    assert row["verdict"] == expected and row["ci95_low"] <= row["mean_difference"] <= row["ci95_high"]
    assert "**reproduced**" in md and "training runs (seeds) and test inputs" in md


def test_time_to_target_is_paired_by_seed_with_a_t_interval_over_seeds(claims):
    """Both reach their lowest validation NLL (the common target) at step 20: sft at 10 + seed seconds,
    gkd_jsd09 (three times slower) at 3 (10 + seed). A - B = -20, -22, -24 over seeds 0-2, a t-interval
    with 2 degrees of freedom."""
    table, md = claims
    faster, slower = table.iloc[4], table.iloc[5]
    diffs = np.array([-20.0, -22.0, -24.0])
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)  # t(0.975, df=2), from tables
    assert (faster["n_seeds"], faster["n_inputs"], faster["seeds_a_better"]) == (3, 0, 3)
    assert faster["mean_difference"] == pytest.approx(-22.0)
    assert (faster["ci95_low"], faster["ci95_high"]) == pytest.approx((-22.0 - half, -22.0 + half))
    assert faster["verdict"] == "reproduced" and faster["interval_covers"] == "seeds only (one value per run)"
    assert slower["verdict"] == "not reproduced (B better)" and slower["mean_difference"] > 0
    assert "time to target (s)" in md and "3 runs" in md


def test_time_to_target_is_the_level_both_runs_reach():
    falls = [(10.0, 2.0), (20.0, 1.2), (30.0, 1.0)]
    rises = [(3.0, 1.5), (6.0, 1.8), (9.0, 2.0)]  # lowest at its first point: not "fast" to a good level
    assert time_to_target(rises, falls) == (3.0, 20.0)  # target 1.5: the rising run's best, reached at 20 s
    assert time_to_target(falls, [(5.0, 0.9)]) == (30.0, 5.0)  # target 1.0
    assert all(math.isnan(t) for t in time_to_target(falls, []))


@pytest.mark.parametrize("claim,message", [
    ({"claim": "x", "a": "gkd_jsd09"}, "config.report.claims[0].b: required"),
    ({"claim": "x", "a": "gkd", "b": "sft"}, "config.report.claims[0].a: 'gkd' is not a method variant"),
    ({"claim": "x", "a": "sft", "b": "sft"}, "config.report.claims[0]: a and b must differ"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "fraction": 0.3}, "config.report.claims[0].fraction: 0.3 is not"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "measure": "bleu"}, "config.report.claims[0].measure: 'bleu'"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "measure": ["score", "bleu"]}, "config.report.claims[0].measure: 'bleu'"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "measure": []}, "config.report.claims[0].measure: expected one of"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "measure": ["oracle", "oracle"]}, "lists a measure twice"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "tasks": ["translation"]}, "config.report.claims[0].tasks: 'translation'"),
    ({"claim": "x", "a": "gkd_jsd09", "b": "sft", "seeds": [0]}, "config.report.claims[0]: unknown key(s) 'seeds'"),
])
def test_bad_claims_are_named(claim, message):
    with pytest.raises(ConfigError) as error:
        report_settings(make_config(claims=[claim]))
    assert message in str(error.value)


def test_a_claim_is_decided_by_score_and_by_oracle_unless_it_names_its_measures():
    def measures(**claim):
        settings = report_settings(make_config(claims=[{"claim": "x", "a": "gkd_jsd09", "b": "sft", **claim}]))
        return [c.measure for c in settings.claims]

    assert measures() == ["greedy_score", "greedy_oracle"]
    assert measures(measure="oracle") == ["greedy_oracle"]
    assert measures(measure=["time_to_target", "score"]) == ["time_to_target", "greedy_score"]


def test_a_claim_without_a_measure_gets_a_row_by_score_and_one_by_oracle(tmp_path):
    write_results(tmp_path / "results")
    claim = {"claim": "gkd beats sft", "a": "gkd_jsd09", "b": "sft", "tasks": ["summarization"]}
    build_report(make_config(claims=[claim]), tmp_path / "results", tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert list(zip(table["task"], table["measure"], strict=True)) == [
        ("summarization", "greedy_score"), ("summarization", "greedy_oracle")]
    oracle = table.iloc[1]  # the synthetic oracle is 0.05 higher on every input (as in the first test)
    assert oracle["mean_difference"] == pytest.approx(0.05) and oracle["verdict"] == "reproduced"


def control_config(claim, stream=1, **entry):
    from tests.reporting.conftest import make_config
    from xkdbench.config import ExperimentConfig, from_dict

    config = make_config()
    data = {"name": "synthetic", "tasks": {t: {} for t in config.tasks}, "fractions": config.fractions,
            "seeds": config.seeds, "methods": [{"name": "sft", "method": "sft"},
                                               {"name": "sft_again", "method": "sft", "stream": stream, **entry}],
            "report": {"claims": [claim]}}
    return from_dict(ExperimentConfig, data)


GOOD_CONTROL = {"claim": "A/A control: sft vs itself", "a": "sft_again", "b": "sft", "control": True}


def test_an_aa_control_is_checked_to_be_one_method_twice():
    assert report_settings(control_config(GOOD_CONTROL)).claims[0].control
    for claim, entry, stream, message in [
        ({**GOOD_CONTROL, "claim": "sft vs sft"}, {}, 1, "must say 'A/A control'"),
        (GOOD_CONTROL, {}, 0, "have the same stream"),
        (GOOD_CONTROL, {"method": "gkd"}, 1, "same method and settings"),
        ({**GOOD_CONTROL, "control": "yes"}, {}, 1, "control: expected true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            control_config(claim, stream, **entry)
