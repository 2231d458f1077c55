"""build_report on a synthetic results tree with known numbers (see conftest.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.reporting.conftest import (
    FRACTIONS,
    METHODS,
    MISSING,
    N_INPUTS,
    SEEDS,
    TASKS,
    TEMPERATURES,
    _write_model,
    example_scores,
    headline,
    make_config,
    oracle,
    write_results,
)
from xkdbench.config import ExperimentConfig, from_dict
from xkdbench.reporting import build_report
from xkdbench.reporting.gkd_grid import grid_pivot

METHOD_NAMES = ["sft", "gkd_default", "gkd_jsd09"]


def seeds_of(task, method, fraction=1.0):
    return [s for s in SEEDS if (task, method, fraction, s) != MISSING]


def test_tidy_table_shape_and_values(report):
    _, _, out, _ = report
    tidy = pd.read_csv(out / "all_cells.csv")
    models = len(TASKS) * (1 + len(SEEDS) + len(METHOD_NAMES) * len(FRACTIONS) * len(SEEDS)) - 1
    assert len(tidy) == models * (1 + len(TEMPERATURES))
    assert not tidy.duplicated(["task", "method", "fraction", "seed", "decoding"]).any()
    assert set(tidy["decoding"]) == {"greedy", "sample@0.5", "sample@1"}
    for column in ("rouge2", "accuracy_strict", "oracle", "self_bleu", "train_seconds", "generated_tokens",
                   "teacher_forward_sequences", "train_tokens", "time_to_best_validation",
                   "learned_reward_spearman", "num_inputs"):
        assert column in tidy.columns
    row = tidy.query("task == 'summarization' and method == 'gkd_jsd09' and fraction == 0.5 and seed == 1 "
                     "and decoding == 'greedy'").iloc[0]
    assert row["method_key"] == "gkd" and row["rouge2"] == pytest.approx(headline("summarization", "gkd_jsd09", 0.5, 1))
    assert row["headline"] == row["rouge2"] and row["num_inputs"] == N_INPUTS
    assert row["train_seconds"] == pytest.approx(300 * 0.5 + 1) and row["generated_tokens"] == 1000
    assert row["time_to_best_validation"] == (10 + 1) * 3  # lowest validation NLL at step 20: (10 + seed)(index + 1) s
    hot = tidy.query("task == 'reasoning' and method == 'sft' and fraction == 1 and seed == 0 "
                     "and decoding == 'sample@1'").iloc[0]
    assert hot["temperature"] == 1.0 and hot["self_bleu"] == pytest.approx(80 - 40 - 2)
    assert tidy.loc[tidy["method"] == "gkd_default", "learned_reward_spearman"].eq(0.25).all()
    teacher = tidy[(tidy["method"] == "teacher") & (tidy["decoding"] == "greedy")]
    assert len(teacher) == 2 and teacher["fraction"].isna().all() and (teacher["seed"] == 0).all()
    init = tidy[(tidy["method"] == "student_init") & (tidy["decoding"] == "greedy")]
    assert sorted(init["seed"]) == sorted(SEEDS * 2) and init["fraction"].isna().all()


def test_main_table_means_cis_and_best(report):
    _, _, out, paths = report
    table = pd.read_csv(out / "main_table.csv")
    assert set(paths["main_table"]) == {out / "main_table.csv", out / "main_table.md", out / "main_table.tex"}
    for task, metric in TASKS.items():
        for name in METHOD_NAMES + ["student_init"]:
            seeds = seeds_of(task, name)
            for column, value in ((metric, headline), ("oracle", oracle)):
                x = [value(task, name, 1.0, s) for s in seeds]
                low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
                row = table[(table["task"] == task) & (table["model"] == name) & (table["metric"] == column)].iloc[0]
                assert row["mean"] == pytest.approx(np.mean(x))
                assert row["ci95_half_width"] == pytest.approx((high - low) / 2)
                assert row["n_seeds"] == len(seeds) and row["num_inputs"] == N_INPUTS
        teacher = table[(table["task"] == task) & (table["model"] == "teacher")]
        assert (teacher["n_seeds"] == 1).all() and teacher["ci95_half_width"].isna().all()
        # best: gkd_jsd09 (the teacher scores higher but is a reference row, not a candidate)
        best = table[(table["task"] == task) & table["best"]]
        assert sorted(best["metric"]) == sorted([metric, "oracle"]) and set(best["model"]) == {"gkd_jsd09"}
    md, tex = (out / "main_table.md").read_text(), (out / "main_table.tex").read_text()
    assert "| **20.32 ± 1.43** |" in md and "(n=1, no CI)" in md and "test inputs" in md and "seeds" in md
    assert md.count("## ") == 2 and tex.count(r"\begin{tabular}") == 2
    assert r"\toprule" in tex and r"\textbf{20.32 $\pm$ 1.43}" in tex and r"gkd\_jsd09" in tex


def test_win_rates_counts_and_intervals(report):
    _, _, out, _ = report
    table = pd.read_csv(out / "win_rates.csv")
    vs_sft = table[(table["method_a"] == "gkd_jsd09") & (table["method_b"] == "sft")]
    for task in TASKS:
        seeds = seeds_of(task, "gkd_jsd09")
        by_score = vs_sft[(vs_sft["task"] == task) & (vs_sft["measure"] == "greedy_score")].set_index("seed")
        assert list(by_score.index) == [str(s) for s in seeds] + ["pooled"]
        for seed in seeds:  # wins 0-4, loses 5-7, ties 8-19 (input 8 differs by 1e-12 only)
            assert tuple(by_score.loc[str(seed), ["win", "tie", "lose"]]) == (5, 12, 3)
        pooled = by_score.loc["pooled"]
        k = len(seeds)
        assert (pooled["win"], pooled["tie"], pooled["lose"], pooled["n_inputs"], pooled["n_seeds"]) == (
            5 * k, 12 * k, 3 * k, N_INPUTS, k)  # n_inputs: inputs per seed, each in every seed
        assert pooled["mean_difference"] == pytest.approx((5 * 0.1 - 3 * 0.2) / N_INPUTS)
        assert pooled["ci95_low"] < pooled["mean_difference"] < pooled["ci95_high"]
        expected = ("A better" if pooled["ci95_low"] > 0 else "B better" if pooled["ci95_high"] < 0
                    else "inconclusive")
        assert pooled["verdict"] == expected
        by_oracle = vs_sft[(vs_sft["task"] == task) & (vs_sft["measure"] == "greedy_oracle")]
        assert (by_oracle["win"] == by_oracle["n_inputs"] * by_oracle["n_seeds"]).all()  # every pair won
        assert by_oracle["mean_difference"].to_numpy() == pytest.approx(0.05)
        # against the initial student: the difference is known per input, matched by index
        a, _ = example_scores(task, "gkd_jsd09", seeds[0])
        b, _ = example_scores(task, "student_init", seeds[0])
        row = table[(table["task"] == task) & (table["method_b"] == "student_init") &
                    (table["measure"] == "greedy_score") & (table["seed"] == str(seeds[0]))].iloc[0]
        assert row["mean_difference"] == pytest.approx(np.mean(a - b))
        assert row["ci95_low"] <= np.mean(a - b) <= row["ci95_high"]
    assert "pooled" in (out / "win_rates.md").read_text()
    assert "Verdicts, pooled over seeds" in (out / "win_rates.md").read_text()


def test_gkd_grid_placement(report):
    _, _, out, paths = report
    grid = pd.read_csv(out / "gkd_grid.csv")
    assert set(grid["method"]) == {"gkd_default", "gkd_jsd09"}
    pivot = grid_pivot(grid)
    assert list(pivot.index) == [0.0, 0.5, 1.0]
    assert list(pivot.columns) == ["FKL", "RKL", "JSD(0.1)", "JSD(0.5)", "JSD(0.9)"]
    expected = {(0.5, "JSD(0.5)"): "gkd_default", (1.0, "JSD(0.9)"): "gkd_jsd09"}
    for (fraction, label), value in pivot.stack().dropna().items():
        name = expected.pop((fraction, label))
        assert value == pytest.approx(np.mean([headline("reasoning", name, 1.0, s)
                                               for s in seeds_of("reasoning", name)]))
    assert not expected and pivot.notna().sum().sum() == 2
    assert "0.183 ± 0.013" in (out / "gkd_grid.md").read_text()
    assert paths["figure_gkd_grid"]


def test_every_output_exists_and_figures_are_nonempty(report):
    _, _, out, paths = report
    for name in ("data_efficiency", "performance_diversity", "gkd_grid", "cost", "validation_curves",
                 "data_efficiency_paired", "claims_forest"):
        assert paths[f"figure_{name}"] == [out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"]
    for files in paths.values():
        for path in files:
            assert path.is_file() and path.stat().st_size > 0, path
    assert (out / "figures" / "data_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob(".*tmp*"))  # atomic writes leave no temporary files behind


def test_missing_cells_are_listed(report):
    _, _, out, _ = report
    text = (out / "missing_cells.txt").read_text()
    task, method, fraction, seed = MISSING
    assert f"cells/{task}/{method}/f{fraction:g}/seed{seed}: eval/metrics.json missing" in text
    assert len(text.splitlines()) == 2  # the header line and the one cell


def test_partial_and_empty_results_do_not_crash(tmp_path):
    results = tmp_path / "results"
    write_results(results)
    shutil.rmtree(results / "cells" / "summarization" / "sft")
    (results / "student_init" / "reasoning" / "seed1" / "eval" / "outputs.jsonl").unlink()
    config = make_config(win_rate_pairs=[["gkd_jsd09", "student_init"]])
    paths = build_report(config, results, tmp_path / "out")
    missing = (tmp_path / "out" / "missing_cells.txt").read_text()
    assert missing.count("cells/summarization/sft/") == 6
    assert "student_init/reasoning/seed1: eval/outputs.jsonl missing" in missing
    table = pd.read_csv(tmp_path / "out" / "main_table.csv")
    sft = table[(table["task"] == "summarization") & (table["model"] == "sft")]
    assert (sft["n_seeds"] == 0).all() and sft["mean"].isna().all()
    assert "n/a" in (tmp_path / "out" / "main_table.md").read_text()

    config = make_config()  # no gkd variant, no results at all: tables are empty, figures still drawn
    config.methods = config.methods[:1]
    paths = build_report(config, tmp_path / "nothing", tmp_path / "empty")
    assert paths["gkd_grid"] == [] and paths["figure_gkd_grid"] == [] and paths["win_rates"] == []
    assert all(p.is_file() for files in paths.values() for p in files)
    expected = len(TASKS) * (1 + len(SEEDS) + len(FRACTIONS) * len(SEEDS))
    assert (tmp_path / "empty" / "missing_cells.txt").read_text().count("eval/metrics.json missing") == expected
    assert pd.read_csv(tmp_path / "empty" / "main_table.csv").empty


def test_a_variant_limited_to_one_task_and_fraction(tmp_path):
    """A side-study variant (the GKD grid's) has rows only where it ran, and no missing cells elsewhere."""
    from xkdbench.reporting.figures import curve_variants, headline_variants

    results, out = tmp_path / "results", tmp_path / "out"
    write_results(results)
    limited = {"name": "gkd_fkl_on", "method": "gkd", "divergence": "forward_kl", "student_data_fraction": 1.0,
               "tasks": ["reasoning"], "fractions": [1.0]}
    config = from_dict(ExperimentConfig, {
        "name": "synthetic", "tasks": {t: {} for t in TASKS}, "methods": [*METHODS, limited], "fractions": FRACTIONS,
        "seeds": SEEDS, "evaluation": {"sampling_temperatures": TEMPERATURES},
        "report": {"win_rate_pairs": [["gkd_fkl_on", "sft"]]}})
    for seed in SEEDS:
        _write_model(results / "cells/reasoning/gkd_fkl_on/f1" / f"seed{seed}", "reasoning", "gkd_jsd09", 1.0, seed, 3)
    build_report(config, results, out)
    tidy = pd.read_csv(out / "all_cells.csv")
    rows = tidy[(tidy["method"] == "gkd_fkl_on") & (tidy["decoding"] == "greedy")]
    assert set(zip(rows["task"], rows["fraction"], strict=True)) == {("reasoning", 1.0)} and len(rows) == 3
    assert "gkd_fkl_on" not in (out / "missing_cells.txt").read_text()
    main = pd.read_csv(out / "main_table.csv")
    assert set(main.loc[main["model"] == "gkd_fkl_on", "task"]) == {"reasoning"}
    grid = grid_pivot(pd.read_csv(out / "gkd_grid.csv"))
    assert grid.loc[1.0, "FKL"] == pytest.approx(np.mean([headline("reasoning", "gkd_jsd09", 1.0, s) for s in SEEDS]))
    # one fraction is no curve: the line figures draw only the variants run at every fraction; a figure drawn
    # at the headline fraction (performance against diversity) draws it where it ran
    assert "gkd_fkl_on" not in [m.name for m in curve_variants(config, "reasoning")]
    assert "gkd_fkl_on" in [m.name for m in headline_variants(config, "reasoning", 1.0)]
    assert "gkd_fkl_on" not in [m.name for m in headline_variants(config, "summarization", 1.0)]
    assert [m.name for m in headline_variants(config, "reasoning", FRACTIONS[0])] == [m["name"] for m in METHODS]
    wins = pd.read_csv(out / "win_rates.csv")
    assert set(wins["task"]) == {"reasoning"}  # the pair exists only where both ran


def test_validation_curves_draw_each_seeds_log_and_names_a_bad_variant(tmp_path, monkeypatch):
    from xkdbench.config import ConfigError
    from xkdbench.reporting.settings import report_settings

    with pytest.raises(ConfigError) as error:
        report_settings(make_config(validation_curves=["sft", "bd"]))
    assert "config.report.validation_curves[1]: 'bd' is not a method variant" in str(error.value)
    config = make_config(validation_curves=["gkd_jsd09"])
    results = tmp_path / "results"
    write_results(results)
    from xkdbench.reporting import figures
    settings = report_settings(config)
    drawn = []  # per figure, per task's panel: its lines (a curve and its lowest point per seed)
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, *a: drawn.append([len(ax.lines) for ax in fig.axes]) or save(fig, *a))
    paths = figures.validation_curves(config, settings, figures.method_colors(config), results, tmp_path / "out")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
    # summarization: seeds 0-2; reasoning: 0-1 (its gkd_jsd09 seed 2 is the tree's missing cell)
    assert drawn[-1][:2] == [2 * 3, 2 * 2]
    own = from_dict(ExperimentConfig, {
        "name": "synthetic", "tasks": {"summarization": {"seeds": [1]}, "reasoning": {}}, "methods": METHODS,
        "fractions": FRACTIONS, "seeds": SEEDS, "evaluation": {"sampling_temperatures": TEMPERATURES},
        "report": {"validation_curves": ["gkd_jsd09"]}})
    figures.validation_curves(own, report_settings(own), figures.method_colors(own), results, tmp_path / "own")
    assert drawn[-1][:2] == [2 * 1, 2 * 2]  # a task's own seeds: only seed 1's log on summarization


