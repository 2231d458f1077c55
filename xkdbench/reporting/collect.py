"""Read the results tree into one tidy table (a row per model x decoding) and per-example scores.

Layout read (nothing else):

    cells/{task}/{method}/f{fraction:g}/seed{seed}/{train_summary.json, train_log.jsonl, eval/...}
    teacher/{task}/{train_summary.json, eval/metrics.json, eval/outputs.jsonl}
    student_init/{task}/seed{seed}/{train_summary.json, eval/metrics.json, eval/outputs.jsonl}

A model whose eval/metrics.json is absent is missing: it gets no row and is listed by `collect`. One whose
files are present but damaged (metrics.json or train_summary.json that does not parse, outputs.jsonl with
a line cut short or fewer inputs than metrics.json counts) is refused with an IntegrityError naming the
file and the command that rebuilds it: a number from it would look complete and be wrong.
A cell recorded as diverged (its loss turned non-finite; `xkdbench distill --record-divergence`) is listed
as diverged with its error, and gets no row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xkdbench.config import ExperimentConfig
from xkdbench.errors import IntegrityError
from xkdbench.integrity import rebuild_hint
from xkdbench.io import read_json, read_jsonl

# train_summary.json key -> tidy column (names say what is counted).
COST_COLUMNS = {"steps": "train_steps", "seconds": "train_seconds", "tokens": "train_tokens",
                "generated_tokens": "generated_tokens", "teacher_forward_sequences": "teacher_forward_sequences",
                "teacher_cache_sequences": "teacher_cache_sequences"}
ID_COLUMNS = ["task", "method", "method_key", "role", "fraction", "seed", "decoding", "temperature",
              "headline_metric", "headline"]
TAIL_COLUMNS = ["num_inputs", *COST_COLUMNS.values(), "time_to_best_validation", "learned_reward_spearman",
                "eval_seconds"]


@dataclass(frozen=True)
class Model:
    """One evaluated model of the study: a distilled cell or a reference (teacher, student_init)."""

    task: str
    method: str  # variant name, "teacher" or "student_init"
    method_key: str  # registry key; the name itself for references
    role: str  # "distilled" | "teacher" | "student_init"
    fraction: float  # NaN for references
    seed: int

    def directory(self, results_dir: Path) -> Path:
        if self.role == "teacher":
            return results_dir / "teacher" / self.task
        if self.role == "student_init":
            return results_dir / "student_init" / self.task / f"seed{self.seed}"
        return results_dir / "cells" / self.task / self.method / f"f{self.fraction:g}" / f"seed{self.seed}"


def expected_models(config: ExperimentConfig) -> list[Model]:
    """Every model the study should have produced, references first, in config order."""
    models = []
    for task in config.tasks:
        models.append(Model(task, "teacher", "teacher", "teacher", math.nan, 0))
        models += [Model(task, "student_init", "student_init", "student_init", math.nan, s)
                   for s in config.task_seeds(task)]
    keys = {m.name: m.method for m in config.methods}
    for task, name, fraction, seed in config.cells():
        models.append(Model(task, name, keys[name], "distilled", fraction, seed))
    models.sort(key=lambda m: list(config.tasks).index(m.task))  # stable: references, then cells, per task
    return models


def validation_curve(log_path: Path) -> list[tuple[float, float]]:
    """(training seconds, validation NLL) at every logged validation, in step order ([] if none)."""
    if not log_path.is_file():
        return []
    return [(float(r["seconds"]), float(r["validation_nll"])) for r in read_jsonl(log_path)
            if r.get("validation_nll") is not None and r.get("seconds") is not None]


def time_to_target(curve_a: list[tuple[float, float]], curve_b: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds each run takes to first reach the validation NLL both reach: the higher of their two lowest
    values. Comparing times to a common level keeps a run whose NLL only rises (its lowest is its first
    point) from looking fast; (NaN, NaN) if either run logged no validation."""
    if not curve_a or not curve_b:
        return math.nan, math.nan
    target = max(min(nll for _, nll in curve_a), min(nll for _, nll in curve_b))
    return tuple(next(seconds for seconds, nll in curve if nll <= target) for curve in (curve_a, curve_b))


def time_to_best_validation(log_path: Path) -> float:
    """Training seconds at the logged step with the lowest validation NLL (NaN if none was logged)."""
    curve = validation_curve(log_path)
    return min(curve, key=lambda point: point[1])[0] if curve else math.nan  # the first of equal minima


def _damaged(path: Path, what: str) -> IntegrityError:
    return IntegrityError(f"{path} is damaged ({what}); {rebuild_hint(path.parent)}")


