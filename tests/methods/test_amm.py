"""AMM (reconstructed): the closed form against total variation, the moment gaps and the student's gradient
against exact enumeration on a toy MDP, the adversary's ascent, the limits that are GKD, training and resume."""
from __future__ import annotations

import itertools
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
from xkdbench.core.trainer import TrainSetup, backward_step, train
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.amm import (
    closed_form_adversary,
    cost_to_go,
    moment_gaps,
    position_baseline,
    student_terms,
)

CPU = torch.device("cpu")


def probs(*shape, seed=0):
    return torch.softmax(3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# -- pure functions -------------------------------------------------------------------------------
def test_closed_form_gap_is_twice_total_variation_and_the_maximum():
    p, q = probs(4, 6, 11, seed=0), probs(4, 6, 11, seed=1)
    f = closed_form_adversary(p, q)
    gap = moment_gaps(f, p, q, torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, dtype=torch.bool), "exact")
    torch.testing.assert_close(gap, 2 * (0.5 * (p - q).abs().sum(-1)))
    # no other f in [-1, 1]^V does better at any state
    for seed in range(5):
        other = 2 * torch.rand(4, 6, 11, generator=torch.Generator().manual_seed(seed)) - 1
        assert ((p - q) * other).sum(-1).le(gap + 1e-6).all()


def test_moment_gaps_follow_the_formulas():
    p, q = probs(3, 4, 7, seed=2), probs(3, 4, 7, seed=3)
    f = torch.tanh(torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(4)))
    ids = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(5))
    on = torch.tensor([False, True, True])
    sampled, exact = (moment_gaps(f, p, q, ids, on, e) for e in ("sampled", "exact"))
    for b, t in itertools.product(range(3), range(4)):
        e_p = sum(float(p[b, t, a] * f[b, t, a]) for a in range(7))
        e_q = sum(float(q[b, t, a] * f[b, t, a]) for a in range(7))
        taken = float(f[b, t, ids[b, t]])
        assert sampled[b, t].item() == pytest.approx(e_p - taken if on[b] else taken - e_q, abs=1e-6)
        assert exact[b, t].item() == pytest.approx(e_p - e_q, abs=1e-6)


def test_cost_to_go_and_baseline_on_a_hand_case():
    costs = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    future = cost_to_go(costs, mask)
    assert future.tolist() == [[9.0, 7.0, 4.0, 0.0], [6.0, 0.0, 0.0, 0.0]]
    assert cost_to_go(costs, mask, "mean").tolist() == [[3.0, 3.5, 4.0, 0.0], [6.0, 0.0, 0.0, 0.0]]
    baseline = position_baseline(future, mask)
    assert baseline.tolist() == [[7.5, 3.5, 4.0, 0.0]] * 2  # positions 2 and 3: the first row alone


