"""What a finished run leaves behind, field by field: the summary, the saved model's method record and
modules, the optimiser's weight decay, seconds carried across a resume; the seeded data order pinned;
and the rank helpers (shard, rank, broadcast) under a simulated 2-rank group."""
from __future__ import annotations

import json
import time

import pytest
import torch

from tests.conftest import tiny_model
from tests.core.test_trainer import run
from xkdbench.core import distributed
from xkdbench.core.data import StepLoader

LLAMA = pytest.mark.parametrize("family", ["llama"])


@LLAMA
def test_the_summary_holds_exactly_its_fields(tmp_path, tokenizer, family, toy_data):
    started = time.perf_counter()
    student, summary = run(tokenizer, family, toy_data, tmp_path, method="supervised_kd")
    wall = time.perf_counter() - started
    assert summary == json.loads((tmp_path / "train_summary.json").read_text())
    assert set(summary) == {"steps", "seconds", "tokens", "generated_tokens", "teacher_forward_sequences",
                            "teacher_cache_sequences", "examples", "student_parameters"}
    assert summary["steps"] == 4 and summary["examples"] == len(toy_data.prompts)
    assert summary["student_parameters"] == sum(p.numel() for p in student.model.parameters())
    assert summary["teacher_forward_sequences"] == 4 * 8 and summary["generated_tokens"] == 0
    assert 0 < summary["seconds"] <= wall and round(summary["seconds"], 3) == summary["seconds"]
    seconds = [r["seconds"] for r in map(json.loads, (tmp_path / "train_log.jsonl").read_text().splitlines())]
    assert seconds == sorted(seconds) and any(s != int(s) for s in seconds)  # milliseconds, not whole seconds


@LLAMA
def test_the_saved_model_records_its_method_and_modules(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path, method="xkd_div", settings={"student_data_fraction": 0.0})
    record = json.loads((tmp_path / "model" / "xkdbench_method.json").read_text())
    assert record["method"] == "xkd_div" and record["settings"]["student_data_fraction"] == 0.0
    assert sorted(p.name for p in (tmp_path / "model").glob("*.pt"))  # the reward model beside the weights


@LLAMA
def test_the_optimiser_uses_the_configured_weight_decay(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path, stop_after=1, weight_decay=0.3)
    state = torch.load(tmp_path / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.3]


@LLAMA
def test_seconds_carry_across_a_resume(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path, stop_after=2)
    before = [json.loads(line)["seconds"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    _, summary = run(tokenizer, family, toy_data, tmp_path)
    after = [json.loads(line)["seconds"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert after[:2] == before and after == sorted(after) and summary["seconds"] >= before[-1] > 0


def test_the_data_order_is_pinned(tokenizer, toy_data):
    """The committed results depend on this order: epoch e of seed s shuffles with
    torch.Generator().manual_seed(s * 100003 + e)."""
    student = tiny_model(tokenizer, "llama")
    loader = StepLoader(toy_data, student, batch_size=8, grad_accum=1, seed=3)
    n = len(toy_data.prompts)
    expected = [i for epoch in (0, 1)
                for i in torch.randperm(n, generator=torch.Generator().manual_seed(3 * 100_003 + epoch)).tolist()]
    assert n % 8 == 0
    assert [i for step in range(2 * n // 8) for i in loader.step_indices(step)] == expected


# -- the rank helpers under a simulated group ------------------------------------------------------------
@pytest.fixture
def two_ranks(monkeypatch):
    monkeypatch.setattr(distributed.dist, "is_available", lambda: True)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)


def test_rank_and_shard_of_rank_1_of_2(two_ranks, monkeypatch):
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (1, 2, False)
    assert distributed.shard(list(range(8))) == [4, 5, 6, 7]
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    assert distributed.shard(list(range(8))) == [0, 1, 2, 3]
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    with pytest.raises(ValueError, match=r"^training.batch_size: 7 examples per micro-batch do not split over 2 "
                                         r"processes; allowed: a multiple of 2$"):
        distributed.shard(list(range(7)))


def test_broadcast_sends_rank_0s_parameters_and_buffers(two_ranks, monkeypatch):
    sent = []
    monkeypatch.setattr(distributed.dist, "broadcast", lambda tensor, src: sent.append((tensor.shape, src)))
    module = torch.nn.BatchNorm1d(3)  # 2 parameters, 3 buffers
    distributed.broadcast_parameters([module])
    assert sent == [((3,), 0), ((3,), 0), ((3,), 0), ((3,), 0), ((), 0)]


def test_the_context_autocasts_to_bf16_when_asked_on_any_device(tokenizer):
    from xkdbench.config import SamplingConfig
    from xkdbench.core.context import TrainContext

    def context(use_bf16):
        return TrainContext(tiny_model(tokenizer, "llama"), None, SamplingConfig(), max_new_tokens=8,
                            device=torch.device("cpu"), use_bf16=use_bf16, seed=0, total_steps=4, validate_every=2)

    with context(False).autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32  # fp32 unless asked
    with context(True).autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
