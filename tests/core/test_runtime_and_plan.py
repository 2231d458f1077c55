"""Small pieces of the core that every run passes through: the device and thread settings, the torchrun
detection, which variants read the teacher cache (and which tasks get one), and the fingerprints that
tie a cache to its teacher and tokenizer."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from xkdbench.config import ExperimentConfig, from_dict
from xkdbench.core import distributed
from xkdbench.core.runtime import resolve_device, set_threads
from xkdbench.core.teacher_cache import (
    cache_plan,
    teacher_fingerprint,
    tokenizer_fingerprint,
    variant_uses_cache,
)


# -- device, threads, torchrun ----------------------------------------------------------------------------
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto")  # the default is the study default, auto
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="^device: 'cuda' was asked for but no CUDA device is available; "
                                               "use 'auto' or 'cpu'$"):
            resolve_device("cuda")


def test_set_threads_sets_torch_and_openmp_and_none_leaves_them(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        torch.set_num_threads(before)
        set_threads(None)
        assert torch.get_num_threads() == before
        set_threads(0)  # 0 (not given on the command line) is "leave it"
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("world_size,launched", [(None, False), ("1", False), ("2", True), ("8", True)])
def test_launched_by_torchrun_reads_world_size(monkeypatch, world_size, launched):
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert distributed.launched_by_torchrun() is launched


def test_local_device_joins_the_process_group_once_under_torchrun(monkeypatch):
    """One process cannot run a 2-rank group (tests/core/test_distributed.py runs real ones under torchrun);
    here the group's start is recorded instead: gloo on CPU, and not again once started."""
    started = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: started.append(backend))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(started))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu") and started == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
    assert started == ["gloo"]


def test_a_cuda_rank_takes_the_gpu_of_its_local_rank_and_nccl(monkeypatch):
    started, chosen = [], []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: started.append(backend))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(started))
    monkeypatch.setattr(distributed.torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 3)
    assert chosen == [torch.device("cuda", 3)] and started == ["nccl"]


# -- which variants read the teacher cache ---------------------------------------------------------------
def study(mode="exact", methods=None) -> ExperimentConfig:
    methods = methods or [
        {"name": "sft", "method": "sft"},
        {"name": "kd", "method": "supervised_kd", "tasks": ["translation"]},
        {"name": "seqkd", "method": "seqkd", "tasks": ["summarization"]},
        {"name": "gkd_on", "method": "gkd", "student_data_fraction": 1.0, "tasks": ["summarization"]},
        {"name": "gkd_seq", "method": "gkd", "student_data_fraction": 0.0, "seq_kd": True, "tasks": ["reasoning"]},
    ]
    return from_dict(ExperimentConfig, {"name": "s", "tasks": {"summarization": {}, "translation": {}, "reasoning": {}},
                                        "methods": methods, "teacher_cache": {"mode": mode}})


def test_variants_that_ask_the_teacher_about_fixed_sequences_read_the_cache():
    cfg = study()
    uses = {e.name: variant_uses_cache(cfg, e) for e in cfg.methods}
    # sft and seqkd never ask the teacher; GKD fully on-policy asks about its own samples only
    assert uses == {"sft": False, "kd": True, "seqkd": False, "gkd_on": False, "gkd_seq": True}
    live = study(mode="live")
    assert not any(variant_uses_cache(live, e) for e in live.methods)


def test_an_external_variant_never_reads_the_cache(tmp_path, monkeypatch):
    """An external method (a Snakemake rule of its own, declared in the working directory) asks the teacher
    nothing through the suite: no cache, even where the suite's methods would read one."""
    rules = tmp_path / "workflows" / "rules" / "external"
    rules.mkdir(parents=True)
    (rules / "other_trainer.smk").write_text("")
    (rules / "other_trainer.yaml").write_text("rule: other_trainer\ndescription: a trainer of its own\nsettings: {}\n")
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(ExperimentConfig, {"name": "s", "tasks": {"translation": {}}, "methods": [
        {"name": "theirs", "method": "external", "rule": "other_trainer"}], "teacher_cache": {"mode": "top_k"}})
    assert cfg.teacher_cache.enabled and cfg.methods[0].external
    assert variant_uses_cache(cfg, cfg.methods[0]) is False
    assert cache_plan(cfg) == {}


def test_the_cache_plan_names_tasks_with_a_reader_and_whether_it_holds_seqkd_outputs():
    # summarization: seqkd trains on teacher outputs but no variant reads the cache: no cache
    assert cache_plan(study()) == {"translation": {"teacher_outputs": False}, "reasoning": {"teacher_outputs": True}}
    assert cache_plan(study(mode="live")) == {}


# -- fingerprints --------------------------------------------------------------------------------------------
def test_teacher_fingerprint_covers_weights_and_config_only(tmp_path):
    model = tmp_path / "teacher"
    model.mkdir()
    config = b'{"d_model": 8}'
    (model / "config.json").write_bytes(config)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "tokenizer.json").write_text("{}")
    config_sha, weights_sha = hashlib.sha256(config).hexdigest(), hashlib.sha256(b"weights").hexdigest()
    lines = f"config.json:{config_sha}\nmodel.safetensors:{weights_sha}\n"
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert teacher_fingerprint(model) == expected
    (model / "tokenizer.json").write_text('{"other": 1}')  # not the teacher's weights
    assert teacher_fingerprint(model) == expected
    (model / "training_args.bin").write_bytes(b"args")  # a .bin that is not a PyTorch weight file
    assert teacher_fingerprint(model) == expected
    (model / "pytorch_model.bin").write_bytes(b"more")
    assert teacher_fingerprint(model) != expected
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        teacher_fingerprint(model)