@pytest.mark.parametrize("estimate", ["sampled", "exact"])
def test_student_gradient_equals_the_exact_gradient_on_a_toy_mdp(estimate):
    """Two steps, two actions, the student a table of logits per prefix. Weighting each of the four
    outputs' estimator gradients by its probability must give the gradient of the exact on-policy distance
    E_{y ~ q} sum_t [E_p f(s_t) - f(s_t, y_t)], and for off-policy rows the gradient of -sum_t E_q f(s_t)."""
    g = torch.Generator().manual_seed(6)
    table = torch.randn(3, 2, generator=g).requires_grad_(True)  # prefixes (), (0), (1)
    teacher = torch.softmax(torch.randn(3, 2, generator=g), dim=-1)
    f_table = 2 * torch.rand(3, 2, generator=g) - 1
    outputs = list(itertools.product([0, 1], repeat=2))
    prefix = [[0, 1 + y[0]] for y in outputs]  # row, position -> table row of its state
    ids = torch.tensor(outputs)
    logits = table[torch.tensor(prefix)]  # (4, 2, 2)
    p, f = teacher[torch.tensor(prefix)], f_table[torch.tensor(prefix)]
    mask = torch.ones(4, 2)

    # exact objective by enumeration
    q = torch.softmax(table, dim=-1)
    exact = 0.0
    for y, rows in zip(outputs, prefix, strict=True):
        q_y = q[rows[0], y[0]] * q[rows[1], y[1]]
        gaps = [(teacher[r] * f_table[r]).sum() - f_table[r, a] for r, a in zip(rows, y, strict=True)]
        exact = exact + q_y * sum(gaps)
    (true_grad,) = torch.autograd.grad(exact, table)

    per_state, pg = student_terms(logits, p, f, ids, mask, torch.ones(4, dtype=torch.bool), estimate)
    q = q.detach()
    weight = torch.stack([q[r[0], y[0]] * q[r[1], y[1]] for y, r in zip(outputs, prefix, strict=True)])
    (grad,) = torch.autograd.grad(((per_state + pg).sum(1) * weight).sum(), table)
    torch.testing.assert_close(grad, true_grad, atol=1e-6, rtol=1e-5)
    assert pg.detach().abs().max() == 0  # the REINFORCE part carries no value

    # off-policy rows: only the per-state part, -d E_q f
    logits = table[torch.tensor(prefix)]
    off_per_state, off_pg = student_terms(logits, p, f, ids, mask, torch.zeros(4, dtype=torch.bool), estimate)
    (grad,) = torch.autograd.grad(off_per_state.sum() + off_pg.sum(), table)
    expected_q = -(torch.softmax(table[torch.tensor(prefix)], dim=-1) * f).sum()
    (expected,) = torch.autograd.grad(expected_q, table)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_the_reinforce_gradient_per_sample_by_hand(form):
    """Per sampled row, d pg / d logits_t = (G_t - b_t) (onehot(y_t) - q_t): G_t the sum (or mean) of the
    row's gaps after t, b_t the mean of G_t over the rows valid at t, written out with loops."""
    g = torch.Generator().manual_seed(2)
    rows, length, vocab = 3, 4, 5
    logits = torch.randn(rows, length, vocab, generator=g).requires_grad_(True)
    p = torch.softmax(torch.randn(rows, length, vocab, generator=g), dim=-1)
    f = 2 * torch.rand(rows, length, vocab, generator=g) - 1
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    per_state, pg = student_terms(logits, p, f, ids, mask, torch.ones(rows, dtype=torch.bool), "sampled", form)
    gap = per_state.detach()
    valid = mask.tolist()
    future = [[0.0] * length for _ in range(rows)]
    for r in range(rows):
        for t in range(length):
            after = [float(gap[r, u]) for u in range(t + 1, length) if valid[r][u]]
            if valid[r][t] and after:
                future[r][t] = sum(after) / (len(after) if form == "mean" else 1)
    (grad,) = torch.autograd.grad(pg.sum(), logits)
    q = torch.softmax(logits.detach(), dim=-1)
    for r in range(rows):
        for t in range(length):
            at_t = [future[k][t] for k in range(rows) if valid[k][t]]
            advantage = future[r][t] - sum(at_t) / len(at_t) if valid[r][t] else 0.0
            expected = advantage * (F.one_hot(ids[r, t], vocab).float() - q[r, t])
            torch.testing.assert_close(grad[r, t], expected, atol=1e-6, rtol=1e-5)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("settings,field", [({"on_policy_weight": 1.5}, "on_policy_weight"),
                                            ({"adversary": "mlp"}, "adversary"),
                                            ({"adversary_steps": 0}, "adversary_steps"),
                                            ({"moment_estimate": "mean"}, "moment_estimate")])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config("amm", settings, "config.methods[0].settings")


# -- the method ------------------------------------------------------------------------------------
def make(tokenizer, family, settings):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0, total_steps=4)
    with ctx.random_stream("modules"):
        return METHODS.get("amm")(method_config("amm", settings), ctx)


