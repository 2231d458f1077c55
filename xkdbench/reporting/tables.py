"""The study tables: main table, win rates, GKD grid and cost, each as CSV plus Markdown (main: LaTeX too).

Every table states how many seeds and test inputs are behind it: CSVs in `n_seeds` / `num_inputs`
columns, Markdown and LaTeX in a column and a caption line.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.io import write_text
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.collect import Model, per_example_scores
from xkdbench.reporting.settings import REFERENCES, ReportSettings
from xkdbench.reporting.stats import (
    CONFIDENCE,
    Components,
    crossed_interval,
    paired_matrix,
    t_interval,
    win_tie_lose,
)

COST = ["train_seconds", "train_tokens", "generated_tokens", "teacher_forward_sequences", "teacher_cache_sequences",
        "time_to_best_validation"]


def headline_rows(tidy: pd.DataFrame, fraction: float, decoding: str = "greedy") -> pd.DataFrame:
    """Reference models plus the distilled cells at `fraction`, for one decoding."""
    rows = tidy[tidy["decoding"] == decoding]
    return rows[(rows["role"] != "distilled") | (rows["fraction"] == fraction)]


def model_order(config: ExperimentConfig, task: str, fraction: float) -> list[tuple[str, str, str]]:
    """(name, method key, role) of the main table's rows: references first, then config order (the
    variants that have cells on `task` at `fraction`)."""
    return [(r, r, r) for r in REFERENCES] + [(m.name, m.method, "distilled") for m in config.methods
                                              if m.runs_on(task, fraction)]


# -- 1. main table ------------------------------------------------------------------------------
def main_table(tidy: pd.DataFrame, config: ExperimentConfig, settings: ReportSettings,
               scores: PairedScores | None = None) -> pd.DataFrame:
    """Long table: a row per (task, model, metric) with mean, t half-width, n_seeds and `best`.

    With `scores`, the best distilled row also carries its paired comparison with the runner-up on
    the per-example measure (the task's per-example score for the headline metric, the oracle for
    the oracle), with the interval over seeds and inputs: whether "best" is separable at all."""
    rows = []
    chosen = headline_rows(tidy, settings.headline_fraction)
    for task in config.tasks:
        here = chosen[chosen["task"] == task]
        if here.empty:
            continue
        metrics = [here["headline_metric"].iloc[0]]
        if "oracle" in here and here["oracle"].notna().any():
            metrics.append("oracle")
        for metric in metrics:
            block = []
            for name, key, role in model_order(config, task, settings.headline_fraction):
                runs = here[here["method"] == name]
                mean, ci, n = t_interval(runs[metric])
                block.append({"task": task, "model": name, "method_key": key, "role": role,
                              "fraction": math.nan if role != "distilled" else settings.headline_fraction,
                              "metric": metric, "mean": mean, "ci95_half_width": ci, "n_seeds": n,
                              "num_inputs": fmt.count_label(runs["num_inputs"]), "best": False})
            candidates = [r["mean"] for r in block if r["role"] == "distilled" and not math.isnan(r["mean"])]
            for r in block:  # higher is better for every headline metric and the oracle
                r["best"] = bool(candidates) and r["role"] == "distilled" and r["mean"] == max(candidates)
            if scores is not None:
                _best_vs_runner_up(block, scores, "greedy_oracle" if metric == "oracle" else "greedy_score", settings)
            rows += block
    return pd.DataFrame(rows, columns=["task", "model", "method_key", "role", "fraction", "metric", "mean",
                                       "ci95_half_width", "n_seeds", "num_inputs", "best", *RUNNER_UP])


RUNNER_UP = ["runner_up", "vs_runner_up", "vs_runner_up_low", "vs_runner_up_high", "vs_runner_up_verdict"]


def _best_vs_runner_up(block: list[dict], scores: PairedScores, measure: str, settings: ReportSettings) -> None:
    ranked = sorted((r for r in block if r["role"] == "distilled" and not math.isnan(r["mean"])),
                    key=lambda r: -r["mean"])
    if len(ranked) < 2:
        return
    best, second = ranked[0], ranked[1]
    per_seed = scores.per_seed(best["task"], best["model"], second["model"], settings.headline_fraction, measure)
    if not per_seed:
        return
    result = compare(per_seed)
    best.update(runner_up=second["model"], vs_runner_up=result["mean_difference"],
                vs_runner_up_low=result["ci95_low"], vs_runner_up_high=result["ci95_high"],
                vs_runner_up_verdict="separable" if result["verdict"] == "A better" else "not separable")


RECONSTRUCTED_NOTE = ("†: reconstructed (the paper's full text or code was not available; the method's docstring "
                      "and README list what was filled in).")


def reconstructed(method_key: str) -> bool:
    """Whether a method's objective was reconstructed (`Paper.reconstructed`); False for the teacher, the
    student initialisation and variants trained outside the suite."""
    from xkdbench.methods import METHODS  # the registry imports torch: only when a table is written
    if method_key not in METHODS:
        return False
    paper = METHODS.get(method_key).paper
    return paper is not None and paper.reconstructed


def _main_caption(task_rows: pd.DataFrame, settings: ReportSettings) -> str:
    seeds = fmt.count_label(task_rows.loc[task_rows["role"] == "distilled", "n_seeds"])
    return (f"{task_rows['task'].iloc[0]}: greedy decoding on {fmt.count_label(task_rows['num_inputs'])} test "
            f"inputs, distilled at data fraction {settings.headline_fraction:g}; mean ± half-width of the "
            f"{CONFIDENCE:.0%} t-interval over seeds, the test set held fixed ({seeds} seeds per method, teacher 1 "
            "run; n=1: no CI). "
            "Bold: best distilled method per column.")


def _runner_up_note(task_rows: pd.DataFrame) -> str:
    if "runner_up" not in task_rows:
        return ""
    notes = [f"{fmt.short_label(r.metric)}: {r.model} - {r.runner_up} = {r.vs_runner_up:+.4f} "
             f"[{r.vs_runner_up_low:+.4f}, {r.vs_runner_up_high:+.4f}], {r.vs_runner_up_verdict}"
             for r in task_rows.itertuples() if r.best and isinstance(r.runner_up, str)]
    if not notes:
        return ""
    return (" Best vs runner-up, paired per example (score: the task's per-example metric), 95% interval over "
            "seeds and inputs: " + "; ".join(notes) + ".")


def write_main_table(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    md, tex = [f"# Main table (data fraction {settings.headline_fraction:g}, greedy decoding)\n"], []
    for task, task_rows in table.groupby("task", sort=False):
        metrics = list(dict.fromkeys(task_rows["metric"]))
        header = ["Model"] + [fmt.short_label(m) for m in metrics] + ["Seeds"]
        md_rows, tex_blocks = [], [[], []]
        for model, model_rows in task_rows.groupby("model", sort=False):
            by_metric = model_rows.set_index("metric")
            cells_md, cells_tex = [], []
            for m in metrics:
                r = by_metric.loc[m]
                text = fmt.mean_ci(r["mean"], r["ci95_half_width"], r["n_seeds"], m)
                cells_md.append(f"**{text}**" if r["best"] else text)
                cells_tex.append(f"\\textbf{{{fmt.latex_escape(text)}}}" if r["best"] else fmt.latex_escape(text))
            n = str(int(model_rows["n_seeds"].max()))
            label = f"{model} †" if reconstructed(model_rows["method_key"].iloc[0]) else model
            md_rows.append([label, *cells_md, n])
            tex_blocks[model_rows["role"].iloc[0] == "distilled"].append([fmt.latex_escape(label), *cells_tex, n])
        caption = _main_caption(task_rows, settings) + _runner_up_note(task_rows)
        if any(reconstructed(key) for key in task_rows["method_key"]):
            caption += " " + RECONSTRUCTED_NOTE
        md += [f"## {task}\n", fmt.markdown(header, md_rows), f"{caption}\n"]
        tex.append(fmt.latex_table(header, tex_blocks, caption, f"tab:main-{task}"))
    paths = [fmt.write_csv(out_dir / "main_table.csv", table)]
    for name, text in (("main_table.md", "\n".join(md)), ("main_table.tex", "% requires \\usepackage{booktabs}\n"
                                                                         + "\n".join(tex))):
        write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


# -- 3. win rates -------------------------------------------------------------------------------
def _model(config: ExperimentConfig, task: str, name: str, fraction: float, seed: int) -> Model:
    if name == "teacher":
        return Model(task, name, name, name, math.nan, 0)
    if name == "student_init":
        return Model(task, name, name, name, math.nan, seed)
    return Model(task, name, config.method(name).method, "distilled", fraction, seed)


# the variance components of a paired difference (stats.Components, as standard deviations) and the true
# difference this study's seeds and inputs decide with 80% power
POWER_COLUMNS = ["sd_seed", "sd_input", "sd_residual", "detectable_effect"]


def compare(per_seed: dict) -> dict:
    """Win/tie/lose and the mean difference A - B with its 95% interval over the (seed, input) matrix
    of {seed: two columns (A, B) indexed by input} (stats.crossed_interval: seeds and inputs)."""
    matrix = paired_matrix(per_seed)
    win, tie, lose = win_tie_lose(matrix.ravel(), np.zeros(matrix.size))
    interval = crossed_interval(matrix)
    s, i = matrix.shape
    power = {}
    if s >= 2 and i >= 2:  # what this study's size can detect, from its own variance components
        c = Components.of(matrix)
        power = {"sd_seed": c.seed ** 0.5, "sd_input": c.input ** 0.5, "sd_residual": c.residual ** 0.5,
                 "detectable_effect": c.detectable_effect(s, i)}
    return {"n_seeds": interval.n_seeds, "n_inputs": interval.n_inputs, "win": win, "tie": tie, "lose": lose,
            "mean_difference": interval.mean, "ci95_low": interval.low, "ci95_high": interval.high,
            "interval_covers": interval.covers, "verdict": interval.verdict,
            **dict.fromkeys(POWER_COLUMNS, math.nan), **power}


class PairedScores:
    """Per-example scores of two models on the same test inputs, read once per model."""

    def __init__(self, config: ExperimentConfig, results_dir: Path):
        self.config, self.results_dir, self._cache = config, results_dir, {}

    def _scores(self, model: Model) -> pd.DataFrame | None:
        if model not in self._cache:
            self._cache[model] = per_example_scores(self.results_dir, model)
        return self._cache[model]

    def per_seed(self, task: str, a_name: str, b_name: str, fraction: float, measure: str) -> dict:
        """{seed: two columns (A, B) of `measure`, matched by test input index}; seeds missing either
        model are left out."""
        paired = {}
        for seed in self.config.task_seeds(task):
            a = self._scores(_model(self.config, task, a_name, fraction, seed))
            b = self._scores(_model(self.config, task, b_name, fraction, seed))
            if a is None or b is None:
                continue
            joined = a.add_suffix("_a").join(b.add_suffix("_b"), how="inner")[[f"{measure}_a", f"{measure}_b"]].dropna()
            if not joined.empty:
                paired[seed] = joined
        return paired


def win_rates(config: ExperimentConfig, settings: ReportSettings, results_dir: Path) -> pd.DataFrame:
    """Per task, pair, measure (greedy_score, greedy_oracle): a row per seed (its interval covers the
    inputs only, so it carries no verdict) and a pooled row over every seed, which decides."""
    rows, scores = [], PairedScores(config, results_dir)
    for task in config.tasks:
        for a_name, b_name in settings.win_rate_pairs:
            for measure in ("greedy_score", "greedy_oracle"):
                per_seed = scores.per_seed(task, a_name, b_name, settings.headline_fraction, measure)
                if not per_seed:
                    continue
                ident = dict(task=task, method_a=a_name, method_b=b_name, measure=measure)
                for seed, pair in per_seed.items():
                    rows.append({**ident, "seed": seed, **compare({seed: pair}), "verdict": ""})
                rows.append({**ident, "seed": "pooled", **compare(per_seed)})
    columns = ["task", "method_a", "method_b", "measure", "seed", "n_seeds", "n_inputs", "win", "tie", "lose",
               "mean_difference", "ci95_low", "ci95_high", "interval_covers", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def interval_note() -> str:
    """What every verdict's interval is, for the captions of the claims and win-rate tables."""
    return (f"{CONFIDENCE:.0%} interval of the mean difference over the (seed, input) matrix, covering both "
            "sources of randomness: training runs (seeds) and test inputs (crossed random effects, variance "
            "(MS_seed + MS_input - MS_res)/(S I), Student t with S - 1 degrees of freedom; xkdbench.reporting.stats). "
            "A verdict picks a side only when that interval excludes 0 and at least 2 seeds stand behind it; "
            "with one seed the interval covers the inputs only and decides nothing.")


