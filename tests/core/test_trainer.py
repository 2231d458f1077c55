"""The core's guarantees: accumulation invariance, resume equals uninterrupted, determinism."""
from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.core.trainer import TrainSetup, backward_step, lr_factor, train
from xkdbench.integrity import record_files
from xkdbench.methods import METHODS, method_config

CPU = torch.device("cpu")


def run(tokenizer, family, data, out, *, method="sft", settings=None, stop_after=None, seed=0, **training):
    student = tiny_model(tokenizer, family, seed=1)
    teacher = tiny_model(tokenizer, family, seed=2, width=48) if method != "sft" else None
    cfg = TrainingConfig(**{"steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "log_every": 1,
                            "checkpoint_every": 100, **training})
    setup = TrainSetup(METHODS.get(method), method_config(method, settings or {}), student, data, cfg, seed, CPU,
                       teacher=teacher, sampling=SamplingConfig(), max_new_tokens=8)
    summary = train(setup, out, stop_after=stop_after)
    return student, summary


def weights(model):
    return {k: v.clone() for k, v in model.model.state_dict().items()}


def assert_same_weights(a, b, exact=False):
    wa, wb = weights(a), weights(b)
    for key in wa:
        if exact:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], atol=5e-5, rtol=1e-4, msg=key)


ACCUMULATION_CASES = [("sft", {}), ("supervised_kd", {}), ("gkd", {"student_data_fraction": 0.0}),
                      ("token_divergence", {"divergence": "total_variation"}),
                      # AMM normalises by the step's tokens of each part, counted over its micro-batches
                      ("amm", {"adversary": "closed_form", "on_policy_weight": 0.0})]


@pytest.mark.parametrize("method,settings", ACCUMULATION_CASES)
def test_accumulation_invariance_of_the_gradient(tokenizer, family, toy_data, method, settings):
    """One step at batch 8 x accumulation 1 has the same gradient as batch 4 x accumulation 2,
    although the two splits pad their micro-batches to different lengths."""
    grads = []
    for batch_size, accum in ((8, 1), (4, 2)):
        student = tiny_model(tokenizer, family, seed=1)
        ctx = TrainContext(student, tiny_model(tokenizer, family, seed=2, width=48), SamplingConfig(),
                           max_new_tokens=8, device=CPU, use_bf16=False, seed=0)
        impl = METHODS.get(method)(method_config(method, settings), ctx)
        loader = StepLoader(toy_data, student, batch_size=batch_size, grad_accum=accum, seed=0)
        micro = [impl.sequences(ex, 0) for ex in loader.step_examples(0)]
        assert len(micro) == accum
        tokens, totals = backward_step(impl, micro)
        grads.append((tokens, {n: p.grad.clone() for n, p in student.model.named_parameters()}))
    assert grads[0][0] == grads[1][0]
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grad, grads[1][1][name], atol=1e-7, rtol=1e-5, msg=name)


@pytest.mark.parametrize("method,settings", ACCUMULATION_CASES[:2])
def test_accumulation_invariance_of_training(tmp_path, tokenizer, family, toy_data, method, settings):
    """Whole runs agree too (up to Adam's amplification of float rounding in near-zero gradients)."""
    a, _ = run(tokenizer, family, toy_data, tmp_path / "a", method=method, settings=settings, batch_size=8, grad_accum=1)
    b, _ = run(tokenizer, family, toy_data, tmp_path / "b", method=method, settings=settings, batch_size=4, grad_accum=2)
    assert_same_weights(a, b)


# fully on-policy too: the resumed run must continue the sampling stream (a coin at 0.5 may skip it)
@pytest.mark.parametrize("method,settings", [("sft", {}), ("gkd", {"student_data_fraction": 0.5}),
                                             ("gkd", {"student_data_fraction": 1.0})])
def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data, method, settings):
    full, summary = run(tokenizer, family, toy_data, tmp_path / "full", method=method, settings=settings, steps=5)
    run(tokenizer, family, toy_data, tmp_path / "cut", method=method, settings=settings, steps=5, stop_after=2)
    assert (tmp_path / "cut" / "checkpoint" / "model" / "config.json").exists()
    assert not (tmp_path / "cut" / "model").exists(), "an interrupted run must not look finished"
    resumed, resumed_summary = run(tokenizer, family, toy_data, tmp_path / "cut", method=method, settings=settings, steps=5)
    assert_same_weights(full, resumed, exact=True)
    logs = [[json.loads(line) for line in open(tmp_path / d / "train_log.jsonl")] for d in ("full", "cut")]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4, 5]
    for x, y in zip(*logs, strict=False):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
    assert resumed_summary["generated_tokens"] == summary["generated_tokens"]
    assert not (tmp_path / "cut" / "checkpoint").exists()