def test_adversary_starts_at_zero_and_its_step_raises_the_distance(tokenizer, family, toy_data):
    impl = make(tokenizer, family, {"adversary_steps": 3})
    examples = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0]
    rollout = impl.rollout(examples)
    assert rollout.on_policy.sum() == 8 and (~rollout.on_policy).sum() == 8

    def distance():
        with torch.no_grad():
            f = impl.adversary(rollout.teacher_hidden, impl.unembedding())
            q = torch.softmax(impl.ctx.student_logits(rollout).float(), dim=-1)
            gap = moment_gaps(f, torch.softmax(rollout.teacher_logits.float(), -1), q, rollout.target_ids,
                              rollout.on_policy, "sampled")
            m = rollout.target_mask.float()
            on, off = m * rollout.on_policy[:, None], m * ~rollout.on_policy[:, None]
            return float(0.5 * (gap * on).sum() / on.sum() + 0.5 * (gap * off).sum() / off.sum()), f

    before, f = distance()
    assert before == 0 and f.abs().max() == 0
    impl.update_adversary(rollout)
    after, f = distance()
    assert after > 0 and f.abs().max() <= 1
    assert all(p.grad is None for p in impl.adversary.parameters())  # nothing left for the core's optimiser
    terms = impl.loss(rollout)
    assert set(terms) == {"moment_off", "moment_on", "moment_pg"}
    total = sum((t * rollout.target_mask).sum() for t in terms.values()) / rollout.target_mask.sum()
    assert total.item() == pytest.approx(after, abs=1e-5)  # the logged loss is the distance L
    total.backward()
    grads = [p.grad for p in impl.ctx.student.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0



@pytest.mark.parametrize("estimate", ["sampled", "exact"])
@pytest.mark.parametrize("one_token_each", [False, True])
def test_the_adversarys_steps_ascend_the_weighted_token_means_by_hand(tokenizer, family, toy_data, estimate,
                                                                      one_token_each):
    """K = 2 AdamW ascent steps (its own learning rate and weight decay) on beta * mean over on-policy tokens
    + (1 - beta) * mean over off-policy tokens of the moment gap, written out here with `moment_gaps`
    (checked against its formulas above): the adversary ends where this hand-written ascent ends. Also
    when each side has a single valid token (each mean is that token's gap)."""
    import copy
    import dataclasses

    settings = {"adversary_steps": 2, "adversary_lr": 0.05, "adversary_weight_decay": 0.2,
                "on_policy_weight": 0.3, "moment_estimate": estimate}
    impl = make(tokenizer, family, settings)
    examples = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0]
    rollout = impl.rollout(examples)
    assert 0 < int(rollout.on_policy.sum()) < len(rollout.on_policy)
    if one_token_each:
        single = torch.zeros_like(rollout.target_mask)
        single[int(rollout.on_policy.nonzero()[0]), 0] = single[int((~rollout.on_policy).nonzero()[0]), 0] = 1
        rollout = dataclasses.replace(rollout, target_mask=single)
    reference = copy.deepcopy(impl.adversary)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.2)
    with torch.no_grad():
        q = torch.softmax(impl.ctx.student_logits(rollout).float(), dim=-1)
        p = torch.softmax(rollout.teacher_logits.float(), dim=-1)
    m = rollout.target_mask.float()
    on, off = m * rollout.on_policy[:, None], m * ~rollout.on_policy[:, None]
    for _ in range(2):
        gap = moment_gaps(reference(rollout.teacher_hidden, impl.unembedding()), p, q, rollout.target_ids,
                          rollout.on_policy, estimate)
        objective = 0.3 * (gap * on).sum() / on.sum() + 0.7 * (gap * off).sum() / off.sum()
        optimizer.zero_grad()
        (-objective).backward()
        optimizer.step()
    impl.update_adversary(rollout)
    for ours, theirs in zip(impl.adversary.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # Adam divides by small moments


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_the_policy_gradient_term_uses_the_configured_cost_to_go(tokenizer, family, toy_data, form):
    """AMM's REINFORCE term is `student_terms` at the setting's cost-to-go form, weighted by
    beta * (step tokens) / (on-policy step tokens): its gradient equals that of the term written out here."""
    impl = make(tokenizer, family, {"cost_to_go": form, "adversary": "closed_form"})
    examples = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0]
    rollout = impl.rollout(examples)
    params = list(impl.ctx.student.model.parameters())

    def gradient(term):
        grads = torch.autograd.grad(term.sum(), params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(w)).reshape(-1)
                          for g, w in zip(grads, params, strict=True)])

    ours = gradient(impl.loss(rollout)["moment_pg"])
    logits = impl.ctx.student_logits(rollout)
    p = torch.softmax(rollout.teacher_logits.float(), dim=-1)
    f = closed_form_adversary(p, torch.softmax(logits.detach().float(), dim=-1))
    _, pg = student_terms(logits, p, f, rollout.target_ids, rollout.target_mask, rollout.on_policy, "sampled", form)
    tokens = rollout.step_tokens
    beta = impl.config.on_policy_weight
    expected = gradient(beta * (tokens["off"] + tokens["on"]) / tokens["on"] * pg)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_the_adversary_keeps_its_teacher_through_a_checkpoint():
    """The teacher path rides in the adversary's state (MM-PbKD's learned reward reloads that teacher), also
    when a resumed run loads it into an adversary built without it."""
    from xkdbench.methods.amm import MomentAdversary

    restored = MomentAdversary(8, 2, "")
    restored.load_state_dict(MomentAdversary(8, 2, "/models/teacher").state_dict())
    assert restored.teacher_path == "/models/teacher"

