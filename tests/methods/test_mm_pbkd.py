"""MM-PbKD (reconstructed): the Q-function reward against its definition, the preference term, the
confidence-set record against an independent fit, eta 0 = AMM over a whole run, the learned reward through
the evaluator, and resume."""
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
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.mm_pbkd import advantage_sums, sequence_rewards
from xkdbench.models import load_model
from xkdbench.models.batch import Batch
from xkdbench.stages import learned_reward_of

CPU = torch.device("cpu")


def random_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    f = 2 * torch.rand(3, 5, 7, generator=g) - 1
    p = torch.softmax(torch.randn(3, 5, 7, generator=g), dim=-1)
    ids = torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    batch = Batch(torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.long), ids, mask)
    return f, p, batch


def test_rewards_and_advantages_follow_their_definitions():
    """R = sum_t [Q(s_t, y_t) - V(s_{t+1})] with V(s) = E_p Q(s) and V = 0 after the last token; it telescopes to
    V(s_0) + sum_t A(s_t, y_t), so two outputs of one input compare by their advantage sums."""
    f, p, batch = random_case()
    rewards, advantages = sequence_rewards(f, p, batch), advantage_sums(f, p, batch)
    for b in range(3):
        length = int(batch.target_mask[b].sum())
        value = [float((p[b, t] * f[b, t]).sum()) for t in range(length)] + [0.0]
        q = [float(f[b, t, batch.target_ids[b, t]]) for t in range(length)]
        assert rewards[b].item() == pytest.approx(sum(q[t] - value[t + 1] for t in range(length)), abs=1e-5)
        assert advantages[b].item() == pytest.approx(sum(q[t] - value[t] for t in range(length)), abs=1e-5)
        assert rewards[b].item() == pytest.approx(value[0] + advantages[b].item(), abs=1e-5)


@pytest.mark.parametrize("settings,field", [({"adversary": "closed_form"}, "adversary"),
                                            ({"on_policy_weight": 0.0}, "on_policy_weight"),
                                            ({"rounds": 0}, "rounds"),
                                            ({"preference_labels": "human"}, "preference_labels")])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config("mm_pbkd", settings, "config.methods[0].settings")


def make(tokenizer, family, settings, total_steps=4):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0, total_steps=total_steps)
    with ctx.random_stream("modules"):
        return METHODS.get("mm_pbkd")(method_config("mm_pbkd", settings), ctx)


def examples(impl, data, step=0):
    return StepLoader(data, impl.ctx.student, batch_size=4, grad_accum=1, seed=0).step_examples(step)[0]


def pair_loglik(impl, adversary):
    views = impl.pair_view(*impl.rounds.batches(impl.ctx))
    with torch.no_grad():
        return float(F.logsigmoid(torch.sub(*impl.pair_scores(adversary, views))).mean())


def test_preference_term_raises_the_pairs_likelihood(tokenizer, family, toy_data):
    runs = {}
    for eta in (0.0, 10.0):
        impl = make(tokenizer, family, {"preference_weight": 1.0, "adversary_lr": 1e-3, "ml_fit_steps": 0})
        impl.config.preference_weight = eta  # the same pairs for both: collected under eta 1, weighted by eta
        impl.sequences(examples(impl, toy_data), 0)
        assert len(impl.rounds.pairs) == 4
        runs[eta] = pair_loglik(impl, impl.adversary)
    assert math.log(0.5) < runs[0.0] < runs[10.0]  # f = 0 at the start: every pair at log 1/2


