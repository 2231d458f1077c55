"""Where one cell's time goes: the seconds of each phase of `xkdbench distill --evaluate`.

Runs one cell of an existing study (its data, teacher, student initialisation and teacher outputs must
be there, e.g. after `snakemake --cores all`) in a child process, exactly as the workflow rule does
(same command, one thread), into a temporary directory, and prints a table of phases:

    python benchmarks/cell_phases.py --results results/default --task reasoning --method gkd_jsd0.9_on

Each phase's time is exclusive: teacher forwards inside a method's loss count as teacher forwards,
not as forward/backward. "process start" is the child's wall-clock before its first statement
(interpreter start), measured by the parent. "Fixed overhead" is everything but the training steps and
the evaluation's decoding; the issue's target is at most 20% of a cell.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

STARTED = time.perf_counter()

# phase -> group, in the order the table prints them
PHASES = {
    "process start": "fixed", "imports": "fixed", "config, data and model loading": "fixed",
    "teacher forwards": "training steps", "sampling": "training steps", "forward/backward": "training steps",
    "optimiser": "training steps", "training loop, other": "training steps",
    "validation NLL": "fixed",
    "evaluation: greedy decoding": "evaluation decoding", "evaluation: sampled decoding": "evaluation decoding",
    "evaluation: scoring": "fixed", "writes": "fixed", "other": "fixed",
}


class PhaseClock:
    """Exclusive wall-clock per phase: a nested phase's time is subtracted from the phase around it."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, seconds spent in nested phases]

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        self._stack.append([name, 0.0])
        try:
            yield
        finally:
            _, nested = self._stack.pop()
            elapsed = time.perf_counter() - start
            self.totals[name] += elapsed - nested
            if self._stack:
                self._stack[-1][1] += elapsed

    def wrap(self, owner, attr: str, name, *, classmethod_=False) -> None:
        """Time every call of owner.attr; `name` may be a function of the call's keyword arguments."""
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.phase(name(kwargs) if callable(name) else name):
                return original(*args, **kwargs)

        setattr(owner, attr, classmethod(lambda cls, *a, **k: timed(*a, **k)) if classmethod_ else timed)


def child(args) -> dict:
    """Run the cell in this process with every phase timed; returns the seconds per phase."""
    clock = PhaseClock()
    with clock.phase("imports"):
        import torch
        import transformers

        import xkdbench.cli as cli
        import xkdbench.core.context as context
        import xkdbench.core.data as data
        import xkdbench.core.mixture_sampling as mixture
        import xkdbench.core.trainer as trainer
        import xkdbench.models as models
        import xkdbench.models.seq2seq as seq2seq
        import xkdbench.stages as stages
        # the package exports a function of the same name: take the module itself
        evaluate = importlib.import_module("xkdbench.evaluation.evaluate")
        import xkdbench.evaluation as evaluation_pkg
    loading = "config, data and model loading"
    for owner, attr in ((stages, "load_config"), (models, "load_model"), (stages, "load_task"),
                        (stages, "split_texts"), (stages, "read_jsonl")):
        clock.wrap(owner, attr, loading)
    clock.wrap(data.TrainData, "from_texts", loading, classmethod_=True)
    clock.wrap(context.TrainContext, "teacher_logits", "teacher forwards")
    clock.wrap(context.TrainContext, "_sample", "sampling")
    clock.wrap(mixture, "sample_teacher_mixed", "sampling")
    clock.wrap(trainer, "backward_step", "forward/backward")
    clock.wrap(torch.optim.AdamW, "step", "optimiser")
    clock.wrap(torch.optim.Optimizer, "zero_grad", "optimiser")
    clock.wrap(torch.nn.utils, "clip_grad_norm_", "optimiser")
    clock.wrap(trainer, "validation_nll", "validation NLL")
    clock.wrap(trainer, "train", "training loop, other")
    clock.wrap(evaluate, "decode_all", lambda kw: "evaluation: " + ("sampled" if kw.get("do_sample") else "greedy")
               + " decoding")
    clock.wrap(evaluate, "evaluate", "evaluation: scoring")
    for owner, attr in ((seq2seq.Seq2SeqLM, "save"), (transformers.PreTrainedModel, "save_pretrained"),
                        (torch, "save"), (stages, "write_json"), (stages, "write_jsonl"), (trainer, "write_json")):
        clock.wrap(owner, attr, "writes")
    # the command imports `evaluate` from the package when it runs: point that name at the timed function
    evaluation_pkg.evaluate = evaluate.evaluate

    results = Path(args.results)
    with tempfile.TemporaryDirectory() as out:
        argv = ["distill", "--config", str(results / "config.yaml"), "--task", args.task, "--method", args.method,
                "--fraction", args.fraction, "--seed", str(args.seed), "--data", str(results / "data" / args.task),
                "--teacher", str(results / "teacher" / args.task / "model"),
                "--student", str(results / "student_init" / args.task / f"seed{args.seed}" / "model"),
                "--teacher-outputs", str(results / "teacher_outputs" / f"{args.task}.jsonl"),
                "--threads", str(args.threads), "--out", out, "--evaluate"]
        cache = results / "teacher_cache" / args.task
        from xkdbench.config import load_config

        if load_config(results / "config.yaml").teacher_cache.enabled and cache.is_dir():  # as the rule passes it
            argv += ["--teacher-cache", str(cache)]
        cli.collect_less()  # as `xkdbench distill` does when it is the process's command
        with clock.phase("other"):
            code = cli.main(argv)
        if code:
            raise SystemExit(f"the cell failed with exit status {code}")
        summary = json.loads((Path(out) / "train_summary.json").read_text())
    return {"phases": dict(clock.totals), "in_process": time.perf_counter() - STARTED,
            "steps": summary["steps"], "teacher_forward_sequences": summary["teacher_forward_sequences"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default", help="a study's results directory")
    parser.add_argument("--task", default="reasoning")
    parser.add_argument("--method", default="gkd_jsd0.9_on")
    parser.add_argument("--fraction", default="1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if not (Path(args.results) / "config.yaml").exists():
        raise SystemExit(f"--results: {args.results!r} has no config.yaml; run the study first")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    phases = report["phases"]
    phases["process start"] = wall - report["in_process"]
    groups: dict[str, float] = defaultdict(float)
    print(f"{args.task} {args.method} f{args.fraction} seed{args.seed}, {args.threads} thread(s): "
          f"{report['steps']} steps, {report['teacher_forward_sequences']} teacher forward sequences, "
          f"{wall:.2f} s wall-clock")
    print(f"| {'phase':32s} | {'seconds':>8s} | {'share':>6s} |")
    print(f"|{'-' * 34}|{'-' * 10}|{'-' * 8}|")
    for name, group in PHASES.items():
        seconds = phases.get(name, 0.0)
        groups[group] += seconds
        print(f"| {name:32s} | {seconds:8.2f} | {seconds / wall:6.1%} |")
    for group, seconds in groups.items():
        print(f"| **{group}**{' ' * (28 - len(group))} | {seconds:8.2f} | {seconds / wall:6.1%} |")


if __name__ == "__main__":
    main()
