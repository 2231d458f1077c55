"""How to spend two cores: one job on one thread, one job on two threads, or two one-thread jobs at once.

Trains a model of the config (the teacher or the student, SFT steps through the suite's own loop) for
--steps steps in child processes, and prints each arrangement's steps per second per job and in total:

    python benchmarks/core_scaling.py --config workflows/config/default.yaml --task reasoning --role teacher

  alone, 1 thread     one job, nothing beside it (the reference);
  alone, N threads    one job with N intra-op threads (what a stage running alone could use);
  N jobs x 1 thread   N identical jobs started together (what Snakemake does with --cores N).

The total throughput of the last arrangement against the first says how much a second core gives to
independent jobs; the second against the first how much it gives to a lone job. Run it with nothing
else on the machine: other jobs take the same cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time


def child(args) -> None:
    """One job: build the model, train --steps SFT steps, print {"seconds": ...} (the steps alone)."""
    import torch

    from xkdbench.config import load_config
    from xkdbench.core.data import TrainData
    from xkdbench.core.runtime import set_threads
    from xkdbench.core.trainer import TrainSetup, train
    from xkdbench.methods import METHODS, method_config
    from xkdbench.models import build_model, train_tokenizer
    from xkdbench.tasks import get_task

    set_threads(args.threads)
    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = get_task(args.task, source=task_cfg.source, **task_cfg.options)
    tokenizer = train_tokenizer(task.training_texts(), cfg.models.tokenizer.vocab_size)
    examples = task.records("train")
    spec = getattr(cfg.models, args.role)
    model = build_model(spec, tokenizer, seed=0)
    data = TrainData.from_texts(model, [task.prompt(e) for e in examples], [task.target(e) for e in examples],
                                max_prompt_tokens=task_cfg.max_prompt_tokens, max_target_tokens=task_cfg.max_target_tokens)
    section = "teacher_training" if args.role == "teacher" else "distill"
    training = dataclasses.replace(cfg.training(section, args.task), steps=args.steps, log_every=args.steps,
                                   checkpoint_every=10**9, validate_every=0)
    setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), model, data, training, 0, torch.device("cpu"),
                       precision="fp32")
    with tempfile.TemporaryDirectory() as out:
        summary = train(setup, out)
    print(json.dumps({"seconds": summary["seconds"], "threads": torch.get_num_threads()}))


def run_jobs(args, jobs: int, threads: int) -> list[float]:
    """Start `jobs` children at once with `threads` threads each; their training seconds."""
    command = [sys.executable, __file__, "--child", "--config", args.config, "--task", args.task, "--role", args.role,
               "--steps", str(args.steps), "--threads", str(threads)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    seconds = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a job failed (exit {process.returncode})")
        seconds.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="workflows/config/default.yaml")
    parser.add_argument("--task", default="reasoning")
    parser.add_argument("--role", choices=["teacher", "student"], default="teacher")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    started = time.perf_counter()
    print(f"{args.role} SFT on {args.task}, {args.steps} steps per job")
    print(f"{'arrangement':22s} {'s per job':>18s} {'steps/s per job':>16s} {'total steps/s':>14s} {'x alone':>8s}")
    reference = None
    for name, jobs, threads in (("alone, 1 thread", 1, 1), (f"alone, {args.cores} threads", 1, args.cores),
                                (f"{args.cores} jobs x 1 thread", args.cores, 1)):
        seconds = run_jobs(args, jobs, threads)
        per_job = [args.steps / s for s in seconds]
        total = sum(per_job)
        reference = reference or total
        print(f"{name:22s} {', '.join(f'{s:.1f}' for s in seconds):>18s} {min(per_job):16.2f} {total:14.2f} "
              f"{total / reference:8.2f}")
    print(f"({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