# -- through the core --------------------------------------------------------------------------------
def run(tokenizer, family, data, out, method, settings, *, steps=4, stop_after=None, teacher=None, **training):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(**{"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "log_every": 1,
                            "checkpoint_every": 100, **training})
    setup = TrainSetup(METHODS.get(method), method_config(method, settings), student, data, cfg, 0, CPU,
                       teacher=teacher or tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(),
                       max_new_tokens=8)
    return student, train(setup, out, stop_after=stop_after)


def log(out):
    return [json.loads(line) for line in open(Path(out) / "train_log.jsonl")]


LIMITS = [({"on_policy_weight": 0.0}, {"divergence": "total_variation", "student_data_fraction": 0.0, "seq_kd": True}),
          ({"on_policy_weight": 1.0, "policy_gradient": False},
           {"divergence": "total_variation", "student_data_fraction": 1.0})]


@pytest.mark.parametrize("amm,gkd", LIMITS)
def test_closed_form_limits_are_twice_gkd_with_total_variation_along_a_run(tokenizer, family, toy_data, amm, gkd):
    """Closed form, beta 0: 2 x TV on the teacher's outputs (GKD's seq_kd batches); beta 1 without REINFORCE:
    2 x TV on the student's samples. At every step of a 5-step run, on the step's batch, AMM's loss and
    student gradient are twice GKD's. (Whole runs of the two differ beyond float noise: Adam's epsilon
    sees the factor 2 on the tied embedding's rare-token rows, whose gradients are ~1e-8.)"""
    student, teacher = tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48)
    ctx = TrainContext(student, teacher, SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0,
                       total_steps=5)
    a = METHODS.get("amm")(method_config("amm", {"adversary": "closed_form", "moment_estimate": "exact", **amm}), ctx)
    b = METHODS.get("gkd")(method_config("gkd", gkd), ctx)
    loader = StepLoader(toy_data, student, batch_size=8, grad_accum=2, seed=0)
    optimizer = torch.optim.AdamW(student.model.parameters(), lr=1e-2)
    for step in range(5):
        examples = loader.step_examples(step)
        micro = [a.sequences(ex, step) for ex in examples]
        if amm["on_policy_weight"] == 0:
            assert all(torch.equal(m.target_ids, b.sequences(ex, step).target_ids) for m, ex in zip(micro, examples, strict=True))
        else:
            assert all(not torch.equal(m.target_ids, ex.gold.target_ids) for m, ex in zip(micro, examples, strict=True))
        results = []
        for impl in (a, b):
            optimizer.zero_grad(set_to_none=True)
            tokens, totals = backward_step(impl, micro)
            results.append((tokens, sum(totals.values()), grads(student.model)))
        (ta, la, ga), (tb, lb, gb) = results
        assert ta == tb
        torch.testing.assert_close(la, 2 * lb, rtol=1e-5, atol=1e-6)
        for name in gb:
            torch.testing.assert_close(ga[name], 2 * gb[name], rtol=1e-4, atol=1e-8)
        optimizer.step()  # along GKD's trajectory (its gradients are the last computed)


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("settings", [{}, {"moment_estimate": "exact", "adversary_steps": 2, "num_samples": 2}])
def test_training_is_finite_and_saves_the_adversary(tmp_path, tokenizer, family, toy_data, settings):
    run(tokenizer, family, toy_data, tmp_path, "amm", settings, steps=6)
    records = log(tmp_path)
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "moment_on", "moment_off", "grad_norm"))
    assert records[-1]["generated_tokens"] > 0
    state = torch.load(tmp_path / "model" / "moment_adversary.pt", weights_only=True)
    assert state["up"].abs().sum() > 0  # the adversary moved away from zero


