"""Calibrate the default study: how well the student initialisation and a few cells score, per setting.

Runs, with the package's own commands (one thread each, as the workflow does), on an existing study's
tokenizer and teacher (e.g. after `snakemake --cores all`):

  1. the config with every `--set key.path=value` applied (YAML values), evaluated on the validation
     split, greedy only (calibration must not look at the test split);
  2. the task's data again, if `--set` changed its options (the warm-up split's size, say); the teacher
     and tokenizer stay the study's, so only the student's side is measured;
  3. the student initialisation for every seed (unless nothing it reads changed: then the study's);
  4. every `--methods` cell at `--fraction`, for every seed;
  5. with `--fresh N` (embedded tasks), every model above again on N fresh inputs: the task generator's
     next seed draws them, and any that is already in one of the study's splits is dropped, so they are
     held out from every model. The validation split's 100 inputs cannot judge a seed-to-seed sd of
     0.03 (each seed's score has an sd of about 0.05 from the inputs alone), and enlarging the split
     redraws the others (one random stream per task). The embedded generators repeat their short, common
     problems, so dropping the ones the study has already drawn leaves harder inputs than the test split
     holds (reasoning: 219 of 2000, whose answers the initialisation gets right 0.84 of the time, against
     0.55 for the rest); `--fresh-keep-seen` keeps them, for inputs mixed as the test split's are, whose
     gains come closer to the study's (SFT's 200 steps: +0.094 on them, +0.113 without the seen ones,
     +0.089 on the test split; 250 steps: +0.113, +0.127, +0.097; 300 steps: +0.127 as drawn, +0.120 on
     the test split), within the 0.01-0.02 by which any two draws of 2000 differ;

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
import shutil
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
    parser.add_argument("--fresh", type=int, default=0, metavar="N",
                        help="also evaluate every model on N fresh inputs (embedded tasks; see above)")
    parser.add_argument("--fresh-keep-seen", action="store_true",
                        help="keep fresh inputs already in a study split: mixed as the test split is (see above)")
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
    check_fresh(config, task, args.fresh)  # before any work
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

    fresh_dir = "fresh_as_drawn" if args.fresh_keep_seen else "fresh"  # each kind evaluated in its own place
    fresh = fresh_inputs(config, task, data, args.fresh, out / fresh_dir, out / "logs" / f"{fresh_dir}_prepare_data.log",
                         keep_seen=args.fresh_keep_seen) if args.fresh else None

    rows: dict[str, dict[str, list[float]]] = {}
    per_example: dict[str, dict[int, list[float]]] = {}  # model -> seed -> greedy oracle per input
    fresh_rows: dict[str, dict[str, list[float]]] = {}
    fresh_per_example: dict[str, dict[int, list[float]]] = {}

    def record(name: str, seed: int, metrics_path: Path, seconds: float | None, model: Path) -> None:
        _record(rows, per_example, name, seed, metrics_path, seconds)
        if fresh is not None:
            evaluated = out / f"{fresh_dir}_eval" / name / f"seed{seed}"
            if not (evaluated / "metrics.json").exists():
                run(xkdbench("evaluate", "--config", str(config_path), "--task", task, "--data", str(fresh),
                             "--checkpoint", str(model), "--seed", str(seed), "--out", str(evaluated)),
                    out / "logs" / f"{fresh_dir}_eval_{name}_seed{seed}.log")
            _record(fresh_rows, fresh_per_example, name, seed, evaluated / "metrics.json", seconds)


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
        record("init", seed, init_eval / "metrics.json", seconds, init / "model")
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
            record(method, seed, cell / "eval" / "metrics.json", seconds, cell / "model")

    settings = ' '.join(args.sets) or 'the study'
    table(f"{task}, validation split, greedy, seeds {seeds}; settings: {settings}", rows)
    if fresh is not None:
        kept = sum(1 for _ in (fresh / "validation.jsonl").open())
        which = "fresh inputs as drawn (those already in a study split kept)" if args.fresh_keep_seen else "fresh inputs"
        table(f"\n{task}, {kept} {which}, greedy, seeds {seeds}; settings: {settings}", fresh_rows)
    if len(seeds) > 1:  # on the fresh inputs where there are some: more inputs, steadier components
        power(fresh_per_example if fresh is not None else per_example, seeds)


def _record(rows: dict, per_example: dict, name: str, seed: int, metrics_path: Path, seconds: float | None) -> None:
    metrics = json.loads(metrics_path.read_text())
    row = rows.setdefault(name, {"oracle": [], "headline": [], "seconds": []})
    row["oracle"].append(metrics["greedy"]["oracle"])
    row["headline"].append(metrics["headline"])
    if seconds is not None:
        row["seconds"].append(seconds)
    outputs = [json.loads(line) for line in (metrics_path.parent / "outputs.jsonl").open()]
    per_example.setdefault(name, {})[seed] = [r["greedy_oracle"] for r in sorted(outputs, key=lambda r: r["index"])]


def table(title: str, rows: dict) -> None:
    print(title)
    print("| model | oracle (mean ± sd) | headline (mean ± sd) | training s (mean) |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        seconds = f"{statistics.mean(row['seconds']):.1f}" if row["seconds"] else "-"
        print(f"| {name} | {summary(row['oracle'])} | {summary(row['headline'])} | {seconds} |")


def check_fresh(config: dict, task: str, n: int) -> None:
    """--fresh N needs N >= 0 and, for N > 0, an embedded task: only a generator can draw more inputs."""
    if n < 0:
        raise SystemExit(f"--fresh: expected a number of inputs >= 0, got {n}")
    source = config["tasks"][task].get("source", "embedded")
    if n and source != "embedded":
        raise SystemExit(f"--fresh: task {task!r} is not embedded (source {source!r}); "
                         "it has no generator to draw fresh inputs from")


def fresh_inputs(config: dict, task: str, data: Path, n: int, where: Path, log: Path, *, keep_seen: bool = False) -> Path:
    """`where`/data: a copy of the data directory whose validation split is n inputs drawn with the
    generator's next seed, less any whose prompt is already in one of `data`'s splits unless `keep_seen`
    (kept in the order drawn): the generator words answers in several ways, so the same question can come
    with another answer."""
    from xkdbench.tasks import get_task

    fresh = where / "data"
    if (fresh / "validation.jsonl").exists():
        return fresh
    spec = config["tasks"][task]
    options = dict(spec.get("options") or {})
    # the other splits are drawn too (the generator's stream is test, validation, warm-up, train): keep them tiny
    options.update(seed=int(options.get("seed", 0)) + 1, sizes={"train": 10, "warmup": 10, "validation": n, "test": 10})
    draw_config = copy.deepcopy(config)
    draw_config["tasks"][task] = {**spec, "options": options}
    draw_path = where / "draw.yaml"
    draw_path.parent.mkdir(parents=True, exist_ok=True)
    draw_path.write_text(yaml.safe_dump(draw_config, sort_keys=False))
    drawn = where / "drawn"
    run(xkdbench("prepare-data", "--config", str(draw_path), "--task", task, "--out", str(drawn), threads=False), log)
    prompt = get_task(task).prompt
    seen = {prompt(json.loads(line)) for split in data.glob("*.jsonl") for line in split.open()}
    kept = [line for line in (drawn / "validation.jsonl").open() if keep_seen or prompt(json.loads(line)) not in seen]
    staging = fresh.with_name("data.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(data, staging)
    (staging / "validation.jsonl").write_text("".join(kept))
    staging.rename(fresh)  # complete or absent
    return fresh



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
