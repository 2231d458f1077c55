"""Two ranks under torchrun (gloo on CPU) train exactly as one process with the whole batch.

Each rank takes half of every micro-batch; the step's token count and the gradients are summed over
the ranks, so the loss is the token mean over the whole step and the update is the same. The on-policy
case samples at a temperature near 0, so the sequences each rank draws from its own random stream are
the greedy ones in both runs and the comparison isolates the distributed arithmetic (the shared
on-policy coin, the global normalisation); at temperature 1 the ranks draw different samples by design.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.core.distributed_worker import run_scenarios
from xkdbench.core.trainer import read_log

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]

SCENARIOS = [
    # off-policy, 2 micro-batches per step: 2 ranks x 4 examples x 2 == 1 process x 8 x 2
    {"name": "supervised_kd", "method": "supervised_kd", "batch_size": 8, "grad_accum": 2},
    # on-policy coin per step (lambda 0.5), both branches taken in 6 steps
    {"name": "gkd", "method": "gkd", "settings": {"student_data_fraction": 0.5, "divergence": "jsd", "beta": 0.9},
     "batch_size": 16, "sampling_temperature": 1e-4},
    # interrupted after 3 steps and resumed, on every rank
    {"name": "sft_resumed", "method": "sft", "batch_size": 16, "stop_after": 3},
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tests.core.distributed_worker", str(root / "ranks"), json.dumps(SCENARIOS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = [{**s, "stop_after": None} for s in SCENARIOS]
    run_scenarios(root / "single", single)
    return root


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


@pytest.mark.parametrize("name", [s["name"] for s in SCENARIOS])
def test_two_ranks_equal_one_process(runs, name):
    ranks, single = read_log(runs / "ranks" / name / "train_log.jsonl"), read_log(runs / "single" / name / "train_log.jsonl")
    assert [r["step"] for r in ranks] == [r["step"] for r in single] == list(range(1, 7))
    for a, b in zip(ranks, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), (a, b)
        assert a["tokens"] == b["tokens"]  # the global token count, summed over the ranks
        assert a["generated_tokens"] == b["generated_tokens"]
        assert a["teacher_forward_sequences"] == b["teacher_forward_sequences"]
    w_ranks, w_single = weights(runs / "ranks" / name), weights(runs / "single" / name)
    for key in w_single:
        torch.testing.assert_close(w_ranks[key], w_single[key], atol=1e-5, rtol=1e-4)
    summary = json.loads((runs / "ranks" / name / "train_summary.json").read_text())
    assert summary["processes"] == 2


def test_gkd_took_both_branches(runs):
    log = read_log(runs / "single" / "gkd" / "train_log.jsonl")
    generated = [b["generated_tokens"] - a["generated_tokens"] for a, b in zip([{"generated_tokens": 0}, *log], log, strict=False)]
    assert any(g > 0 for g in generated) and any(g == 0 for g in generated)


def test_only_rank_zero_writes(runs):
    run = runs / "ranks" / "sft_resumed"
    assert not (run / "checkpoint").exists()  # removed once the final model is written
    assert sorted(p.name for p in run.iterdir()) == ["model", "train_log.jsonl", "train_summary.json"]