def test_same_seed_same_weights_different_seed_differs(tmp_path, tokenizer, toy_data, family):
    a, _ = run(tokenizer, family, toy_data, tmp_path / "a", method="gkd", settings={"student_data_fraction": 1.0})
    b, _ = run(tokenizer, family, toy_data, tmp_path / "b", method="gkd", settings={"student_data_fraction": 1.0})
    c, _ = run(tokenizer, family, toy_data, tmp_path / "c", method="gkd", settings={"student_data_fraction": 1.0}, seed=5)
    assert_same_weights(a, b, exact=True)
    assert any(not torch.equal(x, y) for x, y in zip(weights(a).values(), weights(c).values(), strict=False))


def test_log_records_every_field(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path / "r", method="supervised_kd", settings={"hard_label_weight": 0.5})
    records = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "forward_kl", "nll", "lr", "grad_norm", "tokens", "seconds", "teacher_forward_sequences"):
        assert key in records[-1]
    assert records[-1]["loss"] == pytest.approx(records[-1]["forward_kl"] + records[-1]["nll"], rel=1e-5)
    assert records[-1]["teacher_forward_sequences"] == 4 * 8
    assert (tmp_path / "r" / "model" / "config.json").exists()


def test_loss_falls(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path / "r", steps=30, lr=3e-3)
    records = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]


def test_schedules():
    cfg = TrainingConfig(steps=10, warmup_steps=2, schedule="cosine")
    assert lr_factor(0, cfg) == 0.5 and lr_factor(1, cfg) == 1.0
    assert lr_factor(2, cfg) == pytest.approx(1.0) and lr_factor(10, cfg) == pytest.approx(0.0)
    assert lr_factor(6, cfg) == pytest.approx(0.5)
    # a quarter of the way: linear 0.75, cosine (1 + cos(pi / 4)) / 2 (at half-way both are 0.5)
    assert lr_factor(4, TrainingConfig(steps=10, warmup_steps=2, schedule="linear")) == pytest.approx(0.75)
    assert lr_factor(4, cfg) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(9, TrainingConfig(steps=10, warmup_steps=2, schedule="constant")) == 1.0


def test_validation_nll_is_logged_and_reported_to_the_method(tmp_path, tokenizer, family, toy_data):
    seen = []

    class Spy(METHODS.get("sft")):
        def on_validation(self, step, nll):
            seen.append((step, nll))

    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(steps=4, batch_size=8, log_every=3, validate_every=2)
    setup = TrainSetup(Spy, method_config("sft", {}), student, toy_data, cfg, 0, CPU, validation=toy_data)
    train(setup, tmp_path / "r")
    records = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    assert [r["step"] for r in records] == [2, 3, 4]
    assert [s for s, _ in seen] == [2, 4]
    assert [r["validation_nll"] for r in records if "validation_nll" in r] == [nll for _, nll in seen]


