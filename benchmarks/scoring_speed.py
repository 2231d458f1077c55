"""Seconds of evaluation scoring for one cell's outputs, per task.

Re-scores the outputs a finished cell wrote (``cells/<task>/<method>/f1/seed<seed>/eval/outputs.jsonl``)
exactly as ``xkdbench.evaluation.evaluate`` scores them, and prints three wall-clock times per task:

- greedy: ``task.score``, ``task.example_scores`` and ``task.oracle_score`` of the greedy outputs;
- samples: ``task.score`` of the samples of every temperature;
- diversity: Self-BLEU and distinct-1/2 of the samples of every temperature.

The scoring libraries (sacrebleu, rouge-score, nltk) are imported first and timed on their own line, so
the first task's numbers do not include them.

    python benchmarks/scoring_speed.py results/default --method sft --seed 0

Run it on an otherwise idle machine, or run the versions to compare back to back: the times are
wall-clock, so load from other processes shows up in them.
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from xkdbench.config import load_config
from xkdbench.evaluation.diversity import distinct_n_per_input, self_bleu
from xkdbench.io import read_jsonl
from xkdbench.stages import load_task

TASKS = ("translation", "summarization", "reasoning")
LIBRARIES = ("sacrebleu", "rouge_score.rouge_scorer", "nltk.stem.porter")


def score_cell(task, examples: list[dict], records: list[dict]) -> dict[str, float]:
    """Seconds of each scoring phase for one cell's records (the evaluation's calls, in its order)."""
    seconds = {}
    greedy = [record["greedy"] for record in records]
    start = time.perf_counter()
    task.score(greedy, examples)
    task.example_scores(greedy, examples)
    if task.has_oracle:
        for example, output in zip(examples, greedy, strict=True):
            task.oracle_score(example, output)
    seconds["greedy"] = time.perf_counter() - start

    sampled = [record for record in records if "samples" in record]
    temperatures = list(sampled[0]["samples"]) if sampled else []
    seconds["samples"] = seconds["diversity"] = 0.0
    for temperature in temperatures:
        samples = [record["samples"][temperature] for record in sampled]
        flat = [text for per_input in samples for text in per_input]
        repeated = [examples[record["index"]] for record in sampled for _ in record["samples"][temperature]]
        start = time.perf_counter()
        task.score(flat, repeated)
        seconds["samples"] += time.perf_counter() - start
        start = time.perf_counter()
        self_bleu(samples)
        distinct_n_per_input(samples, 1)
        distinct_n_per_input(samples, 2)
        seconds["diversity"] += time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="results/default", help="a study's results directory")
    parser.add_argument("--method", default="sft")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--json", help="also write the seconds to this file")
    args = parser.parse_args()

    results = Path(args.results)
    cfg = load_config(results / "config.yaml")
    start = time.perf_counter()
    for library in LIBRARIES:
        importlib.import_module(library)
    table = {"imports": time.perf_counter() - start}
    print(f"imports of the scoring libraries: {table['imports']:.2f} s")
    print(f"{'task':<15}{'greedy':>10}{'samples':>10}{'diversity':>11}{'total':>10}   (seconds)")
    for name in args.tasks:
        outputs = results / "cells" / name / args.method / "f1" / f"seed{args.seed}" / "eval" / "outputs.jsonl"
        task = load_task(cfg, name, str(results / "data" / name))
        examples = task.records("test")
        records = read_jsonl(outputs)
        seconds = score_cell(task, examples, records)
        table[name] = seconds
        print(f"{name:<15}{seconds['greedy']:>10.2f}{seconds['samples']:>10.2f}{seconds['diversity']:>11.2f}"
              f"{sum(seconds.values()):>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
