"""PbKD (reconstructed): Bradley-Terry, z-scores and RLOO against direct formulas, the reward model, the
reward and policy steps, the confidence-set record against an independent fit, offline = online with one
round over a whole run, the learned reward, and resume."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.losses import reverse_kl
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.pbkd import RewardModel
from xkdbench.methods.preference import PreferenceRounds, bradley_terry_loglik, rloo_advantages, zscore
from xkdbench.models import load_model
from xkdbench.stages import learned_reward_of

CPU = torch.device("cpu")


# -- pure functions -------------------------------------------------------------------------------
def test_bradley_terry_against_the_formula_and_logsigmoid():
    preferred = torch.tensor([2.0, -1.0, 0.0, 30.0, -30.0])
    rejected = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    got = bradley_terry_loglik(preferred, rejected)
    direct = [math.log(1 / (1 + math.exp(-(w - r)))) for w, r in zip(preferred.tolist(), rejected.tolist(), strict=True)]
    torch.testing.assert_close(got, torch.tensor(direct), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got, F.logsigmoid(preferred - rejected))
    assert got[2] == pytest.approx(math.log(0.5))


def test_zscore_and_rloo_on_a_hand_case():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 4.0, 4.0])  # two inputs, four samples each
    # RLOO: each sample minus the mean of the other three of its input
    expected = [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2, 0 - 8 / 3, 0 - 8 / 3, 4 - 4 / 3, 4 - 4 / 3]
    assert rloo_advantages(rewards, 4).tolist() == pytest.approx(expected, abs=1e-6)
    assert rloo_advantages(torch.tensor([1.0, 3.0]), 2).tolist() == [-2.0, 2.0]
    mean, std = rewards.mean(), torch.sqrt(((rewards - rewards.mean()) ** 2).mean())
    torch.testing.assert_close(zscore(rewards), (rewards - mean) / std)
    assert zscore(torch.zeros(4)).tolist() == [0.0] * 4  # equal rewards: no signal, no division by zero


def test_rounds_are_spread_over_the_run():
    rounds = PreferenceRounds(4, 100)
    assert rounds.starts == [0, 25, 50, 75] and rounds.ends == [24, 49, 74, 99]
    assert rounds.ends_round(49) == 1 and rounds.ends_round(50) is None
    one = PreferenceRounds(1, 10)
    assert one.starts == [0] and one.ends == [9]
    uneven = PreferenceRounds(4, 10)  # floor(r * 10 / 4): whole steps, so every round starts at a step
    assert uneven.starts == [0, 2, 5, 7] and uneven.ends == [1, 4, 6, 9]
    assert [step for step in range(10) if uneven.starts_round(step)] == [0, 2, 5, 7]


@pytest.mark.parametrize("method,settings,field", [
    ("pbkd_offline", {"preference_labels": "human"}, "preference_labels"),
    ("pbkd_online", {"num_samples": 1}, "num_samples"),
    ("pbkd_online", {"rounds": 0}, "rounds"),
    ("pbkd_offline", {"rounds": 2}, "rounds"),  # offline has no rounds
    ("pbkd_online", {"ml_fit_start": "zero"}, "ml_fit_start"),
    ("pbkd_online", {"ml_fit_steps": -1}, "ml_fit_steps"),
])
def test_bad_settings_name_the_field(method, settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config(method, settings, "config.methods[0].settings")


def test_oracle_labels_are_a_setting_that_asks_for_the_oracle():
    for method in ("pbkd_offline", "pbkd_online"):
        assert METHODS.get(method).needs_oracle(method_config(method, {"preference_labels": "oracle"}))
        assert not METHODS.get(method).needs_oracle(method_config(method, {}))


def test_more_rounds_than_steps_is_rejected():
    with pytest.raises(ConfigError, match="rounds"):
        METHODS.get("pbkd_online").check_training(method_config("pbkd_online", {"rounds": 5}),
                                                  TrainingConfig(steps=4), "config.distill")


# -- the method ------------------------------------------------------------------------------------
def make(tokenizer, family, method="pbkd_online", settings=None, total_steps=4):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), None, SamplingConfig(), max_new_tokens=8, device=CPU,
                       use_bf16=False, seed=0, total_steps=total_steps)
    with ctx.random_stream("modules"):
        return METHODS.get(method)(method_config(method, settings or {}), ctx)


def first_examples(impl, data, step=0):
    return StepLoader(data, impl.ctx.student, batch_size=4, grad_accum=1, seed=0).step_examples(step)[0]


def test_reward_model_reads_the_whole_output_and_ignores_padding(tokenizer, family, toy_data):
    impl = make(tokenizer, family)
    model = impl.reward_model
    batch = first_examples(impl, toy_data).teacher_output
    assert model(batch).abs().max() == 0  # zero head at the start
    torch.nn.init.normal_(model.head.weight, generator=torch.Generator().manual_seed(0))
    both = model(batch)
    alone = torch.cat([model(batch.__class__(*(t[i:i + 1] for t in (batch.prompt_ids, batch.prompt_mask,
                                                                    batch.target_ids, batch.target_mask))))
                       for i in range(batch.size)])
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=1e-5)
    # the score is the head on the hidden state after the last token: a hand forward of prompt + output + one more
    row = 0
    length = int(batch.target_mask[row].sum())
    ids = torch.cat([batch.target_ids[row, :length], torch.tensor([impl.ctx.student.pad_id])])[None]
    one = batch.__class__(batch.prompt_ids[row:row + 1], batch.prompt_mask[row:row + 1], ids, torch.ones_like(ids))
    _, hidden = impl.ctx.student.__class__(model.trunk, impl.ctx.student.tokenizer).target_logits(one, with_hidden=True)
    expected = hidden[0, length] @ model.head.weight[0] + model.head.bias[0]
    torch.testing.assert_close(both[row], expected, atol=1e-5, rtol=1e-5)
    # and it depends on the last token
    changed = batch.target_ids.clone()
    changed[row, length - 1] = (changed[row, length - 1] + 1) % 50 + 5
    assert model(batch.with_targets(changed, batch.target_mask))[row] != both[row]


def test_reward_step_widens_the_gap_and_the_policy_loss_is_rloo(tokenizer, family, toy_data):
    impl = make(tokenizer, family, settings={"reward_steps": 3, "kl_weight": 0.1, "ml_fit_steps": 0})
    examples = first_examples(impl, toy_data)
    rollout = impl.sequences(examples, 0)
    assert rollout.size == 4 * 2 and len(impl.rounds.pairs) == 8  # four inputs, two samples each
    with torch.no_grad():
        gap = impl.reward(examples.teacher_output).mean() - impl.reward(rollout).mean()
    assert gap > 0  # from 0 at the zero head
    assert all(p.grad is None for p in impl.reward_model.parameters())
    torch.testing.assert_close(rollout.advantages, rloo_advantages(zscore(rollout.rewards), 2))

    student = impl.ctx.student
    logits = student.target_logits(rollout).detach().requires_grad_(True)
    impl.ctx.student_logits = lambda batch: logits  # the loss on these logits, to compare gradients there
    terms = impl.loss(rollout)
    assert set(terms) == {"policy", "kl"}
    torch.testing.assert_close(terms["policy"].detach(), -rollout.rewards[:, None].expand_as(terms["policy"]))
    with torch.no_grad():
        initial = impl.reference.target_logits(rollout)
    torch.testing.assert_close(terms["kl"], 0.1 * reverse_kl(logits, initial))
    assert terms["kl"].abs().max() < 1e-5  # the student is still its initialisation
    mask = rollout.target_mask.float()
    (grad,) = torch.autograd.grad((terms["policy"] * mask).sum(), logits)
    log_q = torch.log_softmax(logits.detach(), dim=-1)
    one_hot = F.one_hot(rollout.target_ids, log_q.shape[-1]).float()
    expected = -rollout.advantages[:, None, None] * (one_hot - log_q.exp()) * mask[..., None]  # -A d log q(y_t)
    torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("start", ["initial", "current"])
def test_confidence_record_against_an_independent_fit(tokenizer, family, toy_data, capsys, start):
    """At a round's last step: the reward's mean log-likelihood on all pairs, and that of a reward model fitted by
    maximum likelihood alone from the reward's initialisation or its current state, here refitted by a separate
    loop."""
    settings = {"rounds": 2, "ml_fit_steps": 4, "ml_fit_lr": 0.01, "ml_fit_start": start}
    impl = make(tokenizer, family, settings=settings, total_steps=2)
    initial = copy.deepcopy(impl.reward_model)
    impl.sequences(first_examples(impl, toy_data), 0)  # step 0 starts round 0 and ends it
    (record,) = impl.rounds.records
    assert json.loads(capsys.readouterr().out.split("confidence set: ")[1]) == record
    preferred, rejected = impl.rounds.batches(impl.ctx)
    with torch.no_grad():
        margin = impl.reward_model(preferred) - impl.reward_model(rejected)
    loglik = float(torch.log(torch.sigmoid(margin)).mean())
    fitted = copy.deepcopy(initial if start == "initial" else impl.reward_model)
    optimizer = torch.optim.Adam(fitted.parameters(), lr=0.01)
    for _ in range(4):
        optimizer.zero_grad()
        loss = -F.logsigmoid(fitted(preferred) - fitted(rejected)).mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        ml_loglik = float(F.logsigmoid(fitted(preferred) - fitted(rejected)).mean())
    assert record["round"] == 0 and record["step"] == 1 and record["pairs"] == 8
    assert record["loglik"] == pytest.approx(loglik, abs=1e-5)
    assert record["ml_loglik"] == pytest.approx(ml_loglik, abs=1e-5)
    assert record["gap"] == pytest.approx(ml_loglik - loglik, abs=2e-5)
    assert ml_loglik > (math.log(0.5) if start == "initial" else loglik)  # the fit improved on its start
    assert record["inside"] == (record["gap"] <= record["slack"])


# -- through the core --------------------------------------------------------------------------------
def run(tokenizer, family, data, out, method, settings, *, steps=4, stop_after=None):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(steps=steps, batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
    setup = TrainSetup(METHODS.get(method), method_config(method, settings), student, data, cfg, 0, CPU,
                       sampling=SamplingConfig(), max_new_tokens=8)
    return student, train(setup, out, stop_after=stop_after)


def log(out):
    return [json.loads(line) for line in open(Path(out) / "train_log.jsonl")]


FAST = {"ml_fit_steps": 2, "pair_batch_size": 8}


def test_online_with_one_round_is_offline_over_a_whole_run(tmp_path, tokenizer, family, toy_data):
    online, _ = run(tokenizer, family, toy_data, tmp_path / "on", "pbkd_online", {**FAST, "rounds": 1})
    offline, _ = run(tokenizer, family, toy_data, tmp_path / "off", "pbkd_offline", FAST)
    for key, value in offline.model.state_dict().items():
        assert torch.equal(value, online.model.state_dict()[key]), key
    rewards = [torch.load(tmp_path / d / "model" / "reward_model.pt", weights_only=True) for d in ("on", "off")]
    assert all(torch.equal(rewards[0][k], rewards[1][k]) for k in rewards[1])
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("on", "off")]
    assert strip[0] == strip[1]


def test_online_training_is_finite_and_its_learned_reward_is_the_reward_model(tmp_path, tokenizer, family, toy_data,
                                                                               capsys):
    run(tokenizer, family, toy_data, tmp_path, "pbkd_online", {**FAST, "rounds": 2})
    records = log(tmp_path)
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "policy", "kl", "grad_norm"))
    rounds = [json.loads(line.split("confidence set: ")[1]) for line in capsys.readouterr().out.splitlines()
              if line.startswith("confidence set: ")]
    assert [(r["round"], r["step"], r["pairs"]) for r in rounds] == [(0, 2, 8), (1, 4, 16)]
    model_dir = tmp_path / "model"
    student = load_model(model_dir)  # as the evaluator does
    reward_fn = learned_reward_of(model_dir, student)
    reference = RewardModel(copy.deepcopy(student.model), student.tokenizer)
    reference.load_state_dict(torch.load(model_dir / "reward_model.pt", weights_only=True))
    batch = student.collate(toy_data.prompts[:5], toy_data.targets[:5])
    with torch.no_grad():
        expected = reference(batch)
    got = reward_fn(batch)
    assert got.shape == (5,) and expected.abs().sum() > 0
    torch.testing.assert_close(got, expected)


def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data):
    settings = {**FAST, "rounds": 2}  # the second round starts at step 2, the resume point
    full, _ = run(tokenizer, family, toy_data, tmp_path / "full", "pbkd_online", settings)
    run(tokenizer, family, toy_data, tmp_path / "cut", "pbkd_online", settings, stop_after=2)
    resumed, _ = run(tokenizer, family, toy_data, tmp_path / "cut", "pbkd_online", settings)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    rewards = [torch.load(tmp_path / d / "model" / "reward_model.pt", weights_only=True) for d in ("full", "cut")]
    assert all(torch.equal(rewards[0][k], rewards[1][k]) for k in rewards[1])
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("full", "cut")]
    assert strip[0] == strip[1]


def test_one_reward_step_is_adamw_on_the_stated_objective(tokenizer, toy_data):
    """The reward step against a hand-written reference: one AdamW step (reward_lr, reward_weight_decay) on
    -(mean r_teacher - mean r_student - reward_l2 (mean r_teacher^2 + mean r_student^2) + eta mean BT loglik),
    from a head moved off zero so that the squared-reward penalty has a gradient."""
    settings = {"reward_steps": 1, "reward_lr": 0.02, "reward_weight_decay": 0.3, "reward_l2": 0.7,
                "preference_weight": 0.5, "pair_batch_size": 64, "ml_fit_steps": 0, "kl_weight": 0.0}
    impl = make(tokenizer, "llama", "pbkd_offline", settings)
    with torch.no_grad():
        impl.reward_model.head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
        impl.reward_model.head.bias.fill_(0.2)
    examples = first_examples(impl, toy_data)
    teacher = examples.teacher_output
    samples = impl.ctx.sample_student(teacher, num_samples=2)
    impl.rounds.add(teacher, samples)
    start = impl.reward_model.head.weight.detach().clone()
    reference = copy.deepcopy(impl.reward_model)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.02, weight_decay=0.3)
    preferred, rejected = impl.rounds.batches(impl.ctx)
    r_t, r_s = reference(teacher), reference(samples)
    objective = (r_t.mean() - r_s.mean() - 0.7 * (r_t.pow(2).mean() + r_s.pow(2).mean())
                 + 0.5 * F.logsigmoid(reference(preferred) - reference(rejected)).mean())
    optimizer.zero_grad()
    (-objective).backward()
    optimizer.step()
    impl.update_reward(teacher, samples, "preference_pairs/0/0")
    for (name, got), want in zip(impl.reward_model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)
    assert (impl.reward_model.head.weight - start).abs().max() > 1e-3  # a real step was compared
    # the penalty pulls the rewards toward 0: with a large reward_l2 one step lowers their mean square
    strong = make(tokenizer, "llama", "pbkd_offline", {**settings, "reward_l2": 50.0, "preference_weight": 0.0})
    strong.reward_model.load_state_dict(impl.reward_model.state_dict())
    with torch.no_grad():
        before = strong.reward(teacher).pow(2).mean() + strong.reward(samples).pow(2).mean()
    strong.update_reward(teacher, samples, "preference_pairs/0/0")
    with torch.no_grad():
        after = strong.reward(teacher).pow(2).mean() + strong.reward(samples).pow(2).mean()
    assert after < before


def test_pair_minibatch_takes_every_pair_in_order_when_there_are_exactly_enough(tokenizer, toy_data):
    impl = make(tokenizer, "llama", "pbkd_offline", {"ml_fit_steps": 0})
    examples = first_examples(impl, toy_data)
    samples = impl.ctx.sample_student(examples.teacher_output, num_samples=2)
    impl.rounds.add(examples.teacher_output, samples)
    assert len(impl.rounds.pairs) == 8
    everything = impl.rounds.batches(impl.ctx)
    exact = impl.rounds.minibatch(impl.ctx, 8, "preference_pairs/0/0")  # no draw: all 8, in order
    for a, b in zip(everything, exact, strict=True):
        assert torch.equal(a.target_ids, b.target_ids)
    drawn = impl.rounds.minibatch(impl.ctx, 7, "preference_pairs/0/0")
    with impl.ctx.random_stream("preference_pairs/0/0"):
        chosen = torch.randperm(8)[:7].tolist()
    pairs = [impl.rounds.pairs[i] for i in chosen]  # by hand: (prompt, preferred, rejected) rows
    for batch, column in zip(drawn, (1, 2), strict=True):
        expected = impl.ctx.student.collate([p[0] for p in pairs], [p[column] for p in pairs])
        assert torch.equal(batch.prompt_ids, expected.prompt_ids) and torch.equal(batch.target_ids, expected.target_ids)


@pytest.mark.parametrize("weight,draws", [(1.0, ["stream/7"]), (0.0, [])])
def test_a_reward_update_draws_pairs_under_its_stream_and_only_when_weighted(tokenizer, family, toy_data, weight, draws):
    impl = make(tokenizer, family, "pbkd_offline", {"ml_fit_steps": 0, "preference_weight": weight,
                                                      "pair_batch_size": 3})
    examples = first_examples(impl, toy_data)
    samples = impl.ctx.sample_student(examples.teacher_output, num_samples=2)
    impl.rounds.add(examples.teacher_output, samples)
    streams = []
    original = impl.rounds.minibatch
    impl.rounds.minibatch = lambda ctx, size, stream: (streams.append(stream), original(ctx, size, stream))[1]
    impl.update_reward(examples.teacher_output, samples, "stream/7")
    assert streams == draws


@pytest.mark.parametrize("fit_steps,records", [(0, 0), (1, 1)])
def test_the_confidence_set_is_recorded_at_a_rounds_end_when_fitted(tokenizer, family, toy_data, fit_steps, records):
    """Rounds of 4 steps over 2: round 0 ends at step 1, where a fit of ml_fit_steps > 0 records it."""
    impl = make(tokenizer, family, "pbkd_online", {"ml_fit_steps": fit_steps, "rounds": 2})
    assert impl.rounds.ends == [1, 3]
    impl.sequences(first_examples(impl, toy_data, 0), 0)
    assert impl.rounds.records == []
    impl.sequences(first_examples(impl, toy_data, 1), 1)
    assert len(impl.rounds.records) == records
    assert all(r["round"] == 0 and r["step"] == 2 for r in impl.rounds.records)


def test_each_reward_update_draws_its_pairs_from_its_own_named_stream(tokenizer, toy_data):
    impl = make(tokenizer, "llama", "pbkd_online", {"ml_fit_steps": 0, "rounds": 2})
    streams = []
    original = impl.update_reward
    impl.update_reward = lambda teacher, samples, stream: (streams.append(stream), original(teacher, samples, stream))
    for step in (0, 0, 1):
        impl.sequences(first_examples(impl, toy_data, step), step)
    assert streams == ["preference_pairs/0/0", "preference_pairs/0/1", "preference_pairs/1/0"]


def test_rounds_without_a_step_budget_are_refused_saying_why():
    with pytest.raises(ValueError, match=r"^online rounds are spread over the run's steps; the context has no total_steps$"):
        PreferenceRounds(2, None)
    assert PreferenceRounds(1, None).starts == [0]


def test_stack_batches_pads_prompts_left_and_targets_right_with_the_pad_id():
    from xkdbench.methods.preference import stack_batches
    from xkdbench.models.batch import Batch

    a = Batch(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]]), torch.tensor([[4]]), torch.tensor([[1]]))
    b = Batch(torch.tensor([[5]]), torch.tensor([[1]]), torch.tensor([[6, 8, 9]]), torch.tensor([[1, 1, 1]]))
    both = stack_batches([a, b], pad_id=7)
    assert both.prompt_ids.tolist() == [[1, 2, 3], [7, 7, 5]]
    assert both.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert both.target_ids.tolist() == [[4, 7, 7], [6, 8, 9]]
    assert both.target_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert stack_batches([a], pad_id=7) is a


def test_a_gap_equal_to_the_slack_is_inside_the_confidence_set(capsys):
    rounds = PreferenceRounds(1, 4)
    at = rounds.record(0, 3, loglik=-1.0, ml_loglik=-0.5, slack=0.5)  # gap 0.5, exactly the slack
    above = rounds.record(0, 3, loglik=-1.0, ml_loglik=-0.25, slack=0.5)
    assert at["gap"] == 0.5 and at["inside"] is True
    assert above["gap"] == 0.75 and above["inside"] is False
    assert capsys.readouterr().out.count("confidence set: ") == 2


def test_the_kl_reference_is_a_frozen_copy_and_only_when_weighted(tokenizer, family):
    """kl_weight > 0 keeps a frozen copy of the initial student as the KL reference; kl_weight 0 keeps none
    (no second model in memory)."""
    with_kl = make(tokenizer, family, "pbkd_offline", {"kl_weight": 0.5})
    assert with_kl.reference is not None
    assert not any(p.requires_grad for p in with_kl.reference.model.parameters())
    assert make(tokenizer, family, "pbkd_offline", {"kl_weight": 0.0}).reference is None