def test_resume_survives_a_log_line_cut_short(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=5, stop_after=2)
    with open(tmp_path / "cut" / "train_log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.')  # the process died mid-write
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=5)
    records = [json.loads(line) for line in open(tmp_path / "cut" / "train_log.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]


def test_named_random_streams_are_isolated_and_reproducible(tokenizer, family):
    """A stream's draws depend on (seed, offset, name) only and leave torch's global generator as it was."""
    def ctx(seed=0, stream=0):
        return TrainContext(tiny_model(tokenizer, family), None, SamplingConfig(), max_new_tokens=4, device=CPU,
                            use_bf16=False, seed=seed, stream=stream)

    def draw(context, name):
        with context.random_stream(name):
            return torch.rand(4)

    context = ctx()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = draw(context, "modules")
    assert torch.equal(torch.get_rng_state(), before), "the global generator must be restored"
    assert torch.equal(first, draw(ctx(), "modules"))
    for other in (draw(ctx(), "sampling/1"), draw(ctx(seed=1), "modules"), draw(ctx(stream=1), "modules")):
        assert not torch.equal(first, other)
    c = ctx()
    with c.sampling_stream():
        one = torch.rand(4)
    with c.sampling_stream():  # each sampling call is the next draw of the stream, not a repeat
        two = torch.rand(4)
    assert c.sampling_calls == 2 and not torch.equal(one, two)
    assert ctx().rng.random() != ctx(stream=1).rng.random()  # per-step decisions follow the offset too


@pytest.mark.parametrize("disable_dropout", [True, False])
def test_dropout_is_off_during_training_unless_kept(tmp_path, tokenizer, toy_data, disable_dropout):
    """TRL's default: the loss sees the model in eval mode (no dropout); `disable_dropout: false` keeps it."""
    sft = METHODS.get("sft")
    modes = []

    class Spy(sft):
        def loss(self, batch):
            modes.append(self.ctx.student.model.training)
            return super().loss(batch)

    student = tiny_model(tokenizer, "t5", seed=1)
    cfg = TrainingConfig(steps=2, batch_size=8, warmup_steps=0, disable_dropout=disable_dropout)
    train(TrainSetup(Spy, method_config("sft", {}), student, toy_data, cfg, 0, CPU), tmp_path)
    assert modes == [not disable_dropout] * 2


class _DivergingSFT(METHODS.get("sft")):
    """SFT whose loss (or only its gradient) turns non-finite from the third call of `loss` on."""

    calls, break_gradient = 0, False

    def loss(self, batch):
        terms = super().loss(batch)
        type(self).calls += 1
        if type(self).calls >= 3:
            if self.break_gradient:  # sqrt at 0: the value 0 is finite, its gradient infinite
                terms["sqrt"] = torch.sqrt(terms["nll"] * 0)
            else:
                terms["nll"] = terms["nll"] * float("nan")
        return terms


@pytest.mark.parametrize("break_gradient,named", [(False, "loss term 'nll' is nan"),
                                                  (True, "the gradient norm (every loss term finite) is")])
def test_a_non_finite_loss_stops_the_run_naming_step_and_term(tmp_path, tokenizer, toy_data, break_gradient, named):
    from xkdbench.errors import NonFiniteLossError

    _DivergingSFT.calls, _DivergingSFT.break_gradient = 0, break_gradient
    student = tiny_model(tokenizer, "llama", seed=1)
    cfg = TrainingConfig(steps=5, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=2)
    setup = TrainSetup(_DivergingSFT, method_config("sft", {}), student, toy_data, cfg, 0, CPU)
    with pytest.raises(NonFiniteLossError, match=re.escape(f"step 3: {named}")) as raised:
        train(setup, tmp_path / "run")
    assert str(raised.value).endswith("the update was not applied and the cell stopped (lower training.lr or loss "
                                      "settings, or check the inputs)")
    # the update of step 3 was not applied: the weights are those after step 2, all finite
    assert all(torch.isfinite(p).all() for p in student.model.parameters())
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert not (tmp_path / "run" / "model").exists()  # no final model that looks complete


@pytest.mark.parametrize("family", ["llama"])
def test_resume_restores_a_methods_own_modules(tmp_path, tokenizer, family, toy_data):
    """X-KD's reward head is trained beside the student: an interrupted run resumes it from the checkpoint
    (not from a fresh initialisation), so both the student and the head end as in an uninterrupted run."""
    full, _ = run(tokenizer, family, toy_data, tmp_path / "full", method="xkd_seq", steps=4)
    stopped = run(tokenizer, family, toy_data, tmp_path / "cut", method="xkd_seq", steps=4, stop_after=2)[1]
    assert stopped == {"stopped_at": 2}
    resumed, _ = run(tokenizer, family, toy_data, tmp_path / "cut", method="xkd_seq", steps=4)
    assert_same_weights(full, resumed, exact=True)
    for d in ("full", "cut"):  # the method's own module beside the weights, and nothing else
        assert sorted(p.name for p in (tmp_path / d / "model").glob("*.pt")) == ["reward_head.pt"]
    heads = [torch.load(tmp_path / d / "model" / "reward_head.pt") for d in ("full", "cut")]
    assert heads[0].keys() == heads[1].keys() and heads[0]
    for key in heads[0]:
        assert torch.equal(heads[0][key], heads[1][key]), key


@pytest.mark.parametrize("case", ["beyond_float32", "no_cache_counter"])
@pytest.mark.parametrize("family", ["llama"])
def test_resumed_counters_are_exact_integers(tmp_path, tokenizer, family, toy_data, case):
    """The token and cost counters are integers: a resumed 7B-scale count (past float32's 2**24) stays
    exact, and a checkpoint without the teacher-cache counter (written before it existed) counts 0."""
    big = 2**30 + 1
    run(tokenizer, family, toy_data, tmp_path / "full", steps=3)
    full = json.loads((tmp_path / "full" / "train_summary.json").read_text())
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=3, stop_after=1)
    path = tmp_path / "cut" / "checkpoint" / "trainer_state.pt"
    state = torch.load(path, weights_only=False)
    first_tokens = int(state["tokens"])
    if case == "beyond_float32":
        state["tokens"] = torch.tensor(big)
        state["teacher_cache_sequences"] = torch.tensor(big)
    else:
        del state["teacher_cache_sequences"]
    torch.save(state, path)
    record_files(path.parent)  # the edited checkpoint is whole again (else it is refused as damaged)
    _, summary = run(tokenizer, family, toy_data, tmp_path / "cut", steps=3)
    if case == "beyond_float32":
        assert summary["tokens"] == big + full["tokens"] - first_tokens
        assert summary["teacher_cache_sequences"] == big
        assert type(summary["tokens"]) is int
    else:
        assert summary["teacher_cache_sequences"] == 0
        assert summary["tokens"] == full["tokens"]


@pytest.mark.parametrize("family", ["llama"])
def test_the_teacher_is_frozen_and_in_eval_mode(tmp_path, tokenizer, family, toy_data):
    student = tiny_model(tokenizer, "llama", seed=1)
    teacher = tiny_model(tokenizer, "llama", seed=2, width=48)
    teacher.model.train()
    cfg = TrainingConfig(steps=2, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1)
    setup = TrainSetup(METHODS.get("supervised_kd"), method_config("supervised_kd", {}), student, toy_data, cfg, 0,
                       CPU, teacher=teacher, sampling=SamplingConfig(), max_new_tokens=8)
    before = weights(teacher)
    train(setup, tmp_path / "not" / "yet" / "there")  # the output directory's parents are made too
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert all(p.grad is None for p in teacher.model.parameters())
    for key, value in weights(teacher).items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("family", ["llama"])
def test_the_runs_sampling_settings_reach_its_samples(tmp_path, tokenizer, family, toy_data):
    """On-policy GKD trained with sampling temperature 0.05 ends elsewhere than at the default 1.0."""
    ends = []
    for temperature in (1.0, 0.05):
        student = tiny_model(tokenizer, family, seed=1)
        cfg = TrainingConfig(steps=2, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1)
        setup = TrainSetup(METHODS.get("gkd"), method_config("gkd", {"student_data_fraction": 1.0}), student,
                           toy_data, cfg, 0, CPU, teacher=tiny_model(tokenizer, family, seed=2, width=48),
                           sampling=SamplingConfig(sampling_temperature=temperature), max_new_tokens=8)
        train(setup, tmp_path / str(temperature))
        ends.append(weights(student))
    assert any(not torch.equal(ends[0][k], ends[1][k]) for k in ends[0])



@pytest.mark.parametrize("family", ["llama"])
def test_a_resumed_runs_seconds_count_only_its_training(tmp_path, tokenizer, family, toy_data):
    """The checkpoint stores the seconds trained so far; the resumed summary adds the rest, so it lies
    within the wall time of the two calls (not a clock reading)."""
    started = time.perf_counter()
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=3, stop_after=1)
    _, summary = run(tokenizer, family, toy_data, tmp_path / "cut", steps=3)
    assert 0 < summary["seconds"] <= time.perf_counter() - started


