"""Bellman Distill: the loss against hand computation, the public code's arithmetic, HF's top-p rule, limits."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.generation.logits_process import TopPLogitsWarper

from tests.conftest import tiny_model, toy_pairs
from tests.methods.test_methods import CPU, first_step, make
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.trainer import TrainSetup, train, validation_nll
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.bellman_distill import bellman_distill_loss, nucleus_mask

B, T, V = 3, 6, 11


def fixed_inputs(seed=0, scale=2.0):
    """batch 3, length 6, vocabulary 11, float64; row 1 is padded after 4 tokens."""
    g = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_()
    teacher = scale * torch.randn(B, T, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[1, 4:] = 0
    return student, teacher, ids, mask


# --- the public code, re-derived line by line from TobyLeelsz/Bellman-Distillation (bellman/losses.py,
# Loss.bellman_distill_loss with chi_reg on; nucleus from bellman/trainer.py compute_logits_and_log_probs)

def code_top_p_mask(logits, top_p):
    sorted_logits, sorted_indices = torch.sort(logits, descending=False)
    cumulative_probs = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_indices_to_remove = cumulative_probs <= (1 - top_p)
    sorted_indices_to_remove[..., -1:] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(2, sorted_indices, sorted_indices_to_remove)
    return logits.masked_fill(indices_to_remove, -1e3) != -1e3


def public_code_loss(student_logits, teacher_logits, mask, args, gamma=0.99):
    def stable_softmax(logits):
        logits = logits - torch.max(logits, dim=-1, keepdim=True)[0]
        logits = logits.clip(min=-10)
        return torch.exp(logits) / torch.sum(torch.exp(logits), dim=-1, keepdim=True)

    def projected(q, top_p_mask):
        policy = stable_softmax(q)
        policy = policy * top_p_mask / args.top_p + args.epsilon * torch.ones(policy.shape)
        return policy / torch.sum(policy, dim=2, keepdim=True)

    top_p_mask = code_top_p_mask(teacher_logits / args.temperature, args.top_p)
    student_logits = student_logits / args.temperature  # the code divides twice; the test runs at T = 1
    q = student_logits - torch.max(student_logits, dim=-1, keepdim=True)[0]
    q = q.clip(min=-10)
    pi = projected(q, top_p_mask)
    v = torch.sum(pi * (q - torch.log(pi)), dim=2) * mask
    v_next = v[:, 1:] * mask[:, 1:]
    n = mask[:, :-1].sum()
    loss = -(torch.sum(torch.mean(top_p_mask[:, :-1, :] * q[:, :-1, :] * mask[:, :-1].unsqueeze(-1)
                                  - gamma * v_next.unsqueeze(-1), dim=2)) / n
             - torch.sum(v[:, :-1] * mask[:, :-1] - gamma * v_next) / n)
    loss += (1 / (4 * 0.1)) * torch.sum(torch.mean((top_p_mask[:, :-1, :] * q[:, :-1, :] * mask[:, :-1].unsqueeze(-1)
                                                    - gamma * v_next.unsqueeze(-1)) ** 2, dim=2)) / n
    return loss


@pytest.mark.parametrize("top_p", [0.8, 0.5])
def test_code_form_is_the_public_code(top_p):
    student, teacher, ids, mask = fixed_inputs()
    # the code multiplies epsilon by a float32 `torch.ones`, which rounds it: 1e-6 moves the loss by 4e-10
    # in float64; 2^-20 is exact in float32, so both compute with the same epsilon
    epsilon = 2.0 ** -20
    args = SimpleNamespace(top_p=top_p, epsilon=epsilon, temperature=1.0)
    ours = bellman_distill_loss(student, teacher, ids, mask, top_p=top_p, epsilon=epsilon, expert_term="code")
    reference = public_code_loss(student, teacher, mask, args)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12, abs=1e-12)
    (g_ours,) = torch.autograd.grad(ours, student)
    (g_ref,) = torch.autograd.grad(reference, student)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_gamma_reaches_both_forms(gamma):
    """gamma away from its default reaches the loss: the code form against the public code at that gamma
    (the by-hand textbook case has V(s') = 0, where gamma does nothing)."""
    student, teacher, ids, mask = fixed_inputs()
    epsilon = 2.0 ** -20
    args = SimpleNamespace(top_p=0.8, epsilon=epsilon, temperature=1.0)
    ours = bellman_distill_loss(student, teacher, ids, mask, epsilon=epsilon, expert_term="code", gamma=gamma)
    assert ours.item() == pytest.approx(public_code_loss(student, teacher, mask, args, gamma=gamma).item(),
                                        rel=1e-12, abs=1e-12)
    at_default = bellman_distill_loss(student, teacher, ids, mask, epsilon=epsilon, expert_term="code")
    assert abs(ours.item() - at_default.item()) > 1e-6


def test_code_form_stays_finite_where_the_public_code_is_nan():
    student, teacher, ids, mask = fixed_inputs()
    args = SimpleNamespace(top_p=0.8, epsilon=0.0, temperature=1.0)
    assert public_code_loss(student, teacher, mask, args).isnan()
    ours = bellman_distill_loss(student, teacher, ids, mask, epsilon=0.0, expert_term="code")
    (grad,) = torch.autograd.grad(ours, student)
    assert ours.isfinite() and grad.isfinite().all()
    # and it is the limit of the code's value as epsilon -> 0
    near = public_code_loss(student, teacher, mask, SimpleNamespace(top_p=0.8, epsilon=2.0 ** -60, temperature=1.0))
    assert ours.item() == pytest.approx(near.item(), abs=1e-12)


def test_textbook_form_by_hand():
    """One sequence of two tokens, vocabulary 3, alpha 0.1, gamma 0.5, worked out with floats."""
    student = torch.tensor([[[2.0, 1.0, -1.0], [0.0, 0.5, 3.0]]], dtype=torch.float64)
    teacher = torch.tensor([[[3.0, 2.5, -4.0], [-5.0, 0.0, 6.0]]], dtype=torch.float64)
    ids = torch.tensor([[1, 2]])
    mask = torch.ones(1, 2, dtype=torch.float64)
    # teacher probabilities: row 0 (0.622, 0.377, 0.0009) -> nucleus at p=0.8 is {0, 1};
    # row 1 (0.000017, 0.0025, 0.9975) -> nucleus {2}
    q0 = [0.0, -1.0]  # student row 0 shifted by its max (2), tokens 0 and 1
    q1_data = 0.0  # row 1 shifted by its max (3): token 2
    pi0 = [math.exp(q) / sum(math.exp(x) for x in q0) for q in q0]
    v0 = sum(p * (q - math.log(p)) for p, q in zip(pi0, q0, strict=True))
    v1 = 0.0  # one-token nucleus: pi = 1 on token 2, V = Q(token 2) = 0
    alpha, gamma = 0.1, 0.5

    def phi(x):
        return x - x * x / (4 * alpha)

    j = (phi(q0[1] - gamma * v1) + phi(q1_data - gamma * 0.0)) / 2 - ((v0 - gamma * v1) + (v1 - gamma * 0.0)) / 2
    loss = bellman_distill_loss(student, teacher, ids, mask, alpha=alpha, gamma=gamma)
    assert loss.item() == pytest.approx(-j, rel=1e-12)
    torch.testing.assert_close(nucleus_mask(teacher, 0.8), torch.tensor([[[True, True, False], [False, False, True]]]))


def test_nucleus_is_transformers_top_p():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(64, 50, generator=g)
    logits[::7, :10] = float("-inf")  # a teacher that rules tokens out
    logits[5] = 0.0  # all tied
    for top_p in (0.1, 0.5, 0.8, 0.95, 1.0):
        expected = TopPLogitsWarper(top_p=top_p)(torch.zeros(64, 1, dtype=torch.long), logits.clone()).isfinite()
        assert torch.equal(nucleus_mask(logits, top_p), expected), top_p
        assert nucleus_mask(logits, top_p).any(-1).all()  # the arg-max always stays


@pytest.mark.parametrize("expert_term", ["textbook", "code"])
def test_gradients_are_finite_with_masked_rows_and_impossible_tokens(expert_term):
    student, teacher, ids, mask = fixed_inputs(seed=1, scale=30.0)  # logits far below the floor too
    teacher[0, :, :5] = float("-inf")
    mask[2] = 0  # a row without any target token
    for epsilon in (1e-6, 0.0):
        loss = bellman_distill_loss(student, teacher, ids, mask, epsilon=epsilon, expert_term=expert_term)
        (grad,) = torch.autograd.grad(loss, student)
        assert loss.isfinite() and grad.isfinite().all()
        assert grad[2].abs().sum() == 0  # the masked row contributes nothing
    everything_masked = bellman_distill_loss(student, teacher, ids, torch.zeros_like(mask), expert_term=expert_term)
    assert everything_masked.item() == 0


def test_large_alpha_is_the_nucleus_cross_entropy_whatever_gamma():
    """alpha -> inf: phi(x) = x, the gamma V(s') terms telescope away and -J = -mean log pi_Ap(y_t | s_t)."""
    student, teacher, _, mask = fixed_inputs(seed=2)
    in_nucleus = nucleus_mask(teacher, 0.8)
    q = student.detach() - student.detach().max(-1, keepdim=True).values  # no logit is below the floor here
    assert q.min() > -10
    ids = q.masked_fill(~in_nucleus, float("inf")).argmin(-1)  # data tokens in the nucleus, not the arg-max
    ids = torch.where(in_nucleus.sum(-1) > 1, ids, in_nucleus.long().argmax(-1))
    log_pi = torch.log_softmax(q.masked_fill(~in_nucleus, float("-inf")), -1).gather(-1, ids[..., None])[..., 0]
    expected = -(log_pi * mask).sum() / mask.sum()
    for gamma in (0.0, 0.5, 0.99):
        loss = bellman_distill_loss(student, teacher, ids, mask, alpha=1e12, gamma=gamma)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_full_nucleus_and_large_alpha_is_the_student_cross_entropy():
    """p = 1 keeps every token the teacher gives mass to: -J becomes the plain token NLL of the student."""
    student, teacher, ids, mask = fixed_inputs(seed=4, scale=1.0)
    loss = bellman_distill_loss(student, teacher, ids, mask, top_p=1.0, alpha=1e12)
    nll = F.cross_entropy(student.transpose(1, 2), ids, reduction="none")
    assert loss.item() == pytest.approx(((nll * mask).sum() / mask.sum()).item(), rel=1e-9)


def test_one_token_nucleus_makes_the_value_the_q_of_the_teachers_choice():
    """A tiny p keeps only the teacher's arg-max a*: V(s) = Q(s, a*), and with the data token a* and
    alpha -> inf the loss is 0 (the student's Q is never compared with anything else)."""
    student, teacher, _, mask = fixed_inputs(seed=5)
    ids = teacher.argmax(-1)
    loss = bellman_distill_loss(student, teacher, ids, mask, top_p=1e-9, alpha=1e12)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert nucleus_mask(teacher, 1e-9).sum(-1).eq(1).all()


def test_temperature_divides_both_logits():
    student, teacher, ids, mask = fixed_inputs(seed=6)
    for form in ("textbook", "code"):
        a = bellman_distill_loss(student, teacher, ids, mask, temperature=2.0, expert_term=form)
        b = bellman_distill_loss(student / 2, teacher / 2, ids, mask, expert_term=form)
        assert a.item() == pytest.approx(b.item(), rel=1e-12)


@pytest.mark.parametrize("form", ["textbook", "code"])
def test_bf16_teacher_logits_are_read_at_the_students_precision(form):
    """Under bf16 autocast the teacher's logits arrive in bf16 and the student's are cast up: the nucleus is
    computed from the teacher's values in the student's precision, not with bf16 softmax and cumsum (whose
    rounding over hundreds of tokens moves the nucleus' edge)."""
    g = torch.Generator().manual_seed(11)
    student = torch.randn(4, 5, 400, generator=g)
    teacher = (2 * torch.randn(4, 5, 400, generator=g)).to(torch.bfloat16)
    ids = torch.randint(0, 400, (4, 5), generator=g)
    mask = torch.ones(4, 5)
    as_bf16 = bellman_distill_loss(student, teacher, ids, mask, expert_term=form)
    as_float = bellman_distill_loss(student, teacher.float(), ids, mask, expert_term=form)
    assert as_bf16.dtype == torch.float32 and torch.equal(as_bf16, as_float)
    # the same numbers pushed through bf16 arithmetic select another nucleus: the cast is what matters
    bf16_nucleus = nucleus_mask(teacher, 0.8)
    assert not torch.equal(bf16_nucleus, nucleus_mask(teacher.float(), 0.8))


@pytest.mark.parametrize("form", ["textbook", "code"])
def test_the_hook_terms_reduce_to_the_loss(tokenizer, family, toy_data, form):
    method = make("bellman_distill", {"expert_term": form, "top_p": 0.5}, tokenizer, family)
    batch = first_step(method, toy_data)
    assert batch.target_mask[:, -1].sum() == 0  # the trailing padding column
    terms = method.loss(batch)
    assert set(terms) == ({"td", "value"} if form == "textbook" else {"td", "value", "chi2"})
    core = sum((t * batch.target_mask).sum() for t in terms.values()) / batch.target_mask.sum()
    with torch.no_grad():
        student = method.ctx.student_logits(batch)
        teacher = method.ctx.teacher_logits(batch)
    expected = bellman_distill_loss(student, teacher, batch.target_ids, batch.target_mask, top_p=0.5,
                                    expert_term=form)
    assert core.item() == pytest.approx(expected.item(), rel=1e-6)


def test_trains_on_the_teachers_outputs(tokenizer, family, toy_data):
    method = make("bellman_distill", {}, tokenizer, family)
    batch = first_step(method, toy_data)
    examples = StepLoader(toy_data, method.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0]
    teacher_output = examples.teacher_output
    width = teacher_output.target_ids.shape[1]
    assert torch.equal(batch.target_ids[:, :width], teacher_output.target_ids)
    assert torch.equal(batch.target_mask[:, :width], teacher_output.target_mask)


@pytest.mark.parametrize("settings,field", [
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.2}, "top_p"), ({"alpha": 0}, "alpha"), ({"gamma": 1.5}, "gamma"),
    ({"q_floor": 1.0}, "q_floor"), ({"epsilon": -1e-3}, "epsilon"), ({"expert_term": "paper"}, "expert_term"),
])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError) as error:
        method_config("bellman_distill", settings, "config.methods[0].settings")
    assert f"config.methods[0].settings.{field}" in str(error.value)