def test_a_figure_saved_twice_has_the_same_bytes(tmp_path, monkeypatch):
    """Committed figures are regenerated by every run: a rerun with the same numbers, a day later, must
    not change them (matplotlib stamps a PDF with the time, or SOURCE_DATE_EPOCH where set)."""
    from xkdbench.reporting.figures import _figure, _save
    outputs = []
    for run, epoch in (("a", "0"), ("b", "86400")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        fig, (ax,) = _figure(1)
        ax.plot([0, 1, 2], [0.1, 0.4, 0.2])
        (tmp_path / run / "figures").mkdir(parents=True)
        outputs.append([p.read_bytes() for p in _save(fig, tmp_path / run, "curve")])
    assert outputs[0] == outputs[1]


def test_reconstructed_methods_are_marked_in_the_main_table(tmp_path):
    """X-KD's and the PbKD family's objectives are partly filled in (no full text or code): the table says so."""
    from xkdbench.reporting.settings import ReportSettings
    from xkdbench.reporting.tables import write_main_table
    rows = [{"task": "translation", "model": model, "method_key": key, "role": role, "fraction": 1.0, "metric": "bleu",
             "mean": 1.0, "ci95_half_width": 0.1, "n_seeds": 3, "num_inputs": "200", "best": False}
            for model, key, role in (("teacher", "teacher", "teacher"), ("sft", "sft", "distilled"),
                                     ("xkd_seq", "xkd_seq", "distilled"), ("pbkd_online", "pbkd_online", "distilled"),
                                     ("amm", "amm", "distilled"), ("gkd_rkl_on", "gkd", "distilled"))]
    write_main_table(pd.DataFrame(rows), ReportSettings(1.0, (), "translation"), tmp_path)
    md, tex = (tmp_path / "main_table.md").read_text(), (tmp_path / "main_table.tex").read_text()
    for name in ("xkd_seq", "pbkd_online", "amm"):
        assert f"| {name} † |" in md and f"{fmt_latex(name)} †" in tex
    for name in ("teacher", "sft", "gkd_rkl_on"):
        assert f"| {name} |" in md
    assert "†: reconstructed" in md


def fmt_latex(name):
    return name.replace("_", r"\_")


def test_paired_data_efficiency_subtracts_the_reference_seed_by_seed(report):
    """gkd_jsd09 − sft per seed: 3 + 0.3 x the seed's noise (the closed forms of conftest.headline), so the
    seed's shared part cancels; a t-interval over those differences (t(0.975, 2) = 4.3027, from tables)."""
    from tests.reporting.conftest import SEED_NOISE
    from xkdbench.reporting.figures import paired_differences

    config, _, out, paths = report
    tidy = pd.read_csv(out / "all_cells.csv")
    table = paired_differences(tidy, config, "summarization", "sft", "headline").set_index(["method", "fraction"])
    diffs = np.array([3.0 + 0.3 * noise for noise in SEED_NOISE])
    row = table.loc[("gkd_jsd09", 1.0)]
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(diffs.mean())
    assert row["half_width"] == pytest.approx(4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3))
    assert table.loc[("gkd_default", 0.5), "mean"] == pytest.approx(np.mean([1.0 + 0.1 * n for n in SEED_NOISE]))
    assert "sft" not in table.index.get_level_values("method")  # the reference is the zero line
    reasoning = paired_differences(tidy, config, "reasoning", "sft", "headline").set_index(["method", "fraction"])
    assert reasoning.loc[("gkd_jsd09", 1.0), "n_seeds"] == 2  # seed 2's cell is missing: only paired seeds
    assert reasoning.loc[("gkd_jsd09", 1.0), "mean"] == pytest.approx(np.mean(diffs[:2]) / 100)
    assert paths["figure_data_efficiency_paired"][0].stat().st_size > 0