@pytest.mark.parametrize("family", ["llama"])
def test_a_checkpoint_of_another_process_count_is_refused_naming_both(tmp_path, tokenizer, family, toy_data):
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=3, stop_after=1)
    path = tmp_path / "cut" / "checkpoint" / "trainer_state.pt"
    state = torch.load(path, weights_only=False)
    state["rng_ranks"] = [state["rng"], state["rng"]]  # as 2 torchrun ranks write it
    torch.save(state, path)
    record_files(path.parent)
    message = (f"{tmp_path / 'cut' / 'checkpoint'}: written by 2 process(es); resume it with the same number, "
               "or delete it to start over with 1")
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        run(tokenizer, family, toy_data, tmp_path / "cut", steps=3)


@pytest.mark.parametrize("family", ["llama"])
def test_precision_bf16_trains_under_autocast_and_auto_is_fp32_on_the_cpu(tmp_path, tokenizer, family, toy_data):
    """precision reaches the run's context: 'bf16' runs the student's forward under CPU bf16 autocast (its
    first loss differs from fp32's by bf16 rounding only), and 'auto' on a CPU is exactly 'fp32'."""
    def first_loss_and_weights(precision):
        student = tiny_model(tokenizer, family, seed=1)
        cfg = TrainingConfig(steps=2, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1)
        setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), student, toy_data, cfg, 0, CPU,
                           precision=precision)
        train(setup, tmp_path / precision)
        first = json.loads(open(tmp_path / precision / "train_log.jsonl").readline())["loss"]
        return first, weights(student)

    fp32, auto, bf16 = (first_loss_and_weights(p) for p in ("fp32", "auto", "bf16"))
    assert auto[0] == fp32[0] and all(torch.equal(auto[1][k], fp32[1][k]) for k in fp32[1])
    assert bf16[0] != fp32[0] and bf16[0] == pytest.approx(fp32[0], rel=2e-2)  # bf16 keeps 8 bits of mantissa
    assert any(not torch.equal(bf16[1][k], fp32[1][k]) for k in fp32[1])