def check_model_files(directory: Path) -> None:
    """Raise IntegrityError unless a model's eval/metrics.json, eval/outputs.jsonl and train_summary.json
    (those present) are whole: each parses, and the outputs number the inputs metrics.json counts. A
    metrics.json holding an outcome instead of numbers ("status", e.g. a diverged cell) has no outputs."""
    metrics_path, outputs_path = directory / "eval" / "metrics.json", directory / "eval" / "outputs.jsonl"
    try:
        metrics = read_json(metrics_path)
    except ValueError:
        raise _damaged(metrics_path, "truncated or overwritten: it does not parse as JSON") from None
    if not isinstance(metrics, dict):
        raise _damaged(metrics_path, "not an evaluation's metrics: not a JSON object")
    if "status" in metrics:  # an outcome without numbers (a diverged cell): nothing more to check
        return
    if not {"headline_metric", "greedy"} <= set(metrics):
        raise _damaged(metrics_path, "not an evaluation's metrics: headline_metric or greedy is missing")
    if outputs_path.is_file():
        try:
            records = read_jsonl(outputs_path)
        except ValueError:
            raise _damaged(outputs_path, "a line is cut short or overwritten: it does not parse as JSON lines") from None
        if metrics.get("num_inputs") is not None and len(records) != metrics["num_inputs"]:
            raise _damaged(outputs_path, f"{len(records)} outputs, metrics.json counts {metrics['num_inputs']} inputs: "
                                         "truncated, or from another evaluation")
    summary_path = directory / "train_summary.json"
    if summary_path.is_file():
        try:
            summary = read_json(summary_path)
        except ValueError:
            raise _damaged(summary_path, "truncated or overwritten: it does not parse as JSON") from None
        if not isinstance(summary, dict):
            raise _damaged(summary_path, "not a training summary: not a JSON object")


def _rows(model: Model, directory: Path) -> list[dict]:
    metrics = read_json(directory / "eval" / "metrics.json")
    summary_path = directory / "train_summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    reward = (metrics.get("learned_reward") or {}).get("pooled") or {}
    shared = {
        "num_inputs": metrics.get("num_inputs"),
        **{column: summary.get(key, math.nan) for key, column in COST_COLUMNS.items()},
        "time_to_best_validation": time_to_best_validation(directory / "train_log.jsonl"),
        "learned_reward_spearman": math.nan if reward.get("spearman") is None else reward["spearman"],
        "eval_seconds": metrics.get("seconds", math.nan),
    }
    ident = {"task": model.task, "method": model.method, "method_key": model.method_key, "role": model.role,
             "fraction": model.fraction, "seed": model.seed, "headline_metric": metrics["headline_metric"]}
    decodings = [("greedy", math.nan, metrics.get("greedy", {}))]
    decodings += sorted(((f"sample@{t}", float(t), m) for t, m in metrics.get("sampling", {}).items()),
                        key=lambda d: d[1])
    rows = []
    for decoding, temperature, values in decodings:
        headline = values.get(metrics["headline_metric"], math.nan)
        rows.append({**ident, "decoding": decoding, "temperature": temperature, "headline": headline,
                     **values, **shared})
    return rows


def _diverged(metrics_path: Path) -> str | None:
    """The error of a cell recorded as diverged (`xkdbench distill --record-divergence`), else None."""
    try:
        metrics = read_json(metrics_path)
    except ValueError:
        return None  # damaged: check_model_files names it
    return metrics.get("error", "") if isinstance(metrics, dict) and metrics.get("status") == "diverged" else None


def collect(config: ExperimentConfig, results_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """The tidy table of every model present, and a line per missing file (relative to results_dir)."""
    rows, missing = [], []
    for model in expected_models(config):
        directory = model.directory(results_dir)
        where = directory.relative_to(results_dir).as_posix()
        if not (directory / "eval" / "metrics.json").is_file():
            missing.append(f"{where}: eval/metrics.json missing (model not evaluated)")
            continue
        outcome = _diverged(directory / "eval" / "metrics.json")
        if outcome is not None:  # a recorded outcome, not a score: listed, never averaged
            missing.append(f"{where}: diverged, no scores ({outcome})")
            continue
        for name in ("eval/outputs.jsonl", "train_summary.json"):
            if not (directory / name).is_file():
                missing.append(f"{where}: {name} missing")
        check_model_files(directory)
        rows += _rows(model, directory)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=ID_COLUMNS + TAIL_COLUMNS), missing
    metrics = sorted(c for c in table.columns if c not in ID_COLUMNS + TAIL_COLUMNS)
    return table[ID_COLUMNS + metrics + TAIL_COLUMNS], missing


def per_example_scores(results_dir: Path, model: Model) -> pd.DataFrame | None:
    """Per test input (indexed by `index`): greedy_score and, on embedded tasks, greedy_oracle."""
    path = model.directory(results_dir) / "eval" / "outputs.jsonl"
    if not path.is_file():
        return None
    records = read_jsonl(path)
    columns = ["index", "greedy_score", "greedy_oracle"]
    frame = pd.DataFrame([{k: r.get(k, math.nan) for k in columns} for r in records], columns=columns)
    return frame.set_index("index")
