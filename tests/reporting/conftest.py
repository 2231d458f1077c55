"""A synthetic results tree with known numbers, and the report built from it once per module.

2 tasks x 3 method variants (sft and two gkd) x 2 fractions x 3 seeds; one cell (reasoning, gkd_jsd09,
fraction 1, seed 2) is missing. Every number is a closed-form function of the cell (see `headline`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xkdbench.config import ExperimentConfig, MethodEntry, TaskConfig, from_dict

TASKS = {"summarization": "rouge2", "reasoning": "accuracy_strict"}
METHODS = [
    {"name": "sft", "method": "sft"},
    {"name": "gkd_default", "method": "gkd"},  # settings missing: the GKD config's defaults
    {"name": "gkd_jsd09", "method": "gkd", "divergence": "jsd", "beta": 0.9, "student_data_fraction": 1.0},
]
FRACTIONS = [0.5, 1.0]
SEEDS = [0, 1, 2]
TEMPERATURES = [0.5, 1.0]
N_INPUTS = 20
MISSING = ("reasoning", "gkd_jsd09", 1.0, 2)
SEED_NOISE = [0.3, -0.2, 0.5]
PAIRS = [["gkd_jsd09", "sft"], ["gkd_jsd09", "student_init"]]


def headline(task: str, model: str, fraction: float = 1.0, seed: int = 0) -> float:
    """The greedy headline metric of a model (teacher is best; gkd_jsd09 best among distilled)."""
    offset = {"teacher": 20.0, "student_init": 0.0, "sft": 3.0, "gkd_default": 4.0, "gkd_jsd09": 6.0}[model]
    value = 10.0 + offset + 4.0 * fraction + SEED_NOISE[seed] * (1 + offset / 10)
    return value if task == "summarization" else value / 100


def oracle(task: str, model: str, fraction: float = 1.0, seed: int = 0) -> float:
    return 0.5 + headline("summarization", model, fraction, seed) / 100


def example_scores(task: str, model: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (greedy_score, greedy_oracle). Against sft, gkd_jsd09 wins inputs 0-4 (+0.1), loses
    5-7 (-0.2) and ties 8-19 (one within 1e-12); its oracle is 0.05 above sft's everywhere."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, N_INPUTS) if task == "summarization" else (rng.uniform(0, 1, N_INPUTS) > 0.5) * 1.0
    base_oracle = rng.uniform(0.2, 0.8, N_INPUTS)
    if model == "gkd_jsd09":
        score = base.copy()
        score[:5] += 0.1
        score[5:8] -= 0.2
        score[8] += 1e-12
        return score, base_oracle + 0.05
    if model == "student_init":
        return base - 0.3 * np.arange(N_INPUTS) / N_INPUTS, base_oracle - 0.1
    return base, base_oracle


def _metrics(task: str, model: str, fraction: float, seed: int) -> dict:
    h, o = headline(task, model, fraction, seed), oracle(task, model, fraction, seed)
    if task == "summarization":
        greedy = {"rouge1": h + 10, "rouge2": h, "rougeL": h + 5, "oracle": o}
    else:
        greedy = {"accuracy_strict": h, "accuracy_flexible": h + 0.05, "valid_steps": 0.9, "oracle": o}
    sampling = {}
    for t in TEMPERATURES:  # hotter: lower quality, more diverse (lower Self-BLEU)
        sampled = {k: v * (1.1 - 0.2 * t) for k, v in greedy.items()}
        sampling[f"{t:g}"] = {**sampled, "self_bleu": 80 - 40 * t - 2 * fraction, "distinct_1": 0.3 * t,
                              "distinct_2": 0.5 * t}
    metrics = {"split": "test", "num_inputs": N_INPUTS, "headline_metric": TASKS[task], "headline": h,
               "greedy": greedy, "sampling": sampling, "seconds": 1.5, "task": task, "checkpoint": "x", "seed": seed}
    if model == "gkd_default":
        metrics["learned_reward"] = {"pooled": {"spearman": 0.25, "p_value": 0.01, "n": 40}}
    return metrics


def _write_model(directory: Path, task: str, model: str, fraction: float, seed: int, index: int) -> None:
    (directory / "eval").mkdir(parents=True)
    (directory / "eval" / "metrics.json").write_text(json.dumps(_metrics(task, model, fraction, seed)))
    scores, oracles = example_scores(task, model, seed)
    records = [{"index": i, "reference": "r", "greedy": "g", "greedy_score": float(s), "greedy_oracle": float(o),
                "samples": {"0.5": ["a", "b"]}} for i, (s, o) in enumerate(zip(scores, oracles, strict=True))]
    if model == "sft":
        records.reverse()  # matched by index, not by line
    (directory / "eval" / "outputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"steps": 30, "seconds": 100.0 * (index + 1) * fraction + seed, "tokens": 1000 * (index + 1),
               "generated_tokens": 500 * index, "teacher_forward_sequences": 64 * index, "examples": 100,
               "student_parameters": 1000}
    (directory / "train_summary.json").write_text(json.dumps(summary))
    # the method's index and the seed set the pace: the lowest NLL (step 20) comes at (10 + seed)(index + 1) s
    log = [{"step": 10 * (i + 1), "loss": 1.0, "seconds": (5.0 * (i + 1) + seed * (i == 1)) * (index + 1),
            "validation_nll": nll}
           for i, nll in enumerate([2.0, 1.5, 1.7])]
    (directory / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def write_results(root: Path) -> None:
    for task in TASKS:
        _write_model(root / "teacher" / task, task, "teacher", 1.0, 0, 0)
        for seed in SEEDS:
            _write_model(root / "student_init" / task / f"seed{seed}", task, "student_init", 1.0, seed, 0)
        for i, method in enumerate(METHODS):
            for fraction in FRACTIONS:
                for seed in SEEDS:
                    if (task, method["name"], fraction, seed) == MISSING:
                        continue
                    directory = root / "cells" / task / method["name"] / f"f{fraction:g}" / f"seed{seed}"
                    _write_model(directory, task, method["name"], fraction, seed, i)


def make_config(**report) -> ExperimentConfig:
    data = {"name": "synthetic", "tasks": {t: {} for t in TASKS}, "methods": METHODS, "fractions": FRACTIONS,
            "seeds": SEEDS, "evaluation": {"sampling_temperatures": TEMPERATURES}, "report": report}
    try:
        return from_dict(ExperimentConfig, data)
    except ImportError:  # the task package is not importable yet: build it without validation
        config = ExperimentConfig(name="synthetic", tasks={t: TaskConfig() for t in TASKS}, fractions=FRACTIONS,
                                  seeds=SEEDS, report=report,
                                  methods=[MethodEntry.from_config(m, "m") for m in METHODS])
        config.evaluation.sampling_temperatures = TEMPERATURES
        return config


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(config, results_dir, out_dir, returned paths) of a report built on the synthetic tree."""
    from xkdbench.reporting import build_report

    root = tmp_path_factory.mktemp("report")
    results, out = root / "results", root / "out"
    write_results(results)
    config = make_config(win_rate_pairs=PAIRS, validation_curves=["sft", "gkd_jsd09"])
    return config, results, out, build_report(config, results, out)