class _GatedSFT(METHODS.get("sft")):
    """SFT plus a module that only the first step uses (a method's extra module sitting a step out)."""

    made: list = []

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.gate = torch.nn.Linear(3, 1)
        self.initial = self.gate.weight.detach().clone()
        self.step = 0
        _GatedSFT.made.append(self)

    def trainable_modules(self):
        return {"gate": self.gate}

    def sequences(self, examples, step):
        self.step = step
        return super().sequences(examples, step)

    def loss(self, batch):
        terms = super().loss(batch)
        used = self.gate(torch.ones(3)).sum() if self.step == 0 else torch.zeros(())
        return {**terms, "gate": used * torch.ones_like(terms["nll"])}


def test_a_module_left_out_of_a_step_is_not_moved_by_the_optimiser(tmp_path, tokenizer, toy_data):
    """Gradients are reset to None, not zero, so AdamW skips a module no step's loss reached: its momentum
    from step 1 and the weight decay do not move it afterwards (with zeroed gradients they would)."""
    ends, initial = [], []
    for steps in (1, 4):
        _GatedSFT.made.clear()
        cfg = TrainingConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=0, log_every=1, weight_decay=0.1,
                             schedule="constant")
        setup = TrainSetup(_GatedSFT, method_config("sft", {}), tiny_model(tokenizer, "llama", seed=1), toy_data,
                           cfg, 0, CPU)
        train(setup, tmp_path / str(steps))
        ends.append(_GatedSFT.made[-1].gate.weight.detach().clone())
        initial.append(_GatedSFT.made[-1].initial)
    assert torch.equal(initial[0], initial[1]) and not torch.equal(ends[0], initial[0])  # step 1 moved it
    assert torch.equal(ends[0], ends[1])  # steps 2-4 left it where step 1 put it