@pytest.mark.parametrize("form", ["textbook", "code"])
def test_a_run_lowers_the_objective_and_the_textbook_form_fits_the_outputs(tmp_path, tokenizer, form):
    """Through the core, 40 steps on fixed teacher outputs, with an untrained teacher whose nucleus at p = 0.8
    holds most of the vocabulary. Both forms lower their objective. The textbook form is then close to the
    student's cross-entropy (see the full-nucleus limit above), so its NLL of the outputs falls by nats; the
    code form never looks at the data token (its expert term is the vocabulary mean of the masked Q)."""
    prompts, targets = toy_pairs(64)
    teacher_outputs = targets[::-1]
    student = tiny_model(tokenizer, "llama", seed=1)
    data = TrainData.from_texts(student, prompts, targets, max_prompt_tokens=24, max_target_tokens=12,
                                teacher_outputs=teacher_outputs)
    on_teacher_outputs = TrainData.from_texts(student, prompts, teacher_outputs, max_prompt_tokens=24,
                                              max_target_tokens=12)
    before = validation_nll(student, on_teacher_outputs, batch_size=64, device=CPU)
    cfg = TrainingConfig(steps=40, batch_size=16, lr=1e-2, warmup_steps=1, log_every=10, checkpoint_every=100)
    setup = TrainSetup(METHODS.get("bellman_distill"), method_config("bellman_distill", {"expert_term": form}),
                       student, data, cfg, 0, CPU, teacher=tiny_model(tokenizer, "llama", seed=2, width=48),
                       sampling=SamplingConfig(), max_new_tokens=12)
    train(setup, tmp_path)
    after = validation_nll(student, on_teacher_outputs, batch_size=64, device=CPU)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "train_log.jsonl")]
    if form == "textbook":
        assert losses[-1] < 0.9 * losses[0], losses
        assert after < before - 2.0, (before, after)
    else:  # dominated by the chi^2 term of V(s') over the whole vocabulary (about 50 here): it falls slowly
        assert losses[-1] < losses[0] - 1.0, losses