def test_the_reference_method_defaults_to_sft_and_must_be_a_variant():
    from xkdbench.config import ConfigError
    from xkdbench.reporting.settings import report_settings

    assert report_settings(make_config()).reference_method == "sft"
    assert report_settings(make_config(reference_method="gkd_default")).reference_method == "gkd_default"
    with pytest.raises(ConfigError, match="config.report.reference_method: 'teacher' is not a method variant"):
        report_settings(make_config(reference_method="teacher"))


def test_the_claims_forest_draws_every_claim_row_in_its_verdict_colour(tmp_path):
    """The forest plot's lines: one per (claim, task, measure) row, at the row's interval, in its colour."""
    from matplotlib.colors import to_rgba

    from xkdbench.reporting import figures
    from xkdbench.reporting.claims import COLUMNS, CONTROL_FAILED

    rows = [("c1", "summarization", "greedy_score", -1.0, 2.0, "inconclusive"),
            ("c2", "summarization", "greedy_score", 0.5, 1.5, "reproduced"),
            ("c1", "reasoning", "greedy_oracle", -0.3, -0.1, "not reproduced (B better)"),
            ("A/A control", "reasoning", "greedy_oracle", 0.1, 0.2, CONTROL_FAILED)]
    table = pd.DataFrame([{**dict.fromkeys(COLUMNS), "claim": c, "task": t, "method_a": "gkd_jsd09", "method_b": "sft",
                           "measure": m, "ci95_low": lo, "ci95_high": hi, "mean_difference": (lo + hi) / 2,
                           "verdict": v} for c, t, m, lo, hi, v in rows])
    drawn = []
    original = figures._save
    figures_dir = tmp_path / "out"
    (figures_dir / "figures").mkdir(parents=True)

    def capture(fig, out_dir, name):
        for ax in fig.axes:
            for line in ax.get_lines():
                x = list(line.get_xdata())
                if len(x) == 2 and x[0] != x[1]:  # an interval (the zero line is vertical: x = 0, 0)
                    drawn.append((ax.get_title().split("\n")[0], tuple(map(float, x)), to_rgba(line.get_color())))
        return original(fig, out_dir, name)

    import unittest.mock
    with unittest.mock.patch.object(figures, "_save", capture):
        paths = figures.claims_forest(table, make_config(), figures_dir)
    assert sorted(drawn) == sorted([
        ("summarization", (-1.0, 2.0), to_rgba("tab:gray")), ("summarization", (0.5, 1.5), to_rgba("tab:green")),
        ("reasoning", (-0.3, -0.1), to_rgba("tab:red")), ("reasoning", (0.1, 0.2), to_rgba("black"))])
    assert [p.name for p in paths] == ["claims_forest.png", "claims_forest.pdf"]


