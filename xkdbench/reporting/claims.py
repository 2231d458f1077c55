"""Claims of the source papers, checked against the study (EXPERIMENTS: "Claims").

Each configured claim (`report.claims`) reads "A scores higher than B" on a task at a data fraction.
Its measured effect is the mean paired difference A - B of the per-example measure over the
(seed, test input) matrix, with the 95% interval of `stats.crossed_interval`, which covers both the
training runs and the test inputs. The verdict follows from that interval alone: above 0 is
"reproduced", below 0 "not reproduced (B better)", containing 0 (or one seed only) "inconclusive".

A claim by `time_to_target` reads "A takes less training time than B to reach the same validation NLL":
per seed, the level is the higher of the two runs' lowest validation NLLs (`collect.time_to_target`), so
a run whose NLL only rises cannot look fast. There is one value per training run, so its interval is the
t-interval of the seeds' paired differences A - B (S - 1 degrees of freedom, seeds only): reproduced when
it lies below 0.

A claim marked `control: true` is the study's A/A control: the same method and settings under two
names that differ only in their random-stream offset. Its verdict must be inconclusive; a decided
control means the intervals are too narrow, and the table says so.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.io import write_text
from xkdbench.reporting import formatting as fmt
from xkdbench.reporting.collect import Model, time_to_target, validation_curve
from xkdbench.reporting.settings import PER_CELL_MEASURES, ReportSettings
from xkdbench.reporting.stats import t_interval
from xkdbench.reporting.tables import (
    POWER_COLUMNS,
    RECONSTRUCTED_NOTE,
    PairedScores,
    compare,
    interval_note,
    reconstructed,
)

log = logging.getLogger(__name__)
VERDICTS = {"A better": "reproduced", "B better": "not reproduced (B better)", "inconclusive": "inconclusive"}
CONTROL_FAILED = "CONTROL FAILED (decided)"
MEASURE_LABELS = {"greedy_score": "score", "greedy_oracle": "oracle", "time_to_target": "time to target (s)"}
COLUMNS = ["claim", "task", "method_a", "method_b", "fraction", "measure", "control", "n_seeds", "n_inputs",
           "seeds_a_better", "mean_difference", "ci95_low", "ci95_high", "interval_covers", "verdict", *POWER_COLUMNS]


def claims_table(config: ExperimentConfig, settings: ReportSettings, results_dir: Path) -> pd.DataFrame:
    """A row per (claim, task) with both models evaluated; a claim with no such task has no row."""
    scores, rows = PairedScores(config, results_dir), []
    for claim in settings.claims:
        for task in claim.tasks:
            if claim.measure in PER_CELL_MEASURES:
                result = _time_comparison(config, results_dir, claim, task)
            else:
                per_seed = scores.per_seed(task, claim.a, claim.b, claim.fraction, claim.measure)
                result = compare(per_seed) if per_seed else None
                if result:
                    result["seeds_a_better"] = sum(pair.iloc[:, 0].mean() > pair.iloc[:, 1].mean()
                                                   for pair in per_seed.values())
            if result:
                rows.append(_row(claim, task, result))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(claim, task: str, result: dict) -> dict:
    verdict = VERDICTS[result["verdict"]]
    if claim.control and verdict != "inconclusive":
        log.warning("A/A control %s vs %s on %s came out %s: the intervals are too narrow",
                    claim.a, claim.b, task, verdict)
        verdict = CONTROL_FAILED
    return {"claim": claim.text, "task": task, "method_a": claim.a, "method_b": claim.b,
            "fraction": claim.fraction, "measure": claim.measure, "control": claim.control,
            **{key: result[key] for key in ("n_seeds", "n_inputs", "seeds_a_better", "mean_difference", "ci95_low",
                                             "ci95_high", "interval_covers")},
            "verdict": verdict, **{key: result.get(key, math.nan) for key in POWER_COLUMNS}}


def _time_comparison(config: ExperimentConfig, results_dir: Path, claim, task: str) -> dict | None:
    """'A takes less time than B to the same validation NLL': paired by seed, t-interval over the seeds;
    None if no seed has both runs' validation logs."""
    keys = {m.name: m.method for m in config.methods}
    times = []
    for seed in config.task_seeds(task):
        curves = [validation_curve(Model(task, name, keys[name], "distilled", claim.fraction, seed)
                                   .directory(results_dir) / "train_log.jsonl") for name in (claim.a, claim.b)]
        a, b = time_to_target(*curves)
        if not (math.isnan(a) or math.isnan(b)):
            times.append((a, b))
    if not times:
        return None
    mean, half, n = t_interval([a - b for a, b in times])
    low, high = mean - half, mean + half  # NaN with one seed: no side is picked
    verdict = "A better" if high < 0 else "B better" if low > 0 else "inconclusive"  # less time is better
    return {"n_seeds": n, "n_inputs": 0, "seeds_a_better": sum(a < b for a, b in times), "mean_difference": mean,
            "ci95_low": low, "ci95_high": high, "interval_covers": "seeds only (one value per run)",
            "verdict": verdict}