def test_read_log_drops_a_cut_line_wherever_it_is(tmp_path):
    """A line cut short by an interruption is dropped, and the lines after it (the resumed run's) are kept."""
    from xkdbench.core.trainer import read_log

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.0}\n')
    assert read_log(log) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.0}]
    assert read_log(log, up_to_step=2) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert read_log(tmp_path / "absent.jsonl") == []


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_before_training(tmp_path, tokenizer, toy_data,
                                                                                monkeypatch):
    from xkdbench.core import trainer

    monkeypatch.setattr(trainer.distributed, "world_size", lambda: 3)
    cfg = TrainingConfig(steps=2, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1)
    setup = TrainSetup(METHODS.get("sft"), method_config("sft", {}), tiny_model(tokenizer, "llama", seed=1), toy_data,
                       cfg, 0, CPU)
    with pytest.raises(ConfigError, match=r"^training\.batch_size: 8 does not split over 3 processes; allowed: a "
                                          r"multiple of 3 \(each process takes an equal share of every micro-batch\)$"):
        train(setup, tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == []  # nothing written


def test_a_step_of_one_target_token_is_divided_by_one(tokenizer, toy_data):
    """The loss is summed over a step's target tokens and divided by their count, however few: a step whose
    batch holds a single target token takes that token's loss as it is."""
    student = tiny_model(tokenizer, "llama", seed=1)
    ctx = TrainContext(student, None, SamplingConfig(), max_new_tokens=4, device=CPU, use_bf16=False, seed=0)
    method = METHODS.get("sft")(method_config("sft", {}), ctx)
    examples = StepLoader(toy_data, student, batch_size=1, grad_accum=1, seed=0).step_examples(0)[0]
    batch = method.sequences(examples, 0)
    batch.target_mask.zero_()
    batch.target_mask[0, 0] = 1  # one target token
    tokens, totals = backward_step(method, [batch])
    assert int(tokens) == 1
    logits = student.target_logits(batch)
    expected = torch.nn.functional.cross_entropy(logits[0, :1].float(), batch.target_ids[0, :1])
    torch.testing.assert_close(totals["nll"].detach(), expected.detach(), rtol=1e-5, atol=1e-6)


def test_the_context_gets_the_validation_interval_the_stream_and_the_modules_stream(tmp_path, tokenizer, toy_data):
    """The method's context carries the run's validation interval (0 when the run has no validation data,
    whatever training.validate_every says) and the variant's stream offset; a method's modules are drawn
    from the run's "modules" stream at that offset (`stream_seed`'s contract: adding a module shifts no other
    stream, and the A/A control's modules differ)."""
    from xkdbench.core.runtime import stream_seed, torch_stream

    cfg = TrainingConfig(steps=1, batch_size=8, lr=1e-2, warmup_steps=0, log_every=1, validate_every=2)
    contexts = {}
    for name, validation, stream in (("validated", toy_data, 3), ("none", None, 0)):
        _GatedSFT.made.clear()
        train(TrainSetup(_GatedSFT, method_config("sft", {}), tiny_model(tokenizer, "llama", seed=1), toy_data, cfg,
                         5, CPU, validation=validation, stream=stream), tmp_path / name)
        contexts[name] = (_GatedSFT.made[-1].ctx, _GatedSFT.made[-1].initial)
    (validated, initial), (none, _) = contexts["validated"], contexts["none"]
    assert (validated.validate_every, validated.stream) == (2, 3)
    assert (none.validate_every, none.stream) == (0, 0)
    with torch_stream(stream_seed(5, "modules", 3), CPU):
        expected = torch.nn.Linear(3, 1).weight.detach()
    assert torch.equal(initial, expected)


def test_the_summary_counts_the_target_tokens_trained_on(tmp_path, tokenizer, toy_data):
    """tokens = the gold target tokens of every micro-batch of every step (SFT trains on gold only)."""
    _, summary = run(tokenizer, "llama", toy_data, tmp_path / "run", steps=3, batch_size=8, grad_accum=2)
    loader = StepLoader(toy_data, tiny_model(tokenizer, "llama", seed=1), batch_size=8, grad_accum=2, seed=0)
    expected = sum(int(e.gold.target_mask.sum()) for step in range(3) for e in loader.step_examples(step))
    assert summary["tokens"] == expected > 0


def test_progress_lines_name_the_run_and_follow_a_resume(tmp_path, tokenizer, toy_data, capsys, monkeypatch):
    """With a line due at every step: a start line (naming where a resumed run starts), one per step with
    the step's loss as the log records it, the last one at the end. With a long interval: only the start
    and end lines."""
    def lines(**kwargs):
        student = tiny_model(tokenizer, "llama", seed=1)
        cfg = TrainingConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
        train(TrainSetup(METHODS.get("sft"), method_config("sft", {}), student, toy_data, cfg, 0, CPU, label="cell x"),
              tmp_path / "run", **kwargs)
        # (the resumed run loads its checkpoint, and transformers may print its own loading bar)
        return [line for line in capsys.readouterr().err.splitlines() if line.startswith("[cell x]")]

    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "1e-9")
    first, second = lines(stop_after=2), lines()
    log = [json.loads(line) for line in open(tmp_path / "run" / "train_log.jsonl")]
    assert [line.split(" | ")[0] for line in first + second] == [
        "[cell x] step 0/4: starting", "[cell x] step 1/4 (25%)", "[cell x] step 2/4 (50%)",
        "[cell x] step 2/4, resumed at 2: starting", "[cell x] step 3/4 (75%)", "[cell x] step 4/4 (100%)"]
    shown = [float(line.split(" | ")[1].removeprefix("loss ")) for line in first[1:] + second[1:]]
    assert shown == pytest.approx([r["loss"] for r in log], rel=1e-3)  # printed to 4 significant digits
    monkeypatch.setenv("XKDBENCH_PROGRESS_SECONDS", "1000")
    assert [line.split(" | ")[0] for line in lines()] == ["[cell x] step 0/4: starting", "[cell x] step 4/4 (100%)"]