def test_task_calibration_measures_the_room_against_the_targets(report):
    """By the closed forms of conftest: oracle = 0.5 + headline / 100, with headline = 10 + offset + 4 f +
    noise_s (1 + offset / 10): teacher (offset 20, seed 0) 0.849; init (offset 0) 0.64 + noise_s / 100;
    sft (offset 3) 0.67 + 1.3 noise_s / 100."""
    from tests.reporting.conftest import SEED_NOISE

    _, _, out, _ = report
    table = pd.read_csv(out / "task_calibration.csv").set_index("task")
    noise = np.array(SEED_NOISE)
    init, sft = 0.64 + noise / 100, 0.67 + 1.3 * noise / 100
    row = table.loc["summarization"]
    assert row["teacher"] == pytest.approx(0.849)
    assert (row["init_mean"], row["init_sd"]) == pytest.approx((init.mean(), init.std(ddof=1)))
    assert (row["sft"], row["sft_sd"]) == pytest.approx((sft.mean(), sft.std(ddof=1)))
    assert row["gain"] == pytest.approx(sft.mean() - init.mean()) and row["room"] == pytest.approx(0.849 - sft.mean())
    # teacher below 0.9, seeds within 0.03, gain 0.03 below 0.10, room 0.18 above 0.15
    assert [bool(row[c]) for c in ("teacher_ok", "init_ok", "gain_ok", "room_ok")] == [False, True, False, True]
    md = (out / "task_calibration.md").read_text()
    assert "| summarization | 0.849 ✗ |" in md and "over 3 seeds" in md


