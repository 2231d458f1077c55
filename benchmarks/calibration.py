"""Calibrate the default study: how well the student initialisation and a few cells score, per setting.

Runs, with the package's own commands (one thread each, as the workflow does), on an existing study's
tokenizer and teacher (e.g. after `snakemake --cores all`):

  1. the config with every `--set key.path=value` applied (YAML values), evaluated on the validation
     split, greedy only (calibration must not look at the test split);
  2. the task's data again, if `--set` changed its options (the warm-up split's size, say); the teacher
     and tokenizer stay the study's, so only the student's side is measured;
  3. the student initialisation for every seed (unless nothing it reads changed: then the study's);
  4. every `--methods` cell at `--fraction`, for every seed;

and prints the greedy oracle and headline metric of each, mean and standard deviation over seeds, with
the training seconds; then, for every pair of the methods, the variance components of their paired
per-example oracle difference (`xkdbench.reporting.stats.Components`) and what they project for a study
of S seeds and I test inputs: the 95% half-width of a claim and the effect it detects with 80% power. For example, a longer warm-up and a 300-step budget at a higher learning rate:

    python benchmarks/calibration.py --study results/default --task translation --seeds 0 1 2 \
        --set student_init.steps=600 --set distill.steps=300 --set distill.lr=0.01 --out /tmp/cal/t1

Reruns reuse what an earlier run of the same --out finished (its outputs are written last).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def apply(config: dict, assignment: str) -> None:
    """key.path=value, the value parsed as YAML; intermediate mappings are created as needed."""
    if "=" not in assignment:
        raise SystemExit(f"--set: expected key.path=value, got {assignment!r}")
    path, value = assignment.split("=", 1)
    keys = path.split(".")
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {path}: {key!r} is not a mapping")
    node[keys[-1]] = yaml.safe_load(value)


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n  log: {log}")
    return time.perf_counter() - started


def xkdbench(*arguments: str, threads: bool = True) -> list[str]:
    return [sys.executable, "-m", "xkdbench", *arguments, *(["--threads", "1"] if threads else [])]


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True, help="an existing study's results directory")
    parser.add_argument("--config", type=Path, help="its config (default: STUDY/config.yaml)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=["sft"], help="method variants of the config")
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    study = args.study.resolve()
    base = yaml.safe_load((args.config or study / "config.yaml").read_text())
    config = copy.deepcopy(base)
    for assignment in args.sets:
        apply(config, assignment)
    config["evaluation"] = {**config.get("evaluation", {}), "split": "validation", "samples_per_input": 0}
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    task, seeds = args.task, args.seeds
    data = study / "data" / task

    task_now, task_before = config["tasks"][task], base["tasks"][task]

    def task_differs(*keys: str) -> bool:
        return any(task_now.get(key) != task_before.get(key) for key in keys)

    # only what the data or the initialisation reads sends them to be redone (a cell's budget does not)
    if task_differs("source", "options"):
        data = out / "data"
        if not (data / "task.json").exists():
            run(xkdbench("prepare-data", "--config", str(config_path), "--task", task, "--out", str(data), threads=False),
                out / "logs" / "prepare_data.log")
    tokenizer, teacher = study / "tokenizer" / task, study / "teacher" / task / "model"
    own_init = data != study / "data" / task or task_differs("student_init", "max_prompt_tokens", "max_target_tokens") \
        or config.get("student_init") != base.get("student_init") or config["models"]["student"] != base["models"]["student"]

    rows: dict[str, dict[str, list[float]]] = {}
    per_example: dict[str, dict[int, list[float]]] = {}  # model -> seed -> greedy oracle per input

    def record(name: str, seed: int, metrics_path: Path, seconds: float | None) -> None:
        metrics = json.loads(metrics_path.read_text())
        row = rows.setdefault(name, {"oracle": [], "headline": [], "seconds": []})
        row["oracle"].append(metrics["greedy"]["oracle"])
        row["headline"].append(metrics["headline"])
        if seconds is not None:
            row["seconds"].append(seconds)
        outputs = [json.loads(line) for line in (metrics_path.parent / "outputs.jsonl").open()]
        per_example.setdefault(name, {})[seed] = [r["greedy_oracle"] for r in sorted(outputs, key=lambda r: r["index"])]

    for seed in seeds:
        init = study / "student_init" / task / f"seed{seed}"
        if own_init:
            init = out / "student_init" / f"seed{seed}"
            if not (init / "train_summary.json").exists():
                run(xkdbench("init-student", "--config", str(config_path), "--task", task, "--data", str(data),
                             "--tokenizer", str(tokenizer), "--seed", str(seed), "--out", str(init)),
                    out / "logs" / f"init_seed{seed}.log")
        init_eval = out / "student_init_eval" / f"seed{seed}"
        if not (init_eval / "metrics.json").exists():
            run(xkdbench("evaluate", "--config", str(config_path), "--task", task, "--data", str(data),
                         "--checkpoint", str(init / "model"), "--seed", str(seed), "--out", str(init_eval)),
                out / "logs" / f"init_eval_seed{seed}.log")
        seconds = json.loads((init / "train_summary.json").read_text()).get("seconds")
        record("init", seed, init_eval / "metrics.json", seconds)
        for method in args.methods:
            cell = out / "cells" / method / f"seed{seed}"
            if not (cell / "eval" / "metrics.json").exists():
                extra = []
                if (study / "teacher_outputs" / f"{task}.jsonl").exists() and data == study / "data" / task:
                    extra += ["--teacher-outputs", str(study / "teacher_outputs" / f"{task}.jsonl")]
                if (study / "teacher_cache" / task).exists() and data == study / "data" / task:
                    extra += ["--teacher-cache", str(study / "teacher_cache" / task)]
                run(xkdbench("distill", "--config", str(config_path), "--task", task, "--method", method,
                             "--fraction", str(args.fraction), "--seed", str(seed), "--data", str(data),
                             "--teacher", str(teacher), "--student", str(init / "model"), "--out", str(cell),
                             "--evaluate", *extra),
                    out / "logs" / f"{method}_seed{seed}.log")
            seconds = json.loads((cell / "train_summary.json").read_text()).get("seconds")
            record(method, seed, cell / "eval" / "metrics.json", seconds)

    print(f"{task}, validation split, greedy, seeds {seeds}; settings: {' '.join(args.sets) or 'the study'}")
    print("| model | oracle (mean ± sd) | headline (mean ± sd) | training s (mean) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        seconds = f"{statistics.mean(row['seconds']):.1f}" if row["seconds"] else "-"
        print(f"| {name} | {summary(row['oracle'])} | {summary(row['headline'])} | {seconds} |")
    if len(seeds) > 1:
        power(per_example, seeds)


def power(per_example: dict[str, dict[int, list[float]]], seeds: list[int]) -> None:
    from xkdbench.reporting.stats import Components

    sizes = [(3, 200), (3, 1000), (5, 500), (5, 1000)]
    print("\nPaired oracle differences A - B: variance components (sd) and, per study size S seeds x I inputs,"
          " the 95% half-width / the effect detected with 80% power")
    print("| A - B | mean | sd seed | sd input | sd residual | " + " | ".join(f"S={s}, I={i}" for s, i in sizes) + " |")
    print("|---|---|---|---|---|" + "---|" * len(sizes))
    names = list(per_example)
    for a_index, a in enumerate(names):
        for b in names[a_index + 1:]:
            x = np.array([np.subtract(per_example[a][seed], per_example[b][seed]) for seed in seeds])
            c = Components.of(x)
            cells = " | ".join(f"{c.half_width(s, i):.3f} / {c.detectable_effect(s, i):.3f}" for s, i in sizes)
            print(f"| {a} - {b} | {x.mean():+.3f} | {c.seed ** 0.5:.3f} | {c.input ** 0.5:.3f} | "
                  f"{c.residual ** 0.5:.3f} | {cells} |")


if __name__ == "__main__":
    main()
