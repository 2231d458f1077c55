"""`xkdbench <subcommand>`: every stage of the benchmark as one shell line.

Each subcommand takes the experiment config, the names that pick its cell (task, method, fraction,
seed) and explicit input and output paths, so a Snakemake rule is one line; it parses them and calls
the stage of the same name in `xkdbench.stages` (the Python API). Everything a user can get wrong
(config, names, values, missing files) is checked before any work starts; errors name the field and
the allowed values and exit with status 2.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

from xkdbench import stages
from xkdbench.config import ConfigError, load_config
from xkdbench.errors import NonFiniteLossError
from xkdbench.registry import UnknownNameError


# -- subcommands: each parses nothing itself, calls its stage and prints one line -----------------
def cmd_tasks(args) -> None:
    from xkdbench.tasks import get_task, task_names

    for name in task_names():
        task = get_task(name)
        print(f"{name:15s} headline metric: {task.headline_metric}")


def cmd_methods(args) -> None:
    from xkdbench.methods import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        paper = f"{cls.paper.title} (arXiv {cls.paper.arxiv})" if cls.paper else ""
        print(f"{name:18s} {paper}")


def cmd_check(args) -> None:
    plan = stages.check(args.config)
    if args.json:  # what the workflow needs to know to build the DAG
        print(json.dumps(plan))
        return
    cfg = load_config(args.config)
    limited = sum(m.limited for m in cfg.methods)
    note = f" ({limited} of the variants limited to some tasks or fractions)" if limited else ""
    own_seeds = sum(task.seeds is not None for task in cfg.tasks.values())
    if own_seeds:
        note += f" ({own_seeds} of the tasks with their own seeds)"
    print(f"{args.config}: valid; {len(cfg.tasks)} tasks x {len(cfg.methods)} methods x "
          f"{len(cfg.fractions)} fractions x {len(cfg.seeds)} seeds{note}: {len(plan['cells'])} cells")


def cmd_prepare_data(args) -> None:
    sizes = stages.prepare_data(args.config, task=args.task, out=args.out)
    print(f"prepare-data: {args.task} -> {args.out}: {sizes}")


def cmd_train_tokenizer(args) -> None:
    tokenizer = stages.train_tokenizer(args.config, task=args.task, data=args.data, out=args.out)
    print(f"train-tokenizer: {args.task} vocabulary {len(tokenizer)} -> {args.out}")


def _print_training(command: str, summary: dict) -> None:
    print(f"{command}: {summary['task']} {summary['method']} {summary['examples']} examples, {summary['steps']} steps "
          f"in {summary['seconds']:.1f}s, {summary['teacher_forward_sequences']} teacher forward passes, "
          f"{summary['teacher_cache_sequences']} from the teacher cache -> {summary['model']}")


def cmd_train_teacher(args) -> None:
    _print_training(args.command, stages.train_teacher(args.config, task=args.task, data=args.data,
                                                       tokenizer=args.tokenizer, out=args.out, seed=args.seed,
                                                       threads=args.threads))


def cmd_init_student(args) -> None:
    _print_training(args.command, stages.init_student(args.config, task=args.task, data=args.data,
                                                      tokenizer=args.tokenizer, out=args.out, seed=args.seed,
                                                      threads=args.threads))


def cmd_teacher_outputs(args) -> None:
    done = stages.teacher_outputs(args.config, task=args.task, data=args.data, teacher=args.teacher, out=args.out,
                                  seed=args.seed, threads=args.threads)
    print(f"teacher-outputs: {done['outputs']} {done['decoding']} outputs in {done['seconds']:.1f}s -> {args.out}")


def cmd_teacher_cache(args) -> None:
    manifest = stages.teacher_cache(args.config, task=args.task, data=args.data, teacher=args.teacher, out=args.out,
                                    teacher_outputs=args.teacher_outputs, threads=args.threads)
    megabytes = sum(f["bytes"] for f in manifest["files"].values()) / 1e6
    print(f"teacher-cache: {args.task} {manifest['mode']} (k={manifest['top_k']}), {manifest['rows']} sequences, "
          f"{manifest['positions']} positions, {megabytes:.1f} MB ({manifest['bytes_per_position']:.0f} bytes per "
          f"token) in {manifest['seconds']:.1f}s -> {args.out}")


def cmd_distill(args) -> None:
    from xkdbench.core.distributed import is_main_process

    summary = stages.distill(args.config, task=args.task, method=args.method, fraction=args.fraction, seed=args.seed,
                             data=args.data, teacher=args.teacher, student=args.student,
                             teacher_outputs=args.teacher_outputs, teacher_cache=args.teacher_cache, out=args.out,
                             threads=args.threads, evaluate=args.evaluate,
                             record_divergence=args.record_divergence)
    if summary.get("status") == stages.DIVERGED:
        if is_main_process():
            print(f"distill: {args.task} {args.method} f{args.fraction:g} seed{args.seed} DIVERGED: {summary['error']} "
                  f"(recorded in {Path(args.out) / 'train_summary.json'}; the report lists the cell as diverged)",
                  file=sys.stderr)
        return
    if is_main_process():
        _print_training(args.command, summary)
        if "eval" in summary:
            _print_evaluation(args.task, summary["eval"], Path(args.out) / "eval")


def _print_evaluation(task: str, metrics: dict, out) -> None:
    oracle = f" oracle={metrics['greedy']['oracle']:.3f}" if "oracle" in metrics["greedy"] else ""
    print(f"evaluate: {task} headline={metrics['headline']:.4g}{oracle} -> {out}")


def cmd_evaluate(args) -> None:
    if args.method is not None:  # the cell of an external method: its rule's outputs, checked, then evaluated
        metrics = stages.evaluate_external(args.config, task=args.task, method=args.method, fraction=args.fraction,
                                           data=args.data, checkpoint=args.checkpoint, out=args.out, seed=args.seed,
                                           threads=args.threads)
    else:
        metrics = stages.evaluate_checkpoint(args.config, task=args.task, data=args.data, checkpoint=args.checkpoint,
                                             out=args.out, seed=args.seed, teacher=args.teacher, threads=args.threads)
    _print_evaluation(args.task, metrics, args.out)


def cmd_cell_inputs(args) -> None:
    cell = stages.cell_inputs(args.config, task=args.task, method=args.method, fraction=args.fraction, seed=args.seed,
                              data=args.data, tokenizer=args.tokenizer, teacher=args.teacher, student=args.student,
                              teacher_outputs=args.teacher_outputs, out=args.out)
    print(f"cell-inputs: {args.task} {args.method} f{args.fraction:g} seed{args.seed}: {cell['examples']} examples, "
          f"{len(cell['settings'])} settings for rule {cell['rule']} -> {Path(args.out) / 'cell.json'}")


def cmd_lm_eval(args) -> None:
    scores = stages.lm_eval(args.config, task=args.task, data=args.data, checkpoint=args.checkpoint, out=args.out,
                            threads=args.threads)
    print(f"lm-eval: {args.task} " + " ".join(f"{k}={v:.4g}" for k, v in scores.items()) + f" -> {args.out}")


def cmd_report(args) -> None:
    paths = stages.report(args.config, results=args.results, out=args.out)
    print(f"report: {sum(len(v) for v in paths.values())} files -> {args.out}")


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xkdbench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, func, help: str, *options: str):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        specs = {
            "config": (["--config"], dict(required=True, help="experiment YAML (e.g. workflows/config/smoke.yaml)")),
            "task": (["--task"], dict(required=True, help="task name (see `xkdbench tasks`)")),
            "data": (["--data"], dict(required=True, help="prepared data directory (from prepare-data)")),
            "tokenizer": (["--tokenizer"], dict(required=True, help="tokenizer directory (from train-tokenizer)")),
            "teacher": (["--teacher"], dict(required=True, help="teacher checkpoint directory")),
            "teacher_optional": (["--teacher"], dict(default=None, help="teacher checkpoint, for the learned-reward "
                                                   "diagnostic on teacher samples (methods that learn a reward)")),
            "student": (["--student"], dict(required=True, help="initial student checkpoint directory")),
            "method": (["--method"], dict(required=True, help="method variant name from the config's methods")),
            "method_external": (["--method"], dict(default=None, help="the external method variant whose cell "
                                "CHECKPOINT is: its rule's outputs are checked against the rule contract first, "
                                "and samples drawn only at evaluation.sampled_fractions (give --fraction)")),
            "fraction": (["--fraction"], dict(type=float, default=1.0, help="share of the distillation pool (0, 1]")),
            "teacher_outputs": (["--teacher-outputs"], dict(default=None, help="cached teacher outputs (JSONL)")),
            "teacher_cache": (["--teacher-cache"], dict(default=None, help="the task's teacher cache directory "
                                                        "(from teacher-cache; when the config's teacher_cache is on)")),
            "checkpoint": (["--checkpoint"], dict(required=True, help="model directory to evaluate")),
            "seed": (["--seed"], dict(type=int, default=0, help="random seed (default 0)")),
            "out": (["--out"], dict(required=True, help="output path")),
            "threads": (["--threads"], dict(type=int, default=None, help="CPU threads for torch")),
            "results": (["--results"], dict(required=True, help="the study's results directory")),
            "evaluate": (["--evaluate"], dict(action="store_true", help="then evaluate the distilled student "
                                              "into OUT/eval (sampling only at evaluation.sampled_fractions)")),
            "json": (["--json"], dict(action="store_true", help="print the plan as JSON")),
            "record_divergence": (["--record-divergence"], dict(action="store_true", help="a loss that turns "
                                  "non-finite ends the cell as 'diverged' (recorded, exit status 0) instead of an error")),
        }
        for option in options:
            flags, kwargs = specs[option]
            p.add_argument(*flags, **kwargs)

    add("tasks", cmd_tasks, "list the tasks")
    add("methods", cmd_methods, "list the methods")
    add("check", cmd_check, "validate an experiment config and print the grid size (--json: the plan)",
        "config", "json")
    add("prepare-data", cmd_prepare_data, "materialise a task's splits as local JSONL", "config", "task", "out")
    add("train-tokenizer", cmd_train_tokenizer, "train (or copy a pretrained) tokenizer for a task",
        "config", "task", "data", "out")
    add("train-teacher", cmd_train_teacher, "train the teacher by SFT on the full train split",
        "config", "task", "data", "tokenizer", "seed", "out", "threads")
    add("teacher-outputs", cmd_teacher_outputs, "decode the train split with the teacher once (SeqKD data)",
        "config", "task", "data", "teacher", "seed", "out", "threads")
    add("teacher-cache", cmd_teacher_cache, "the teacher's token distributions on every fixed training sequence, "
        "once per task (config teacher_cache)", "config", "task", "data", "teacher", "teacher_outputs", "out", "threads")
    add("init-student", cmd_init_student, "initialise a student by SFT on the warmup split",
        "config", "task", "data", "tokenizer", "seed", "out", "threads")
    add("distill", cmd_distill, "distil one cell (task x method x fraction x seed)",
        "config", "task", "method", "fraction", "seed", "data", "teacher", "student", "teacher_outputs",
        "teacher_cache", "out", "threads", "evaluate", "record_divergence")
    add("evaluate", cmd_evaluate, "evaluate a checkpoint: greedy + sampled outputs, metrics.json",
        "config", "task", "data", "checkpoint", "teacher_optional", "seed", "out", "threads", "method_external",
        "fraction")
    add("cell-inputs", cmd_cell_inputs, "write what an external method's rule trains one cell from: cell.json "
        "(paths, settings, budget), train.jsonl (the cell's examples), order.json (their order per step)",
        "config", "task", "method", "fraction", "seed", "data", "tokenizer", "teacher", "student", "teacher_outputs",
        "out")
    add("lm-eval", cmd_lm_eval, "export the task for lm-eval and score a checkpoint with lm_eval.simple_evaluate",
        "config", "task", "data", "checkpoint", "out", "threads")
    add("report", cmd_report, "aggregate a study's results into tables and figures", "config", "results", "out")
    return parser


def collect_less() -> None:
    """Keep Python's cyclic garbage collector nearly idle for the rest of this process (one command).

    Importing torch and transformers leaves some 376,000 long-lived tracked objects that every full
    collection walks again; a training step allocates enough containers to set off collections all the time, and
    the interpreter's exit walks them all once more. Freezing what exists (gc.freeze: those objects are
    never scanned) and collecting the youngest generation every 50,000 allocations instead of 700 took
    an off-policy reasoning cell from 49.8 to 43.7 s, its training from 30.9 to 27.4 s, and the exit of
    every job from 0.9 to 0.2 s (benchmarks/cell_phases.py, README "Speed"). Reference counting still
    frees every tensor the moment it is unused, so memory and numbers are unchanged; only cycles wait
    longer. For a process that runs one command, not for a library caller (tests, notebooks)."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # this process's own command line: the `xkdbench` script or `python -m xkdbench`
        collect_less()
    args = build_parser().parse_args(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        args.func(args)
    except (ConfigError, UnknownNameError, FileNotFoundError) as e:
        print(f"xkdbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:  # not a usage error: the run itself diverged
        print(f"xkdbench {args.command}: training diverged: {e}", file=sys.stderr)
        return 1
    return 0