def test_a_task_run_at_one_fraction_is_left_out_of_the_curves_and_its_claims(tmp_path):
    """tasks.<t>.fractions: the task has cells (and missing cells) only at its fractions; the data-efficiency
    figures draw only the tasks with a curve; a claim at another fraction skips it, or names it an error."""
    from xkdbench.config import ConfigError
    from xkdbench.reporting.figures import curve_tasks, paired_differences
    from xkdbench.reporting.settings import report_settings

    def config(claims):
        return from_dict(ExperimentConfig, {
            "name": "synthetic", "tasks": {"summarization": {}, "reasoning": {"fractions": [1.0]}},
            "methods": METHODS, "fractions": FRACTIONS, "seeds": SEEDS,
            "evaluation": {"sampling_temperatures": TEMPERATURES}, "report": {"claims": claims}})

    claim = {"claim": "low data", "a": "gkd_jsd09", "b": "sft", "fraction": 0.5}
    assert [c.tasks for c in report_settings(config([claim])).claims] == [("summarization",)] * 2
    with pytest.raises(ConfigError) as error:
        report_settings(config([{**claim, "tasks": ["reasoning"]}]))
    assert ("config.report.claims[0].fraction: reasoning does not run at 0.5 (tasks.reasoning.fractions); "
            "allowed there: 1") in str(error.value)

    results, out = tmp_path / "results", tmp_path / "out"
    write_results(results)
    cfg = config([claim])
    assert curve_tasks(cfg) == ["summarization"]
    paths = build_report(cfg, results, out)
    tidy = pd.read_csv(out / "all_cells.csv")
    assert set(tidy.loc[tidy["task"] == "reasoning", "fraction"].dropna()) == {1.0}  # the f0.5 runs on disk are not read
    missing = (out / "missing_cells.txt").read_text()
    assert "reasoning/gkd_jsd09/f1/seed2" in missing and "reasoning/sft/f0.5" not in missing
    assert set(pd.read_csv(out / "claims.csv")["task"]) == {"summarization"}
    table = paired_differences(tidy, cfg, "summarization", "sft", "headline")
    assert set(table["fraction"]) == {0.5, 1.0}
    assert all(p.stat().st_size > 0 for p in paths["figure_data_efficiency"])