def test_the_functions_defaults_are_the_methods_and_a_bad_expert_term_is_named():
    """`bellman_terms` called bare is the method at its defaults (the paper's and public code's values)."""
    import dataclasses

    from xkdbench.config import ConfigError
    from xkdbench.methods.bellman_distill import BellmanDistillConfig, bellman_terms

    generator = torch.Generator().manual_seed(0)
    student, teacher = (3 * torch.randn(2, 4, 6, generator=generator) for _ in range(2))
    target_ids, mask = torch.randint(0, 6, (2, 4), generator=generator), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    defaults = {f.name: f.default for f in dataclasses.fields(BellmanDistillConfig)
                if f.name in ("top_p", "alpha", "gamma", "q_floor", "epsilon", "temperature", "expert_term")}
    assert len(defaults) == 7
    bare = bellman_terms(student, teacher, target_ids, mask)
    explicit = bellman_terms(student, teacher, target_ids, mask, **defaults)
    for name in bare[0]:
        assert torch.equal(bare[0][name], explicit[0][name]), name
    assert torch.equal(bare[1], explicit[1])
    for name, other in (("top_p", 0.5), ("alpha", 0.5), ("gamma", 0.5), ("temperature", 2.0),
                        ("expert_term", "code")):  # each setting reaches the terms, so the comparison above can fail
        moved = bellman_terms(student, teacher, target_ids, mask, **{**defaults, name: other})
        assert any(not torch.equal(moved[0][k], bare[0][k]) for k in bare[0]) or not torch.equal(moved[1], bare[1]), name
    with pytest.raises(ConfigError, match=r"^expert_term: 'x' is not allowed; allowed: textbook, code$"):
        bellman_terms(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                      torch.ones(1, 2), expert_term="x")