def write_win_rates(table: pd.DataFrame, settings: ReportSettings, out_dir: Path) -> list[Path]:
    md = [f"# Win / tie / lose (data fraction {settings.headline_fraction:g}, greedy decoding)\n"]
    pooled = table[table["seed"] == "pooled"]
    if not pooled.empty:  # the claims view first: one verdict per task, pair and measure
        header = ["task", "A vs B", "by", "seeds", "inputs", "win / tie / lose", "mean A - B [95% CI]", "verdict"]
        body = [[r.task, f"{r.method_a} vs {r.method_b}", "score" if r.measure == "greedy_score" else "oracle",
                 r.n_seeds, r.n_inputs, f"{r.win} / {r.tie} / {r.lose}",
                 f"{r.mean_difference:+.4f} [{r.ci95_low:+.4f}, {r.ci95_high:+.4f}]", r.verdict]
                for r in pooled.itertuples()]
        md += ["## Verdicts, pooled over seeds\n", fmt.markdown(header, body), interval_note() + "\n"]
    header = ["A vs B", "by", "seed", "inputs", "win", "tie", "lose", "mean A - B [95% CI, inputs only]"]
    for task, rows in table[table["seed"] != "pooled"].groupby("task", sort=False):
        body = [[f"{r.method_a} vs {r.method_b}", "score" if r.measure == "greedy_score" else "oracle", r.seed,
                 r.n_inputs, r.win, r.tie, r.lose,
                 f"{r.mean_difference:+.4f} [{r.ci95_low:+.4f}, {r.ci95_high:+.4f}]"]
                for r in rows.itertuples()]
        md += [f"## {task}, per seed\n", fmt.markdown(header, body),
               f"Per test input matched by index, one seed a row (a t-interval over its inputs: it does not cover "
               f"the training run, so it decides nothing). Win: A's per-example score > B's, tie: within 1e-9. By "
               f"score: {fmt.PER_EXAMPLE.get(task, 'per-example task metric')}; by oracle: the oracle score (0-1).\n"]
    if table.empty:
        md.append("No pair had outputs for both models.\n")
    write_text(out_dir / "win_rates.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "win_rates.csv", table), out_dir / "win_rates.md"]


# -- 6. cost --------------------------------------------------------------------------------------
def cost_table(tidy: pd.DataFrame, config: ExperimentConfig) -> pd.DataFrame:
    """Per task and method variant: mean training cost over its cells (all fractions and seeds)."""
    cells = tidy[(tidy["decoding"] == "greedy") & (tidy["role"] == "distilled")]
    rows = []
    for task in config.tasks:
        for entry in config.methods:
            runs = cells[(cells["task"] == task) & (cells["method"] == entry.name)]
            if runs.empty:
                continue
            rows.append({"task": task, "method": entry.name, "method_key": entry.method, "n_cells": len(runs),
                         "n_seeds": runs["seed"].nunique(), **{c: runs[c].mean() for c in COST}})
    return pd.DataFrame(rows, columns=["task", "method", "method_key", "n_cells", "n_seeds", *COST])


def write_cost_table(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    header = ["Method", "cells", "train seconds", "train tokens", "generated tokens", "teacher forwards",
              "teacher cache", "s to best val."]
    md = ["# Training cost per cell (mean over fractions and seeds)\n"]
    for task, rows in table.groupby("task", sort=False):
        body = [[r.method, r.n_cells, *(f"{v:,.0f}" if not math.isnan(v) else "n/a" for v in
                                        (r.train_seconds, r.train_tokens, r.generated_tokens,
                                         r.teacher_forward_sequences, r.teacher_cache_sequences,
                                         r.time_to_best_validation))]
                for r in rows.itertuples()]
        md += [f"## {task}\n", fmt.markdown(header, body),
               f"Means over each method's cells ({fmt.count_label(rows['n_seeds'])} seeds x fractions). Teacher "
               "forwards: sequences passed through the live teacher. Teacher cache: sequences whose teacher "
               "distributions came from the teacher cache instead (README, \"Teacher cache\"). s to best val.: "
               "training seconds at the logged step with the lowest validation NLL (n/a: validation not logged).\n"]
    write_text(out_dir / "cost.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "cost.csv", table), out_dir / "cost.md"]
