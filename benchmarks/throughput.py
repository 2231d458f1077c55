"""Training-step and sampling throughput of the teacher and student of an experiment config.

Runs the suite's own training loop (SFT steps through `xkdbench.core.trainer.train`) on a task's
training data and prints tokens per second, for each model family asked for:

    python benchmarks/throughput.py --config workflows/config/default.yaml --task reasoning --families llama t5
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from xkdbench.config import load_config
from xkdbench.core.data import TrainData
from xkdbench.core.runtime import resolve_device, set_threads
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.evaluation import decode_all
from xkdbench.methods import METHODS, method_config
from xkdbench.models import build_model, train_tokenizer
from xkdbench.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--task", default="reasoning")
    parser.add_argument("--families", nargs="+", default=["llama", "t5"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    cfg = load_config(args.config)
    task_cfg = cfg.task(args.task)
    task = get_task(args.task, source=task_cfg.source, **task_cfg.options)
    tokenizer = train_tokenizer(task.training_texts(), cfg.models.tokenizer.vocab_size)
    examples = list(task.load("train"))
    prompts, targets = [task.prompt(e) for e in examples], [task.target(e) for e in examples]
    device = resolve_device(cfg.device)
    print(f"task={args.task} device={device} threads={torch.get_num_threads()} steps={args.steps}")
    print(f"{'role':8s} {'family':6s} {'params':>9s} {'batch':>5s} {'train tok/s':>12s} {'step ms':>8s} {'sample tok/s':>12s}")
    for family in args.families:
        for role, spec, training in (("teacher", cfg.models.teacher, cfg.training("teacher_training", args.task)),
                                     ("student", cfg.models.student, cfg.training("distill", args.task))):
            model = build_model(dataclasses.replace(spec, family=family), tokenizer, seed=0)
            data = TrainData.from_texts(model, prompts, targets, max_prompt_tokens=task_cfg.max_prompt_tokens,
                                        max_target_tokens=task_cfg.max_target_tokens)
            training = dataclasses.replace(training, steps=args.steps, log_every=args.steps, checkpoint_every=10**9)
            setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), model, data, training, 0, device,
                               precision=cfg.precision)
            with tempfile.TemporaryDirectory() as out:
                summary = train(setup, out)
            # count every position the model computes (prompt + target), as a step costs
            per_step = training.batch_size * training.grad_accum
            rows = [model.encode_prompt(p, task_cfg.max_prompt_tokens) for p in prompts[:64]]
            started = time.perf_counter()
            outputs = decode_all(model, rows, batch_size=64, max_new_tokens=task_cfg.max_target_tokens,
                                 do_sample=True, num_samples=1)
            sample_seconds = time.perf_counter() - started
            generated = sum(len(model.tokenizer(o[0]).input_ids) + 1 for o in outputs)
            print(f"{role:8s} {family:6s} {model.num_parameters():9,d} {per_step:5d} "
                  f"{summary['tokens'] / summary['seconds']:12,.0f} {1000 * summary['seconds'] / args.steps:8.1f} "
                  f"{generated / sample_seconds:12,.0f}")


if __name__ == "__main__":
    main()