@pytest.mark.parametrize("start", ["initial", "current"])
def test_confidence_record_against_an_independent_fit(tokenizer, family, toy_data, capsys, start):
    settings = {"rounds": 2, "ml_fit_steps": 5, "ml_fit_lr": 0.05, "num_samples": 2, "ml_fit_start": start}
    impl = make(tokenizer, family, settings, total_steps=2)
    initial = copy.deepcopy(impl.adversary)
    impl.sequences(examples(impl, toy_data), 0)
    (record,) = impl.rounds.records
    assert json.loads(capsys.readouterr().out.split("confidence set: ")[1]) == record
    fitted = copy.deepcopy(initial if start == "initial" else impl.adversary)
    views = impl.pair_view(*impl.rounds.batches(impl.ctx))
    optimizer = torch.optim.Adam(fitted.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        (-F.logsigmoid(torch.sub(*impl.pair_scores(fitted, views))).mean()).backward()
        optimizer.step()
    assert record["pairs"] == 8
    assert record["loglik"] == pytest.approx(pair_loglik(impl, impl.adversary), abs=1e-5)
    assert record["ml_loglik"] == pytest.approx(pair_loglik(impl, fitted), abs=1e-5)
    assert record["gap"] == pytest.approx(record["ml_loglik"] - record["loglik"], abs=2e-6)
    assert record["ml_loglik"] > (math.log(0.5) if start == "initial" else record["loglik"])


@pytest.mark.parametrize("fit_steps,records", [(0, 0), (3, 1)])
def test_micro_batches_draw_their_own_pairs_and_the_round_is_recorded_once(tokenizer, family, toy_data, fit_steps, records):
    """Two micro-batches in a round's last step: each draws its pairs under its own stream, and the
    confidence set is fitted and recorded once (at the first), never with ml_fit_steps 0."""
    impl = make(tokenizer, family, {"rounds": 2, "ml_fit_steps": fit_steps, "pair_batch_size": 2}, total_steps=2)
    assert impl.rounds.ends == [0, 1]
    streams = []
    original = impl.rounds.minibatch
    impl.rounds.minibatch = lambda ctx, size, stream: (streams.append(stream), original(ctx, size, stream))[1]
    loader = StepLoader(toy_data, impl.ctx.student, batch_size=4, grad_accum=2, seed=0)
    for micro in loader.step_examples(0):
        impl.sequences(micro, 0)
    assert streams == ["preference_pairs/0/0", "preference_pairs/0/1"]
    assert len(impl.rounds.records) == records
    assert all(r["round"] == 0 and r["step"] == 1 for r in impl.rounds.records)


# -- through the core --------------------------------------------------------------------------------
def run(tokenizer, family, data, out, method, settings, *, teacher, steps=4, stop_after=None):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(steps=steps, batch_size=4, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
    setup = TrainSetup(METHODS.get(method), method_config(method, settings), student, data, cfg, 0, CPU,
                       teacher=teacher, sampling=SamplingConfig(), max_new_tokens=8)
    return student, train(setup, out, stop_after=stop_after)


def log(out):
    return [json.loads(line) for line in open(Path(out) / "train_log.jsonl")]


@pytest.fixture
def saved_teacher(tmp_path, tokenizer, family):
    """The teacher as a checkpoint directory, as runs load it (the learned reward reloads it from there)."""
    tiny_model(tokenizer, family, seed=2, width=48).save(tmp_path / "teacher")
    return lambda: load_model(tmp_path / "teacher")


def test_without_preferences_it_is_amm_over_a_whole_run(tmp_path, tokenizer, family, toy_data, saved_teacher):
    mm, _ = run(tokenizer, family, toy_data, tmp_path / "mm", "mm_pbkd", {"preference_weight": 0.0},
                teacher=saved_teacher())
    amm, _ = run(tokenizer, family, toy_data, tmp_path / "amm", "amm", {}, teacher=saved_teacher())
    for key, value in amm.model.state_dict().items():
        assert torch.equal(value, mm.model.state_dict()[key]), key
    saved = [torch.load(tmp_path / d / "model" / "moment_adversary.pt", weights_only=True) for d in ("mm", "amm")]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in ("down", "up"))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("mm", "amm")]
    assert strip[0] == strip[1]


def test_training_and_the_learned_reward(tmp_path, tokenizer, family, toy_data, saved_teacher, capsys):
    run(tokenizer, family, toy_data, tmp_path / "run", "mm_pbkd", {"rounds": 2, "ml_fit_steps": 3},
        teacher=saved_teacher())
    records = log(tmp_path / "run")
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "moment_on", "moment_off", "grad_norm"))
    rounds = [json.loads(line.split("confidence set: ")[1]) for line in capsys.readouterr().out.splitlines()
              if line.startswith("confidence set: ")]
    assert [(r["round"], r["step"], r["pairs"]) for r in rounds] == [(0, 2, 4), (1, 4, 8)]
    model_dir = tmp_path / "run" / "model"
    student = load_model(model_dir)  # as the evaluator does
    reward_fn = learned_reward_of(model_dir, student)
    batch = student.collate(toy_data.prompts[:5], toy_data.targets[:5])
    # by hand: the teacher's view, tanh(h down up E^T), and R from its definition
    teacher, state = saved_teacher(), torch.load(model_dir / "moment_adversary.pt", weights_only=True)
    with torch.no_grad():
        logits, hidden = teacher.target_logits(batch, with_hidden=True)
        unembedding = teacher.model.get_output_embeddings().weight
        f = torch.tanh(hidden @ state["down"] @ state["up"] @ unembedding.T)
        expected = sequence_rewards(f, torch.softmax(logits, dim=-1), batch)
    got = reward_fn(batch)
    assert got.shape == (5,) and expected.abs().sum() > 0
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data, saved_teacher):
    settings = {"rounds": 2, "ml_fit_steps": 2}
    full, _ = run(tokenizer, family, toy_data, tmp_path / "full", "mm_pbkd", settings, teacher=saved_teacher())
    run(tokenizer, family, toy_data, tmp_path / "cut", "mm_pbkd", settings, teacher=saved_teacher(), stop_after=2)
    resumed, _ = run(tokenizer, family, toy_data, tmp_path / "cut", "mm_pbkd", settings, teacher=saved_teacher())
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    saved = [torch.load(tmp_path / d / "model" / "moment_adversary.pt", weights_only=True) for d in ("full", "cut")]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in ("down", "up"))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("full", "cut")]
    assert strip[0] == strip[1]