def write_claims(table: pd.DataFrame, settings: ReportSettings, out_dir: Path,
                 method_keys: dict[str, str] | None = None) -> list[Path]:
    """claims.csv and claims.md; method_keys (variant name -> method) marks reconstructed methods with †."""
    keys = method_keys or {}
    marked = {n for r in table.itertuples() for n in (r.method_a, r.method_b) if n in keys and reconstructed(keys[n])}

    def label(name: str) -> str:
        return f"{name} †" if name in marked else name

    header = ["claim", "task", "A vs B", "fraction", "by", "seeds A > B", "seeds x inputs", "mean A - B [95% CI]",
              "verdict"]
    body = [[f"{r.claim} (control: must be inconclusive)" if r.control else r.claim, r.task,
             f"{label(r.method_a)} vs {label(r.method_b)}", f"{r.fraction:g}", MEASURE_LABELS[r.measure],
             f"{r.seeds_a_better} of {r.n_seeds}",
             f"{r.n_seeds} x {r.n_inputs}" if r.measure not in PER_CELL_MEASURES else f"{r.n_seeds} runs",
             f"{r.mean_difference:+.4f} [{r.ci95_low:+.4f}, {r.ci95_high:+.4f}]", f"**{r.verdict}**"]
            for r in table.itertuples()]
    per_example = table[~table["measure"].isin(PER_CELL_MEASURES)]
    md = ["# Claims of the source papers, checked\n",
          fmt.markdown(header, body) if body else "No configured claim had both models evaluated.\n",
          f"Greedy decoding. A claim reads \"A scores higher than B\"; its effect is the mean A - B over "
          f"{fmt.count_label(per_example['n_seeds']) if len(per_example) else 0} seeds x "
          f"{fmt.count_label(per_example['n_inputs']) if len(per_example) else 0} test inputs. " + interval_note()
          + " Verdict: reproduced when the interval lies above 0, not reproduced when it lies below 0, "
          "inconclusive otherwise. Seeds A > B: seeds whose mean A exceeds mean B. By score: "
          + "; ".join(f"{task}: {metric}" for task, metric in fmt.PER_EXAMPLE.items())
          + "; by oracle: the oracle score (0-1); by time to target: training seconds until the validation "
          "NLL first reaches the level both runs of a seed reach (the higher of their two lowest values), where "
          "A is better when it takes less (A - B below 0), with a t-interval over the seeds' paired "
          "differences (seeds only: one value per training run); seconds are wall-clock seconds of cells that "
          "may have shared the machine with another job."
          + (" " + RECONSTRUCTED_NOTE if marked else "") + "\n"]
    write_text(out_dir / "claims.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "claims.csv", table), out_dir / "claims.md"]


def power_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and per-example measure: how many claims, their median 95% half-width, and the median
    true difference this study decides with 80% power (from each claim's own variance components), with
    the median components themselves. The time measure, one value per run, is left out."""
    rows = []
    per_example = table[~table["measure"].isin(PER_CELL_MEASURES)]
    groups = [((measure, task), group) for (measure, task), group in per_example.groupby(["measure", "task"], sort=False)]
    # pooled over tasks only where the measure has one scale on every task (the oracle's 0-1)
    groups += [((measure, "all tasks"), group) for measure, group in per_example.groupby("measure", sort=False)
               if measure == "greedy_oracle"]
    groups.sort(key=lambda item: list(MEASURE_LABELS).index(item[0][0]))  # stable: tasks, then all, per measure
    for (measure, task), group in groups:
        half = (group["ci95_high"] - group["ci95_low"]) / 2
        rows.append({"measure": measure, "task": task, "claims": len(group), "n_seeds": int(group["n_seeds"].max()),
                     "n_inputs": int(group["n_inputs"].max()), "median_half_width": half.median(),
                     "median_detectable_effect": group["detectable_effect"].median(),
                     **{f"median_{c}": group[c].median() for c in ("sd_seed", "sd_input", "sd_residual")}})
    return pd.DataFrame(rows, columns=["measure", "task", "claims", "n_seeds", "n_inputs", "median_half_width",
                                       "median_detectable_effect", "median_sd_seed", "median_sd_input",
                                       "median_sd_residual"])


def write_power(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """power.csv and power.md: what the study can detect, per task and measure."""
    header = ["by", "task", "claims", "seeds x inputs", "median 95% half-width", "detectable with 80% power",
              "sd seed / input / residual"]
    body = [[MEASURE_LABELS[r.measure], r.task, str(r.claims), f"{r.n_seeds} x {r.n_inputs}",
             f"{r.median_half_width:.4f}", f"{r.median_detectable_effect:.4f}",
             f"{r.median_sd_seed:.3f} / {r.median_sd_input:.3f} / {r.median_sd_residual:.3f}"]
            for r in table.itertuples()]
    md = ["# Power: what the study can detect\n",
          fmt.markdown(header, body) if body else "No claim had both models evaluated on two or more seeds.\n",
          "Per task and measure, over the claims of claims.md: the median half-width of their 95% intervals, and "
          "the median true difference A - B the study decides with 80% power (a two-sided 5% test with the "
          "t quantiles of seeds - 1 degrees of freedom) given each claim's own variance components, estimated "
          "from its (seed, input) matrix: sd seed (training runs), sd input (the methods' per-input "
          "difference) and sd residual. Smaller effects than the detectable one are often missed: an "
          "inconclusive verdict is no evidence of no difference. By score: "
          + "; ".join(f"{task}: {metric}" for task, metric in fmt.PER_EXAMPLE.items()) + "; by oracle: 0-1.\n"]
    write_text(out_dir / "power.md", "\n".join(md))
    return [fmt.write_csv(out_dir / "power.csv", table), out_dir / "power.md"]
