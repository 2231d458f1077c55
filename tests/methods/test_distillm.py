"""DistiLLM: the adaptive off-policy schedule on scripted validation losses, the replay buffer, state
round trips, and training on both families."""
from __future__ import annotations

import io
import json
import random

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.losses import skew_forward_kl, skew_reverse_kl
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.distillm import AdaptiveSchedule, ReplayBuffer

CPU = torch.device("cpu")


def context(tokenizer, family, *, validate_every=1, total_steps=None):
    return TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                        SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0,
                        validate_every=validate_every, total_steps=total_steps)


def make(tokenizer, family, **settings):
    return METHODS.get("distillm")(method_config("distillm", {"schedule_steps": 10, **settings}), context(tokenizer, family))


def test_threshold_follows_the_rule_on_scripted_validation_losses():
    schedule = AdaptiveSchedule(initial=0.0, increment=0.1, tolerance=0.1)
    losses = [5.00, 4.80, 4.95, 5.05, 5.12, 5.18, 5.30, 5.45, 5.40, 5.56, 4.00]
    # 5.00 is the first reference; 4.80..5.05 stay below 5.00 + 0.1; 5.12 >= 5.10 rises (a drift of
    # +0.06, +0.07 per validation counts: the reference is the loss at the last rise, not the previous
    # one) and becomes the reference; 5.18 < 5.22; 5.30 rises; 5.45 rises; 5.40 < 5.55; 5.56 rises;
    # improving never lowers the threshold
    expected = [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.4, 0.4]
    seen = []
    for loss in losses:
        schedule.observe(loss)
        seen.append(schedule.threshold)
    assert seen == expected
    assert schedule.reference == 5.56


def test_the_schedule_decides_ties_as_the_public_code_does():
    """A validation loss exactly at reference + tolerance raises the threshold (the code's >=); a coin
    exactly at the threshold is gold (u < threshold is student output)."""
    schedule = AdaptiveSchedule(0.0, 0.25, 0.5)
    schedule.observe(3.0)
    schedule.observe(3.5)
    assert schedule.threshold == 0.25
    assert AdaptiveSchedule(0.5).source(0.5, 4, 10, buffer_full=False) == "gold"


def test_the_schedules_defaults_are_the_public_codes():
    """DistiLLM's code starts the threshold at 0 and raises it by 0.1 when the validation loss worsens by
    loss_eps 0.1; the method's settings default to the same."""
    schedule = AdaptiveSchedule()
    assert (schedule.threshold, schedule.increment, schedule.tolerance, schedule.reference) == (0.0, 0.1, 0.1, None)


def test_threshold_is_capped_at_one():
    schedule = AdaptiveSchedule(initial=0.75, increment=0.1, tolerance=0.1)
    for loss in (1.0, 2.0, 3.0, 4.0, 5.0):
        schedule.observe(loss)
    assert schedule.threshold == 1.0


def test_fresh_share_decays_linearly_to_zero():
    assert [AdaptiveSchedule.fresh_share(step, 10) for step in (0, 4, 8, 9)] == pytest.approx([0.9, 0.5, 0.1, 0.0])


def test_source_of_each_step():
    schedule = AdaptiveSchedule(initial=0.5)
    # step 4 of 10: fresh share 0.5, so fresh below 0.25, replay below 0.5 (once the buffer is full), gold above
    assert schedule.source(0.2, 4, 10, buffer_full=True) == "fresh"
    assert schedule.source(0.3, 4, 10, buffer_full=True) == "replay"
    assert schedule.source(0.3, 4, 10, buffer_full=False) == "fresh"
    assert schedule.source(0.6, 4, 10, buffer_full=True) == "gold"
    assert {AdaptiveSchedule(0.0).source(u / 10, 0, 10, True) for u in range(10)} == {"gold"}
    rng, counts = random.Random(0), {"fresh": 0, "replay": 0, "gold": 0}
    for _ in range(20000):  # threshold 0.6, step 2 of 10 (share 0.7): fresh 0.42, replay 0.18, gold 0.4
        counts[AdaptiveSchedule(0.6).source(rng.random(), 2, 10, True)] += 1
    assert [counts[k] / 20000 for k in ("fresh", "replay", "gold")] == pytest.approx([0.42, 0.18, 0.4], abs=0.015)


def test_replay_buffer_keeps_the_newest_rows_within_capacity(tokenizer):
    model = tiny_model(tokenizer, "llama")
    buffer = ReplayBuffer(capacity=5)
    rows = [([1, 2, i], [10 + i] * (1 + i % 3)) for i in range(8)]
    for start in range(0, 8, 3):
        chunk = rows[start:start + 3]
        buffer.add(model.collate([p for p, _ in chunk], [t for _, t in chunk]))
        assert len(buffer) <= 5
    assert buffer.full and list(buffer.rows) == rows[3:]  # padding stripped, order kept, oldest dropped
    batch = buffer.sample(4, random.Random(0), model)
    assert batch.size == 4 and int(batch.target_mask.sum()) > 0
    drawn = {tuple(ids[m.bool()].tolist()) for ids, m in zip(batch.target_ids, batch.target_mask, strict=True)}
    assert drawn <= {tuple(t) for _, t in rows[3:]}
    assert buffer.sample(9, random.Random(0), model).size == 5  # never more rows than it holds


