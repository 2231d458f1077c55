"""The claims table as a reader sees it: claims.md written out in full for a hand-made table, and the
rows claims_table builds from designed per-seed scores (a seed whose means tie, a task with a model
missing)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.reporting.conftest import make_config, write_results
from xkdbench.reporting import claims as claims_module
from xkdbench.reporting.claims import COLUMNS, claims_table, write_claims
from xkdbench.reporting.settings import report_settings

ROWS = [
    dict(claim="X-KD beats SFT", task="reasoning", method_a="xkd", method_b="sft", fraction=1.0,
         measure="greedy_oracle", control=False, n_seeds=3, n_inputs=40, seeds_a_better=2, mean_difference=0.0125,
         ci95_low=-0.01, ci95_high=0.035, interval_covers="seeds and inputs", verdict="inconclusive"),
    dict(claim="same twice", task="summarization", method_a="sft", method_b="sft_aa", fraction=0.5,
         measure="greedy_score", control=True, n_seeds=3, n_inputs=20, seeds_a_better=1, mean_difference=-0.5,
         ci95_low=-0.75, ci95_high=-0.25, interval_covers="seeds and inputs", verdict="CONTROL FAILED (decided)"),
    dict(claim="DistiLLM is faster", task="reasoning", method_a="distillm", method_b="gkd", fraction=1.0,
         measure="time_to_target", control=False, n_seeds=3, n_inputs=0, seeds_a_better=3, mean_difference=-2.5,
         ci95_low=-4.0, ci95_high=-1.0, interval_covers="seeds only (one value per training run)",
         verdict="reproduced"),
]
CAPTION = (
    "95% interval of the mean difference over the (seed, input) matrix, covering both sources of randomness: "
    "training runs (seeds) and test inputs (crossed random effects, variance (MS_seed + MS_input - MS_res)/(S I), "
    "Student t with S - 1 degrees of freedom; xkdbench.reporting.stats). A verdict picks a side only when that "
    "interval excludes 0 and at least 2 seeds stand behind it; with one seed the interval covers the inputs only "
    "and decides nothing. Verdict: reproduced when the interval lies above 0, not reproduced when it lies below 0, "
    "inconclusive otherwise. Seeds A > B: seeds whose mean A exceeds mean B. By score: summarization: sentence "
    "ROUGE-2 F; translation: sentence chrF; reasoning: answer correct (0/1); by oracle: the oracle score (0-1); by "
    "time to target: training seconds until the validation NLL first reaches the level both runs of a seed reach "
    "(the higher of their two lowest values), where A is better when it takes less (A - B below 0), with a "
    "t-interval over the seeds' paired differences (seeds only: one value per training run); seconds are "
    "wall-clock seconds of cells that may have shared the machine with another job.\n")
TABLE = """\
| claim | task | A vs B | fraction | by | seeds A > B | seeds x inputs | mean A - B [95% CI] | verdict |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| X-KD beats SFT | reasoning | xkd vs sft | 1 | oracle | 2 of 3 | 3 x 40 | +0.0125 [-0.0100, +0.0350] | **inconclusive** |
| same twice (control: must be inconclusive) | summarization | sft vs sft_aa | 0.5 | score | 1 of 3 | 3 x 20 | -0.5000 [-0.7500, -0.2500] | **CONTROL FAILED (decided)** |
| DistiLLM is faster | reasoning | distillm vs gkd | 1 | time to target (s) | 3 of 3 | 3 runs | -2.5000 [-4.0000, -1.0000] | **reproduced** |
"""


def test_claims_md_in_full(tmp_path):
    paths = write_claims(pd.DataFrame(ROWS, columns=COLUMNS), None, tmp_path)
    assert paths == [tmp_path / "claims.csv", tmp_path / "claims.md"]
    # the counts in the caption are those of the per-example claims only (the time claim has 0 inputs)
    assert (tmp_path / "claims.md").read_text() == (
        "# Claims of the source papers, checked\n\n" + TABLE + "\n"
        "Greedy decoding. A claim reads \"A scores higher than B\"; its effect is the mean A - B over 3 seeds x "
        "20-40 test inputs. " + CAPTION)
    written = pd.read_csv(tmp_path / "claims.csv")
    assert list(written.columns) == COLUMNS and written[list(ROWS[0])].to_dict("records") == ROWS
    assert written[["sd_seed", "sd_input", "sd_residual", "detectable_effect"]].isna().all().all()  # not given


def test_claims_md_without_rows(tmp_path):
    write_claims(pd.DataFrame([], columns=COLUMNS), None, tmp_path)
    assert (tmp_path / "claims.md").read_text() == (
        "# Claims of the source papers, checked\n\nNo configured claim had both models evaluated.\n\n"
        "Greedy decoding. A claim reads \"A scores higher than B\"; its effect is the mean A - B over 0 seeds x "
        "0 test inputs. " + CAPTION)


def test_a_seed_whose_means_tie_is_not_counted_as_a_better(tmp_path, monkeypatch):
    pair = lambda a, b: pd.DataFrame({"a": a, "b": b})  # noqa: E731
    designed = {0: pair([0.5, 0.25], [0.25, 0.5]),  # equal means: not "A better" for this seed
                1: pair([1.0, 0.5], [0.5, 0.5]), 2: pair([0.0, 0.5], [0.5, 0.5])}
    monkeypatch.setattr(claims_module.PairedScores, "per_seed", lambda self, *args: designed)
    config = make_config(claims=[{"claim": "gkd beats sft", "a": "gkd_jsd09", "b": "sft", "tasks": ["reasoning"]}])
    row = claims_table(config, report_settings(config), tmp_path).iloc[0]
    # differences per seed: [0.25, -0.25], [0.5, 0], [-0.5, 0]: mean 0
    assert (row["seeds_a_better"], row["n_seeds"], row["n_inputs"]) == (1, 3, 2)
    assert row["mean_difference"] == pytest.approx(0.0)


def test_a_task_without_both_models_has_no_row(tmp_path):
    write_results(tmp_path / "results")
    shutil.rmtree(tmp_path / "results" / "cells" / "reasoning" / "gkd_jsd09")
    config = make_config(claims=[{"claim": "gkd beats sft", "a": "gkd_jsd09", "b": "sft"}])
    table = claims_table(config, report_settings(config), tmp_path / "results")
    assert list(table["task"]) == ["summarization"] * 2  # by score and by oracle


def _designed_claims(monkeypatch, tmp_path, claim, per_seed=None, times=None):
    """claims_table on designed inputs: per-seed score pairs, or per-seed (time A, time B) to target."""
    if per_seed is not None:
        monkeypatch.setattr(claims_module.PairedScores, "per_seed", lambda self, *args: per_seed)
    if times is not None:
        paths = iter(range(1000))
        monkeypatch.setattr(claims_module, "validation_curve", lambda path: next(paths))
        by_call = iter(times)
        monkeypatch.setattr(claims_module, "time_to_target", lambda a, b: next(by_call))
    if claim.get("control"):
        from tests.reporting.test_claims import control_config
        config = control_config({"tasks": ["reasoning"], **claim})
    else:
        config = make_config(claims=[{"a": "gkd_jsd09", "b": "sft", "tasks": ["reasoning"], **claim}])
    return claims_table(config, report_settings(config), tmp_path)


def test_a_row_names_its_claim_and_models(tmp_path, monkeypatch):
    per_seed = {s: pd.DataFrame({"a": [0.5, 0.75], "b": [0.25, 0.5]}) for s in (0, 1, 2)}
    table = _designed_claims(monkeypatch, tmp_path, {"claim": "c", "fraction": 0.5, "measure": "oracle"}, per_seed)
    assert list(table.columns) == COLUMNS
    row = table.iloc[0].to_dict()
    assert {k: row[k] for k in ("claim", "task", "method_a", "method_b", "fraction", "measure", "control")} == {
        "claim": "c", "task": "reasoning", "method_a": "gkd_jsd09", "method_b": "sft", "fraction": 0.5,
        "measure": "greedy_oracle", "control": False}
    assert (row["mean_difference"], row["verdict"]) == (pytest.approx(0.25), "reproduced")  # a constant +0.25


def test_no_evaluable_claim_gives_an_empty_table_with_the_columns(tmp_path, monkeypatch):
    table = _designed_claims(monkeypatch, tmp_path, {"claim": "c"}, per_seed={})
    assert table.empty and list(table.columns) == COLUMNS


@pytest.mark.parametrize("shift,verdict", [(0.25, "CONTROL FAILED (decided)"), (0.0, "inconclusive")])
def test_an_aa_control_that_decides_is_marked_failed_and_logged(tmp_path, monkeypatch, caplog, shift, verdict):
    per_seed = {s: pd.DataFrame({"a": [0.5 + shift + d, 0.25 + shift - d], "b": [0.5, 0.25]})
                for s, d in ((0, 0.01), (1, -0.02), (2, 0.03))}
    with caplog.at_level("WARNING", logger="xkdbench.reporting.claims"):
        row = _designed_claims(monkeypatch, tmp_path, {"claim": "A/A control: sft", "a": "sft_again", "b": "sft",
                                                       "control": True, "measure": "score"}, per_seed).iloc[0]
    assert row["verdict"] == verdict and row["control"]
    expected = ["A/A control sft_again vs sft on reasoning came out reproduced: the intervals are too narrow"]
    assert [r.getMessage() for r in caplog.records] == (expected if shift else [])


@pytest.mark.parametrize("diffs,verdict", [
    ([-3.0, -2.0, -4.0], "reproduced"),                   # A faster on every seed: the interval lies below 0
    ([3.0, 2.0, 4.0], "not reproduced (B better)"),
    ([-3.0, 2.0, -1.0], "inconclusive"),
    ([0.1, 0.12, 0.11], "not reproduced (B better)"),     # low in (0, 1): B better, however small
    ([-0.1, -0.12, -0.11], "reproduced"),
    ([-0.1, 0.1, 0.2], "inconclusive"),                   # high in (0, 1), low below 0
])
def test_a_time_claim_is_decided_by_the_t_interval_of_the_seeds_differences(tmp_path, monkeypatch, diffs, verdict):
    from scipy import stats

    times = [(10.0 + d, 10.0) for d in diffs]
    row = _designed_claims(monkeypatch, tmp_path, {"claim": "c", "measure": "time_to_target"}, times=times).iloc[0]
    low, high = stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=stats.sem(diffs))
    assert (row["ci95_low"], row["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    assert row["verdict"] == verdict and (row["n_seeds"], row["n_inputs"]) == (3, 0)
    assert row["seeds_a_better"] == sum(d < 0 for d in diffs)
    assert row["interval_covers"] == "seeds only (one value per run)"


def test_a_time_claim_counts_ties_as_not_faster_and_drops_seeds_without_a_time(tmp_path, monkeypatch):
    nan = float("nan")
    times = [(10.0, 10.0), (8.0, 10.0), (nan, 9.0)]
    row = _designed_claims(monkeypatch, tmp_path, {"claim": "c", "measure": "time_to_target"}, times=times).iloc[0]
    assert (row["n_seeds"], row["seeds_a_better"], row["mean_difference"]) == (2, 1, -1.0)
    none = _designed_claims(monkeypatch, tmp_path, {"claim": "c", "measure": "time_to_target"},
                            times=[(nan, 1.0), (2.0, nan), (nan, nan)])
    assert none.empty


def test_reconstructed_methods_are_marked_in_the_claims(tmp_path):
    write_claims(pd.DataFrame(ROWS, columns=COLUMNS), None, tmp_path,
                 {"xkd": "xkd_seq", "sft": "sft", "sft_aa": "sft", "distillm": "distillm", "gkd": "gkd"})
    text = (tmp_path / "claims.md").read_text()
    assert "| xkd † vs sft |" in text and "| distillm vs gkd |" in text and "| sft vs sft_aa |" in text
    assert text.endswith("may have shared the machine with another job. †: reconstructed (the paper's full text or "
                         "code was not available; the method's docstring and README list what was filled in).\n")
    write_claims(pd.DataFrame(ROWS, columns=COLUMNS), None, tmp_path, {"xkd": "xkd_seq"})  # the others unknown
    assert "| xkd † vs sft |" in (tmp_path / "claims.md").read_text()


def test_the_power_table_summarises_the_claims_per_task_and_pools_the_oracle(tmp_path):
    from xkdbench.reporting.claims import power_table, write_power

    def row(task, measure, half, effect, sd):
        return {**dict.fromkeys(COLUMNS), "claim": "c", "task": task, "measure": measure, "n_seeds": 3,
                "n_inputs": 200, "ci95_low": -half, "ci95_high": half, "detectable_effect": effect,
                "sd_seed": sd, "sd_input": sd, "sd_residual": sd}

    table = pd.DataFrame([row("summarization", "greedy_oracle", 0.01, 0.02, 0.1),
                          row("summarization", "greedy_oracle", 0.03, 0.05, 0.3),
                          row("reasoning", "greedy_oracle", 0.05, 0.07, 0.5),
                          row("reasoning", "greedy_score", 0.04, 0.06, 0.4),
                          {**row("reasoning", "time_to_target", 9.0, 9.0, 9.0)}], columns=COLUMNS)
    power = power_table(table).set_index(["measure", "task"])
    assert list(power.index) == [("greedy_score", "reasoning"), ("greedy_oracle", "summarization"),
                                 ("greedy_oracle", "reasoning"), ("greedy_oracle", "all tasks")]
    assert power.loc[("greedy_oracle", "summarization"), "median_half_width"] == pytest.approx(0.02)
    assert power.loc[("greedy_oracle", "all tasks"), "median_half_width"] == pytest.approx(0.03)  # of 0.01, 0.03, 0.05
    assert power.loc[("greedy_oracle", "all tasks"), "claims"] == 3
    assert power.loc[("greedy_oracle", "reasoning"), "median_detectable_effect"] == pytest.approx(0.07)
    assert list(power_table(table).columns) == [
        "measure", "task", "claims", "n_seeds", "n_inputs", "median_half_width", "median_detectable_effect",
        "median_sd_seed", "median_sd_input", "median_sd_residual"]
    paths = write_power(power_table(table), tmp_path)
    assert paths == [tmp_path / "power.csv", tmp_path / "power.md"]
    assert (tmp_path / "power.md").read_text() == POWER_MD
    assert pd.read_csv(tmp_path / "power.csv")["claims"].tolist() == [1, 2, 1, 3]


def test_power_md_without_rows(tmp_path):
    from xkdbench.reporting.claims import power_table, write_power

    write_power(power_table(pd.DataFrame([], columns=COLUMNS)), tmp_path)
    assert (tmp_path / "power.csv").read_text().splitlines() == [  # the header, even with no rows
        "measure,task,claims,n_seeds,n_inputs,median_half_width,median_detectable_effect,median_sd_seed,"
        "median_sd_input,median_sd_residual"]
    assert (tmp_path / "power.md").read_text().startswith(
        "# Power: what the study can detect\n\nNo claim had both models evaluated on two or more seeds.\n\n")


POWER_MD = """\
# Power: what the study can detect

