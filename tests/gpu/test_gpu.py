"""The same core on CUDA: every method family in bf16 autocast, fp32 against the CPU, a whole cell
through the stages, and two nccl ranks when two GPUs are present.

Run on a GPU machine with `pytest -m gpu tests/gpu` (README "GPUs"); without CUDA every test skips.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_model, toy_pairs
from tests.core.distributed_worker import run_scenarios
from xkdbench.core.trainer import read_log

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU machine")]

# one variant per family of method (default settings unless noted)
FAMILIES = {
    "sft": {}, "supervised_kd": {}, "token_divergence": {}, "gkd": {"student_data_fraction": 1.0},
    "minillm": {}, "distillm": {}, "xkd_seq": {}, "xkd_div": {}, "bellman_distill": {}, "amm": {},
    "pbkd_offline": {}, "pbkd_online": {}, "mm_pbkd": {},
}


@pytest.mark.parametrize("method", list(FAMILIES))
def test_every_family_trains_on_cuda_in_bf16(tmp_path, method):
    scenario = {"name": method, "method": method, "settings": FAMILIES[method], "steps": 4, "batch_size": 8,
                "precision": "bf16", "validate_every": 2 if method == "distillm" else 0}
    run_scenarios(tmp_path, [scenario], device="cuda")
    log = read_log(tmp_path / method / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["grad_norm"] > 0 for r in log), log
    assert (tmp_path / method / "model" / "model.safetensors").is_file()


def test_autocast_runs_the_student_in_bf16_on_cuda(tokenizer):
    from xkdbench.config import SamplingConfig
    from xkdbench.core.context import TrainContext
    from xkdbench.core.runtime import use_bf16

    device = torch.device("cuda")
    student = tiny_model(tokenizer, "llama")
    student.model.to(device)
    ctx = TrainContext(student, None, SamplingConfig(), max_new_tokens=8, device=device,
                       use_bf16=use_bf16("auto", device), seed=0)
    prompts, targets = toy_pairs(4)
    batch = student.collate(student.encode_prompts(prompts, 24), student.encode_targets(targets, 12)).to(device)
    assert ctx.use_bf16 and ctx.student_logits(batch).dtype == torch.bfloat16
    assert next(student.model.parameters()).dtype == torch.float32  # master weights stay fp32


@pytest.mark.parametrize("method", ["sft", "gkd"])
def test_cuda_fp32_follows_the_cpu(tmp_path, method):
    """Same seed, fp32 on both: the loss curves agree to float rounding (gkd at a near-zero sampling
    temperature, so both devices draw the greedy sequences)."""
    scenario = {"name": method, "method": method, "steps": 6, "batch_size": 8, "precision": "fp32",
                "sampling_temperature": 1e-4, "settings": {"student_data_fraction": 1.0} if method == "gkd" else {}}
    run_scenarios(tmp_path / "cuda", [scenario], device="cuda")
    run_scenarios(tmp_path / "cpu", [scenario], device="cpu")
    cuda, cpu = (read_log(tmp_path / d / method / "train_log.jsonl") for d in ("cuda", "cpu"))
    assert [r["loss"] for r in cuda] == pytest.approx([r["loss"] for r in cpu], rel=1e-3, abs=1e-4)



def test_a_run_resumed_on_cuda_follows_the_uninterrupted_run(tmp_path):
    """On-policy GKD stopped after 3 of 6 steps and resumed on the GPU (its checkpoint holds device tensors
    and the CUDA generators' states): the losses are the uninterrupted run's, to float rounding. CUDA's
    embedding backward adds atomically in no fixed order, so the weights differ in the last bits; a near-zero
    sampling temperature keeps such bits from changing a drawn token."""
    scenario = {"method": "gkd", "settings": {"student_data_fraction": 1.0}, "steps": 6, "batch_size": 8,
                "precision": "fp32", "sampling_temperature": 1e-4}
    run_scenarios(tmp_path, [{**scenario, "name": "whole"}, {**scenario, "name": "resumed", "stop_after": 3}],
                  device="cuda")
    whole, resumed = (read_log(tmp_path / name / "train_log.jsonl") for name in ("whole", "resumed"))
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-4, abs=1e-5)


def test_the_random_state_carries_the_cuda_generators():
    """What a checkpoint saves (`rng_state`) holds the CUDA generators too, and restoring it replays their
    draws: a resumed run samples on the GPU from where the interrupted one stopped."""
    from xkdbench.core.runtime import rng_state, set_rng_state

    torch.cuda.manual_seed_all(3)
    state = rng_state()
    assert "cuda" in state
    drawn = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(4)
    set_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda"), drawn)


def test_a_teacher_cache_built_on_cuda_in_bf16_matches_the_cpus(tmp_path, tokenizer):
    """The cache build moves the teacher to the GPU and runs it under bf16 autocast there; its exact
    log-probabilities agree with a CPU fp32 build to bf16's precision."""
    from tests.core.test_teacher_cache import IDENTITY, fixed_rows, the_teacher
    from xkdbench.core.data import TrainData
    from xkdbench.core.teacher_cache import TeacherCache, build_teacher_cache

    teacher = the_teacher(tokenizer, "llama")
    data = TrainData.from_texts(teacher, *toy_pairs(16), max_prompt_tokens=24, max_target_tokens=12)
    rows, identity = fixed_rows(data, with_outputs=False), {**IDENTITY, "teacher_outputs": None}
    caches = {}
    for name, device, bf16 in (("cpu", torch.device("cpu"), False), ("cuda", torch.device("cuda"), True)):
        build_teacher_cache(teacher, rows, tmp_path / name, top_k=None, batch_size=8, device=device, use_bf16=bf16,
                            identity=identity)
        caches[name] = TeacherCache.open(tmp_path / name, expect=IDENTITY, mode="exact", top_k=64)
        teacher.model.to("cpu")
    assert json.loads((tmp_path / "cuda" / "manifest.json").read_text())["precision"] == "bf16"
    batch = teacher.collate([p for p, _ in rows], [t for _, t in rows])
    cpu, cuda = (c.log_probs(c.find(batch), batch.target_ids.shape[1]) for c in (caches["cpu"], caches["cuda"]))
    mask = batch.target_mask.bool()
    assert not torch.equal(cpu[mask], cuda[mask])  # bf16 on the GPU, not a copy of the fp32 build
    torch.testing.assert_close(cuda[mask].exp(), cpu[mask].exp(), rtol=0, atol=2e-2)


def test_a_smoke_cell_through_the_stages_on_cuda(tmp_path):
    """Data, tokenizer, teacher, student init, then an on-policy cell with its evaluation, all on the GPU
    with the config's `device: auto, precision: auto` (bf16)."""
    from xkdbench import stages

    config, task = ROOT / "workflows" / "config" / "smoke.yaml", "reasoning"
    data, tok = tmp_path / "data", tmp_path / "tokenizer"
    stages.prepare_data(config, task=task, out=data)
    stages.train_tokenizer(config, task=task, data=data, out=tok)
    stages.train_teacher(config, task=task, data=data, tokenizer=tok, out=tmp_path / "teacher")
    stages.init_student(config, task=task, data=data, tokenizer=tok, out=tmp_path / "student")
    summary = stages.distill(config, task=task, method="gkd_rkl_on", data=data, teacher=tmp_path / "teacher" / "model",
                             student=tmp_path / "student" / "model", out=tmp_path / "cell", evaluate=True)
    assert summary["generated_tokens"] > 0 and summary["teacher_forward_sequences"] > 0
    metrics = json.loads((tmp_path / "cell" / "eval" / "metrics.json").read_text())
    assert metrics["num_inputs"] == 16 and 0 <= metrics["greedy"]["oracle"] <= 1
    info = json.loads((tmp_path / "cell" / "run_info.json").read_text())
    assert info["config"]["precision"] == "auto"


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl with 2 ranks needs two GPUs")
def test_two_nccl_ranks_equal_one_gpu(tmp_path):
    scenarios = [{"name": "supervised_kd", "method": "supervised_kd", "batch_size": 8, "grad_accum": 2,
                  "precision": "fp32"}]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tests.core.distributed_worker", str(tmp_path / "ranks"), json.dumps(scenarios), "cuda"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_scenarios(tmp_path / "single", scenarios, device="cuda")
    ranks, single = (read_log(tmp_path / d / "supervised_kd" / "train_log.jsonl") for d in ("ranks", "single"))
    assert [r["loss"] for r in ranks] == pytest.approx([r["loss"] for r in single], abs=1e-5)