@pytest.mark.parametrize("form", ["textbook", "code"])
def test_every_setting_reaches_the_methods_terms(tokenizer, family, toy_data, form):
    """At settings away from every default, the method's terms are `bellman_terms` at those settings (the
    function's own defaults could not hide a setting the method drops)."""
    from xkdbench.methods.bellman_distill import bellman_terms

    settings = {"top_p": 0.6, "alpha": 0.3, "gamma": 0.5, "q_floor": -0.5, "epsilon": 0.05, "temperature": 2.0,
                "expert_term": form}
    method = make("bellman_distill", settings, tokenizer, family)
    batch = first_step(method, toy_data)
    ours = method.loss(batch)
    expected, _ = bellman_terms(method.ctx.student_logits(batch), method.ctx.teacher_logits(batch), batch.target_ids,
                                batch.target_mask, **settings)
    assert set(ours) == set(expected)
    for name in ours:
        torch.testing.assert_close(ours[name], expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("form", ["textbook", "code"])
@pytest.mark.parametrize("tokens", [1, 9])
def test_the_loss_is_the_terms_mean_at_every_setting(form, tokens):
    """`bellman_distill_loss` passes every setting on and divides the terms' sum by their token count N,
    also when N is 1 (one valid token: N counts it in both forms)."""
    from xkdbench.methods.bellman_distill import bellman_terms

    student, teacher, ids, _ = fixed_inputs(seed=4)
    mask = torch.zeros(B, T, dtype=torch.float64)
    mask.view(-1)[:tokens] = 1  # row-major: the first `tokens` positions of row 0, then row 1
    settings = {"top_p": 0.6, "alpha": 0.3, "gamma": 0.5, "q_floor": -0.5, "epsilon": 0.05, "temperature": 2.0,
                "expert_term": form}
    terms, count = bellman_terms(student, teacher, ids, mask, **settings)
    n = mask.sum() if form == "textbook" else mask[:, :-1].sum()
    assert float(count) == float(n) and (tokens > 1 or float(n) == 1.0)
    loss = bellman_distill_loss(student, teacher, ids, mask, **settings)
    torch.testing.assert_close(loss, sum(t.sum() for t in terms.values()) / n, rtol=1e-12, atol=0)
    bare_floor = bellman_distill_loss(student, teacher, ids, mask, **{**settings, "q_floor": -10.0})
    assert not torch.equal(loss, bare_floor)  # the floor binds at these logits, so dropping it shows