| by | task | claims | seeds x inputs | median 95% half-width | detectable with 80% power | sd seed / input / residual |
|---|---:|---:|---:|---:|---:|---:|
| score | reasoning | 1 | 3 x 200 | 0.0400 | 0.0600 | 0.400 / 0.400 / 0.400 |
| oracle | summarization | 2 | 3 x 200 | 0.0200 | 0.0350 | 0.200 / 0.200 / 0.200 |
| oracle | reasoning | 1 | 3 x 200 | 0.0500 | 0.0700 | 0.500 / 0.500 / 0.500 |
| oracle | all tasks | 3 | 3 x 200 | 0.0300 | 0.0500 | 0.300 / 0.300 / 0.300 |

Per task and measure, over the claims of claims.md: the median half-width of their 95% intervals, and the \
median true difference A - B the study decides with 80% power (a two-sided 5% test with the t quantiles of \
seeds - 1 degrees of freedom) given each claim's own variance components, estimated from its (seed, input) \
matrix: sd seed (training runs), sd input (the methods' per-input difference) and sd residual. Smaller \
effects than the detectable one are often missed: an inconclusive verdict is no evidence of no difference. \
By score: summarization: sentence ROUGE-2 F; translation: sentence chrF; reasoning: answer correct (0/1); \
by oracle: 0-1.
"""


def test_a_claim_row_carries_its_variance_components_and_detectable_effect(tmp_path, monkeypatch):
    """x = seed effect (+1, -1) + input effect (0, 2, 4) (the hand-computed matrix of test_stats_independent):
    components seed 2, input 4, residual 0; detectable effect (t(0.975, 1) + t(0.8, 1)) x SE."""
    a = {0: [1.0, 3.0, 5.0], 1: [-1.0, 1.0, 3.0]}
    per_seed = {s: pd.DataFrame({"a": values, "b": [0.0, 0.0, 0.0]}) for s, values in a.items()}
    row = _designed_claims(monkeypatch, tmp_path, {"claim": "c", "measure": "oracle"}, per_seed).iloc[0]
    assert (row["sd_seed"], row["sd_input"], row["sd_residual"]) == pytest.approx((2 ** 0.5, 2.0, 0.0))
    se = (2 / 2 + 4 / 3 + 0) ** 0.5
    assert row["detectable_effect"] == pytest.approx((12.706204736 + 1.37638192) * se, rel=1e-6)