@pytest.mark.parametrize("settings", [{}, {"adversary": "closed_form"}])
def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data, settings):
    full, _ = run(tokenizer, family, toy_data, tmp_path / "full", "amm", settings)
    run(tokenizer, family, toy_data, tmp_path / "cut", "amm", settings, stop_after=2)
    resumed, _ = run(tokenizer, family, toy_data, tmp_path / "cut", "amm", settings)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    if settings.get("adversary") != "closed_form":
        saved = [torch.load(tmp_path / d / "model" / "moment_adversary.pt", weights_only=True) for d in ("full", "cut")]
        assert all(torch.equal(saved[0][k], saved[1][k]) for k in ("down", "up"))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("full", "cut")]
    assert strip[0] == strip[1]


def test_no_learned_reward():
    assert METHODS.get("amm").learned_reward(Path("."), method_config("amm", {}), None) is None


@pytest.mark.parametrize("settings,expected", [
    ({}, {"fixed", "sampled"}),  # learned adversary: the teacher's hidden states, live on both kinds
    ({"on_policy_weight": 1.0}, {"fixed", "sampled"}),  # ... whatever beta
    ({"on_policy_weight": 0.0}, {"fixed", "sampled"}),
    ({"adversary": "closed_form", "on_policy_weight": 0.0}, {"fixed"}),
    ({"adversary": "closed_form", "on_policy_weight": 1.0}, {"sampled"}),
    ({"adversary": "closed_form", "on_policy_weight": 0.5}, {"fixed", "sampled"}),
])
def test_which_sequences_amm_asks_the_teacher_about(settings, expected):
    from xkdbench.methods import FIXED, SAMPLED

    names = {FIXED: "fixed", SAMPLED: "sampled"}
    got = METHODS.get("amm").teacher_sequences(method_config("amm", settings))
    assert {names[s] for s in got} == expected


def test_a_teacher_built_in_memory_leaves_the_adversary_without_a_teacher_path(tokenizer, family):
    """Only a teacher loaded from a directory is recorded (MM-PbKD's learned reward reloads it); a teacher
    built in memory records none, not the working directory."""
    impl = make(tokenizer, family, {"adversary": "learned"})
    assert impl.ctx.teacher.model.name_or_path == "" and impl.adversary.teacher_path == ""


def test_the_step_token_counts_add_up_over_the_micro_batches_of_a_step(tokenizer, family, toy_data):
    """Each part's weight uses the whole step's token counts: after both micro-batches of a step, the
    shared counts are the teacher outputs' and the samples' target tokens of both; a new step starts over."""
    impl = make(tokenizer, family, {"adversary": "closed_form", "on_policy_weight": 0.5})
    loader = StepLoader(toy_data, impl.ctx.student, batch_size=8, grad_accum=2, seed=0)
    micro = loader.step_examples(0)
    rollouts = [impl.sequences(examples, 0) for examples in micro]

    def part(rollout, on):
        rows = rollout.on_policy == on
        return int(rollout.target_mask[rows].sum())

    expected = {"off": sum(int(e.teacher_output.target_mask.sum()) for e in micro),
                "on": sum(part(r, True) for r in rollouts)}
    assert expected["off"] == sum(part(r, False) for r in rollouts)
    assert {k: int(v) for k, v in rollouts[-1].step_tokens.items()} == expected
    assert rollouts[0].step_tokens is rollouts[1].step_tokens  # the first micro-batch's loss sees the whole step
    nxt = impl.sequences(loader.step_examples(1)[0], 1)
    assert int(nxt.step_tokens["off"]) == int(loader.step_examples(1)[0].teacher_output.target_mask.sum())
