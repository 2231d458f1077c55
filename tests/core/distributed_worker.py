"""Train tiny students in scenarios, in one process or as one rank of `torchrun` (tests/core/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.core.distributed_worker OUT SCENARIOS_JSON

Each scenario trains with the core's `train` into OUT/<name>; a scenario with `stop_after` is trained in
two calls (stopped with a checkpoint, then resumed), as an interrupted run would be.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tests.conftest import tiny_model, toy_pairs
from xkdbench.config import SamplingConfig, TrainingConfig
from xkdbench.core.data import TrainData
from xkdbench.core.distributed import local_device
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.methods import METHODS, method_config
from xkdbench.models import train_tokenizer


def run_scenarios(out: Path, scenarios: list[dict], device: str = "cpu") -> None:
    prompts, targets = toy_pairs(400)
    tokenizer = train_tokenizer(prompts + targets, vocab_size=320)
    prompts, targets = toy_pairs(64)
    for s in scenarios:
        family = s.get("family", "llama")
        student = tiny_model(tokenizer, family, seed=0)
        teacher = tiny_model(tokenizer, family, seed=1, width=48)
        # stand-in teacher outputs (SeqKD data) for the methods that train on them
        data = TrainData.from_texts(student, prompts, targets, max_prompt_tokens=24, max_target_tokens=12,
                                    teacher_outputs=targets[::-1])
        validation = TrainData.from_texts(student, *toy_pairs(16, seed=1), max_prompt_tokens=24, max_target_tokens=12)
        training = TrainingConfig(steps=s.get("steps", 6), batch_size=s.get("batch_size", 16),
                                  grad_accum=s.get("grad_accum", 1), lr=1e-2, warmup_steps=1, log_every=1,
                                  checkpoint_every=100, validate_every=s.get("validate_every", 0))
        setup = TrainSetup(method_cls=METHODS.get(s["method"]),
                           method_config=method_config(s["method"], s.get("settings", {})),
                           student=student, data=data, training=training, seed=s.get("seed", 0),
                           device=local_device(torch.device(device)), precision=s.get("precision", "fp32"),
                           teacher=teacher, max_new_tokens=12, validation=validation,
                           sampling=SamplingConfig(sampling_temperature=s.get("sampling_temperature", 1.0)))
        if s.get("stop_after"):
            train(setup, out / s["name"], stop_after=s["stop_after"])
            setup.student = tiny_model(tokenizer, family, seed=0)  # a fresh process would load it again
        train(setup, out / s["name"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_scenarios(Path(sys.argv[1]), json.loads(sys.argv[2]), *(sys.argv[3:4]))