def test_tokenizer_fingerprint_is_the_meaning_of_ids(tokenizer):
    import copy

    same = copy.deepcopy(tokenizer)
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tokenizer)
    other_pad = copy.deepcopy(tokenizer)
    other_pad.pad_token = other_pad.convert_ids_to_tokens(5)
    assert tokenizer_fingerprint(other_pad) != tokenizer_fingerprint(tokenizer)
    grown = copy.deepcopy(tokenizer)
    grown.add_tokens(["zzzz-new-token"])
    assert tokenizer_fingerprint(grown) != tokenizer_fingerprint(tokenizer)


def test_gather_objects_collects_one_object_per_rank(monkeypatch):
    assert distributed.gather_objects({"x": 1}) == [{"x": 1}]  # one process: no group
    calls = []

    def all_gather_object(out, obj):  # what gloo does with 3 ranks, this process being rank 0
        calls.append(len(out))
        out[:] = [obj, "rank 1", "rank 2"]

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    monkeypatch.setattr(distributed.dist, "all_gather_object", all_gather_object)
    assert distributed.gather_objects("rank 0") == ["rank 0", "rank 1", "rank 2"] and calls == [3]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_gather_object", lambda out, obj: out.__setitem__(1, "other"))
    assert distributed.gather_objects("mine") == [None, "other"]


def test_each_rank_samples_from_its_own_stream_and_rank_0_from_the_single_processs(monkeypatch, tokenizer):
    """The k-th on-policy draw of rank r uses stream `sampling/k/rank<r>`; rank 0's is `sampling/k`, the
    stream a single process uses, so a 1-rank run is the single-process run."""
    from tests.conftest import tiny_model
    from tests.core.test_teacher_cache import context
    from xkdbench.core.runtime import stream_seed

    ctx = context(tiny_model(tokenizer, "llama"), None)
    drawn = {}
    for rank in (0, 1, 0):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        with ctx.sampling_stream():
            drawn.setdefault(rank, []).append(torch.randint(1 << 30, ()).item())
    expected = {0: [stream_seed(0, "sampling/1"), stream_seed(0, "sampling/3")],
                1: [stream_seed(0, "sampling/2/rank1")]}
    for rank, seeds in expected.items():
        assert drawn[rank] == [torch.randint(1 << 30, (), generator=torch.Generator().manual_seed(s)).item()
                               for s in seeds]


def test_gradients_are_summed_over_ranks_and_missing_ones_filled(monkeypatch):
    """Two ranks, simulated: the other rank's flags and gradients are what all_reduce adds. A parameter
    with a gradient on both ranks gets the sum; on the other rank only, that rank's (zeros here first);
    on neither, none. The last parameter, of another shape, reads its part of the flat buffer after both."""
    both, other_only, neither = (torch.nn.Parameter(torch.zeros(2, 2)) for _ in range(3))
    last = torch.nn.Parameter(torch.zeros(3))
    both.grad, last.grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([100.0, 200.0, 300.0])
    other = {"flags": torch.tensor([1.0, 1.0, 0.0, 1.0]),
             "grads": [torch.full((2, 2), 10.0), torch.full((2, 2), 0.5), torch.tensor([1.0, 2.0, 3.0])]}
    reduced = []

    def all_reduce(tensor, op):
        reduced.append(op)
        if op == distributed.dist.ReduceOp.MAX:
            tensor.copy_(torch.maximum(tensor, other["flags"]))
        else:
            tensor.add_(torch.cat([g.reshape(-1) for g in other["grads"]]))

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    distributed.sum_gradients([both, other_only, neither, last])
    assert torch.equal(both.grad, torch.tensor([[11.0, 12.0], [13.0, 14.0]]))
    assert torch.equal(other_only.grad, torch.full((2, 2), 0.5)) and neither.grad is None
    assert torch.equal(last.grad, torch.tensor([101.0, 202.0, 303.0]))
    assert reduced == [distributed.dist.ReduceOp.MAX, distributed.dist.ReduceOp.SUM]
    only = torch.nn.Parameter(torch.zeros(3))  # a model of one parameter
    only.grad = torch.ones(3)
    other.update(flags=torch.tensor([1.0]), grads=[torch.ones(3)])
    distributed.sum_gradients([only])
    assert torch.equal(only.grad, torch.full((3,), 2.0))


@pytest.mark.parametrize("precision,device,expected", [
    ("bf16", "cpu", True), ("auto", "cpu", False), ("auto", "cuda", True), ("fp32", "cuda", False),
    ("fp32", "cpu", False), ("bf16", "cuda", True),
])
def test_bf16_autocast_is_asked_for_or_automatic_on_cuda_only(precision, device, expected):
    from xkdbench.core.runtime import use_bf16

    assert use_bf16(precision, torch.device(device)) is expected