def test_state_round_trips_through_a_checkpoint(tokenizer, family, toy_data):
    # threshold 1 and T = 3: fresh generations until the buffer is full, then (fresh share 0 at step 2) replay
    impl = make(tokenizer, family, initial_threshold=1.0, replay_buffer_size=12, schedule_steps=3)
    loader = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0)
    for step in range(2):
        assert impl.source(step) == "fresh"
        impl.sequences(loader.step_examples(step)[0], step)
    impl.on_validation(2, 3.0), impl.on_validation(4, 3.5)
    assert len(impl.buffer) == 12 and impl.schedule.reference == 3.5
    saved = io.BytesIO()
    torch.save(impl.state_dict(), saved)
    again = make(tokenizer, family, initial_threshold=1.0, replay_buffer_size=12, schedule_steps=3)
    again.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=False))
    assert again.state_dict() == impl.state_dict()
    again.ctx.rng.setstate(impl.ctx.rng.getstate())
    a, b = (m.sequences(loader.step_examples(2)[0], 2) for m in (impl, again))
    assert impl.source(2) == "replay" and torch.equal(a.target_ids, b.target_ids)


def test_the_schedule_takes_the_settings_and_one_coin_per_step(tokenizer, family):
    """The schedule starts from the settings; each step draws one coin from the run's decision stream,
    the first time its source is asked for (asking again within the step draws nothing)."""
    impl = make(tokenizer, family, initial_threshold=0.5, threshold_increment=0.2, loss_tolerance=0.05)
    schedule = impl.schedule
    assert (schedule.threshold, schedule.increment, schedule.tolerance) == (0.5, 0.2, 0.05)
    reference = random.Random()
    reference.setstate(impl.ctx.rng.getstate())
    for step in range(6):
        expected = schedule.source(reference.random(), step, 10, impl.buffer.full)
        assert impl.source(step) == expected and impl.source(step) == expected
    assert impl.ctx.rng.getstate() == reference.getstate()
    resumed = make(tokenizer, family, initial_threshold=0.5)  # a run resumed after step 0 first asks at step 1
    reference.setstate(resumed.ctx.rng.getstate())
    assert resumed.source(1) == resumed.schedule.source(reference.random(), 1, 10, False)
    assert resumed.ctx.rng.getstate() == reference.getstate()


def test_loss_is_the_chosen_skew_divergence(tokenizer, family, toy_data):
    for name, fn in (("skew_forward_kl", skew_forward_kl), ("skew_reverse_kl", skew_reverse_kl)):
        impl = make(tokenizer, family, divergence=name, alpha=0.2)
        batch = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0].gold
        expected = fn(impl.ctx.student.target_logits(batch), impl.ctx.teacher.target_logits(batch), alpha=0.2)
        torch.testing.assert_close(impl.loss(batch)[name], expected)


def run(tokenizer, family, data, out, *, steps, stop_after=None, **settings):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100,
                         validate_every=1)
    settings = {"schedule_steps": steps, "initial_threshold": 0.5, "replay_buffer_size": 8, **settings}
    setup = TrainSetup(METHODS.get("distillm"), method_config("distillm", settings), student, data, cfg, 0, CPU,
                       teacher=tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(),
                       max_new_tokens=8, validation=TrainData(data.prompts[:16], data.targets[:16]))
    return student, train(setup, out, stop_after=stop_after)


def test_training_runs_on_both_families(tmp_path, tokenizer, family, toy_data):
    divergence = {"llama": "skew_forward_kl", "t5": "skew_reverse_kl"}[family]
    _, summary = run(tokenizer, family, toy_data, tmp_path / "r", steps=4, divergence=divergence)
    records = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor([r["loss"], r[divergence], r["grad_norm"]])).all() for r in records)
    assert summary["generated_tokens"] > 0


@pytest.mark.parametrize("family", ["llama"])  # the method state is the same for both families
def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data):
    full, summary = run(tokenizer, family, toy_data, tmp_path / "full", steps=5)
    run(tokenizer, family, toy_data, tmp_path / "cut", steps=5, stop_after=3)
    resumed, resumed_summary = run(tokenizer, family, toy_data, tmp_path / "cut", steps=5)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    logs = [[json.loads(line) for line in open(tmp_path / d / "train_log.jsonl")] for d in ("full", "cut")]
    for x, y in zip(*logs, strict=True):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
    assert resumed_summary["generated_tokens"] == summary["generated_tokens"]


def test_refuses_a_run_whose_schedule_cannot_move_or_end(tokenizer):
    config = method_config("distillm", {})
    with pytest.raises(ConfigError, match=r"^distill\.validate_every: 0 is not allowed for distillm; allowed: >= 1 "
                                          r"\(its adaptive schedule moves only on validation losses\)$"):
        METHODS.get("distillm")(config, context(tokenizer, "llama", validate_every=0, total_steps=10))
    with pytest.raises(ConfigError, match=r"^schedule_steps: distillm needs the run's step count for its "
                                          r"fresh-generation decay; set schedule_steps to the run's distill\.steps$"):
        METHODS.get("distillm")(config, context(tokenizer, "llama"))
    assert METHODS.get("distillm")(config, context(tokenizer, "llama", validate_every=5, total_steps=10)).total_steps == 10


@pytest.mark.parametrize("settings,field", [({"divergence": "forward_kl"}, "divergence"), ({"alpha": 1.5}, "alpha"),
                                            ({"replay_buffer_size": 0}, "replay_buffer_size"),
                                            ({"initial_threshold": -0.1}, "initial_threshold")])
def test_bad_settings_are_refused(settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config("distillm", settings, "config.methods[0].settings")