def test_a_task_without_the_headline_fraction_is_named_before_any_work():
    from xkdbench.config import ConfigError
    from xkdbench.reporting.settings import report_settings

    def config(report):
        return from_dict(ExperimentConfig, {
            "name": "synthetic", "tasks": {"summarization": {}, "reasoning": {"fractions": [0.5]}},
            "methods": METHODS, "fractions": FRACTIONS, "seeds": SEEDS,
            "evaluation": {"sampling_temperatures": TEMPERATURES}, "report": report})

    with pytest.raises(ConfigError) as error:  # at load time, as every report setting
        config({})
    assert "config.tasks.reasoning.fractions: the report's headline fraction 1 is missing" in str(error.value)
    assert report_settings(config({"headline_fraction": 0.5})).headline_fraction == 0.5


def test_a_task_with_its_own_seeds_is_reported_over_them(tmp_path):
    """tasks.<t>.seeds: reasoning over seeds 0-1 (its seed 2 on disk is not read), summarization over
    0-3 (seed 3 not run yet: listed missing, its claims over the three seeds present)."""
    cfg = from_dict(ExperimentConfig, {
        "name": "synthetic", "tasks": {"summarization": {"seeds": [0, 1, 2, 3]}, "reasoning": {"seeds": [0, 1]}},
        "methods": METHODS, "fractions": FRACTIONS, "seeds": SEEDS,
        "evaluation": {"sampling_temperatures": TEMPERATURES},
        "report": {"claims": [{"claim": "gkd beats sft", "a": "gkd_default", "b": "sft"},
                              {"claim": "gkd is faster", "a": "gkd_default", "b": "sft", "measure": "time_to_target"}]}})
    results, out = tmp_path / "results", tmp_path / "out"
    write_results(results)
    build_report(cfg, results, out)
    tidy = pd.read_csv(out / "all_cells.csv")
    reasoning = tidy[tidy["task"] == "reasoning"]
    assert set(reasoning.loc[reasoning["role"] == "distilled", "seed"]) == {0, 1}
    assert set(reasoning.loc[reasoning["role"] == "student_init", "seed"]) == {0, 1}
    missing = (out / "missing_cells.txt").read_text()
    assert "summarization/sft/f1/seed3" in missing and "student_init/summarization/seed3" in missing
    assert "reasoning/gkd_jsd09/f1/seed2" not in missing  # the synthetic tree's one missing cell is not asked for
    claims = pd.read_csv(out / "claims.csv").set_index(["task", "measure"])
    for measure in ("greedy_oracle", "greedy_score", "time_to_target"):
        assert claims.loc[("reasoning", measure), "n_seeds"] == 2
        assert claims.loc[("summarization", measure), "n_seeds"] == 3
    calibration = pd.read_csv(out / "task_calibration.csv").set_index("task")
    assert calibration.loc["reasoning", "init_seeds"] == 2 and calibration.loc["summarization", "init_seeds"] == 3


def test_a_long_figure_title_is_wrapped_inside_a_one_panel_figure():
    """A study with one curve task draws one-panel figures, narrower than their titles: the title is
    wrapped so that, drawn, it lies inside the figure; unwrapped it would be cut at both edges."""
    from xkdbench.reporting.figures import _figure, _suptitle

    text = ("Data efficiency against sft: the difference per seed (same initialisation and data), "
            "mean and 95% t-band over 3-4 seeds")
    for fontsize in ("large", "medium"):
        fig, _ = _figure(1)
        fig.suptitle(text, fontsize=fontsize)
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        figure_box = fig.bbox
        assert fig._suptitle.get_window_extent(renderer).width > figure_box.width  # the case being fixed
        _suptitle(fig, text, fontsize=fontsize)
        fig.canvas.draw()
        title_box = fig._suptitle.get_window_extent(renderer)
        assert "\n" in fig._suptitle.get_text()
        assert figure_box.x0 <= title_box.x0 and title_box.x1 <= figure_box.x1, (fontsize, title_box, figure_box)
        assert title_box.y1 <= figure_box.y1
