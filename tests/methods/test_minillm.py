"""MiniLLM: teacher-mixed sampling, returns of both forms, PPO clipping, the exact single-step term,
rollout reuse, training on both families and resume."""
from __future__ import annotations

import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.core.mixture_sampling import sample_mixture, sample_teacher_mixed
from xkdbench.core.trainer import TrainSetup, train
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.minillm import clipped_surrogate, code_advantages, paper_returns
from xkdbench.models.batch import mask_after_first_eos

CPU = torch.device("cpu")


def make(tokenizer, family, **settings):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0)
    return METHODS.get("minillm")(method_config("minillm", settings), ctx)


def run(tokenizer, family, data, out, *, settings, steps, stop_after=None):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
    setup = TrainSetup(METHODS.get("minillm"), method_config("minillm", settings), student, data, cfg, 0, CPU,
                       teacher=tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(), max_new_tokens=8)
    return student, train(setup, out, stop_after=stop_after)


def examples(impl, data, step=0, grad_accum=1):
    return StepLoader(data, impl.ctx.student, batch_size=8, grad_accum=grad_accum, seed=0).step_examples(step)


def favour_eos(model, bonus=4.0):
    """Raise the EOS logit so rows finish at different steps (untrained models almost never stop)."""
    def hook(module, inputs, output):
        output = output.clone()
        output[..., model.eos_id] += bonus
        return output
    model.model.lm_head.register_forward_hook(hook)


def reference_mixture(student, teacher, prompts, weight, max_new_tokens):
    """The mixture sampler written the slow way: a full forward per token (no KV cache)."""
    rows = prompts.size
    ids, unfinished = torch.zeros(rows, 0, dtype=torch.long), torch.ones(rows, dtype=torch.bool)
    for _ in range(max_new_tokens):
        targets = torch.cat([ids, torch.full((rows, 1), student.pad_id)], dim=1)
        batch = prompts.with_targets(targets, torch.ones_like(targets))
        with torch.no_grad():
            probs = torch.softmax(student.target_logits(batch)[:, -1].float(), dim=-1)
            if weight > 0:
                probs = weight * torch.softmax(teacher.target_logits(batch)[:, -1].float(), dim=-1) + (1 - weight) * probs
        token = torch.multinomial(probs, 1).squeeze(1)
        token = torch.where(unfinished, token, torch.full_like(token, student.pad_id))
        ids = torch.cat([ids, token[:, None]], dim=1)
        unfinished &= token != student.eos_id
        if not unfinished.any():
            break
    return mask_after_first_eos(ids, student.eos_id, student.pad_id)


@pytest.mark.parametrize("decoder", ["lean", "hf"])
@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_mixture_sampling_equals_a_reference_loop(tokenizer, family, toy_data, weight, decoder):
    """Both incremental decoders: the suite's lean one and Hugging Face's KV cache (for other models)."""
    student, teacher = tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48)
    student.decoder = teacher.decoder = decoder
    favour_eos(student), favour_eos(teacher)
    prompts = StepLoader(toy_data, student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0].gold
    torch.manual_seed(3)
    out = sample_mixture(student, teacher, prompts, teacher_weight=weight, max_new_tokens=8)
    torch.manual_seed(3)
    ids, mask = reference_mixture(student, teacher, prompts, weight, 8)
    assert torch.equal(out.target_ids, ids) and torch.equal(out.target_mask, mask)
    assert len(set(mask.sum(1).tolist())) > 1, "rows should finish at different lengths"
    if weight == 0:  # exactly the student's own sampler
        torch.manual_seed(3)
        generated = student.generate(prompts, max_new_tokens=8, do_sample=True)
        assert torch.equal(out.target_ids, generated.target_ids) and torch.equal(out.target_mask, generated.target_mask)


def test_mixture_sampling_counts_its_costs(tokenizer, family, toy_data):
    impl = make(tokenizer, family)
    prompts = examples(impl, toy_data)[0].gold
    out = sample_teacher_mixed(impl.ctx, prompts, 0.2)
    assert int(impl.ctx.generated_tokens) == int(out.target_mask.sum())
    assert int(impl.ctx.teacher_forward_sequences) == prompts.size
    sample_teacher_mixed(impl.ctx, prompts, 0.0)  # the teacher does not decode
    assert int(impl.ctx.teacher_forward_sequences) == prompts.size



def test_mixture_sampling_in_a_run_draws_at_the_runs_sampling_temperature(tokenizer, family, toy_data):
    """The context's sampling temperature reaches the mixture: the run's first draw equals `sample_mixture`
    at that temperature on the run's first sampling stream, and differs from the draw at temperature 1."""
    def context(temperature):
        return TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                            SamplingConfig(sampling_temperature=temperature), max_new_tokens=8, device=CPU,
                            use_bf16=False, seed=0)

    prompts = examples(make(tokenizer, family), toy_data)[0].gold
    ctx = context(0.5)
    drawn = sample_teacher_mixed(ctx, prompts, 0.3)
    reference = context(0.5)
    with reference.sampling_stream():
        expected = sample_mixture(reference.student, reference.teacher, prompts, teacher_weight=0.3,
                                  max_new_tokens=8, temperature=0.5)
    assert torch.equal(drawn.target_ids, expected.target_ids)
    at_one = sample_teacher_mixed(context(1.0), prompts, 0.3)
    assert not torch.equal(drawn.target_ids, at_one.target_ids)


def test_paper_returns_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, -1.0, 5.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    # row 1: (2+3+4)/3, (3+4)/2, 4/1, last token 0; row 2: (-1+5)/2, 5/1, 0, padding 0
    expected = torch.tensor([[3.0, 3.5, 4.0, 0.0], [2.0, 5.0, 0.0, 0.0]])
    torch.testing.assert_close(paper_returns(rewards, mask), expected)


def test_code_advantages_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, -1.0, 5.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    # gamma 0.5, current reward included: row 1 G = 3.25, 4.5, 5, 4 over 4, 3, 2, 1 tokens left;
    # row 2 G = 2.75, 1.5, 5 over 3, 2, 1 tokens left
    returns = [3.25 / 4, 4.5 / 3, 5 / 2, 4 / 1, 2.75 / 3, 1.5 / 2, 5 / 1]
    mean, std = statistics.mean(returns), statistics.stdev(returns)  # unbiased, as torch.var_mean
    white = [(r - mean) / (std ** 2 + 1e-8) ** 0.5 for r in returns]
    expected = torch.tensor([white[:4], white[4:] + [0.0]])
    torch.testing.assert_close(code_advantages(rewards, mask, 0.5), expected)


def test_ppo_clipping_follows_the_formula():
    ratio = torch.tensor([0.5, 0.9, 1.5, 0.5, 1.5], requires_grad=True)
    advantage = torch.tensor([2.0, 2.0, 2.0, -2.0, -2.0])
    loss = clipped_surrogate(ratio, advantage, 0.2)
    # A > 0: min(rho A, clip(rho) A): 0.5 -> 1.0 (unclipped), 1.5 -> 1.2 * 2 (clipped, no gradient)
    # A < 0: 0.5 -> 0.8 * -2 (clipped, no gradient), 1.5 -> 1.5 * -2 (unclipped)
    torch.testing.assert_close(loss, torch.tensor([-1.0, -1.8, -2.4, 1.6, 3.0]))
    loss.sum().backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([-2.0, -2.0, 0.0, 0.0, 2.0]))


def test_zero_teacher_weight_samples_the_student_with_unit_weights(tokenizer, family, toy_data):
    impl = make(tokenizer, family, teacher_mix_weight=0.0)
    gold = examples(impl, toy_data)[0].gold
    rollout = impl.sequences(examples(impl, toy_data)[0], 0)
    impl.ctx.sampling_calls = 0  # the same draw of the run's sampling stream, through the student's sampler
    student = impl.ctx.sample_student(gold)
    assert torch.equal(rollout.target_ids, student.target_ids)
    mask = rollout.target_mask.bool()
    assert torch.equal(rollout.weights[mask], torch.ones(int(mask.sum())))
    assert torch.equal(rollout.mixture_logprobs, rollout.old_logprobs)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_loss_terms_at_the_first_step_of_a_rollout(tokenizer, family, toy_data, form):
    impl = make(tokenizer, family, return_form=form)
    batch = impl.sequences(examples(impl, toy_data)[0], 0)
    terms = impl.loss(batch)
    student, teacher = impl.ctx.student.target_logits(batch), impl.ctx.teacher.target_logits(batch)
    log_q, log_p = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
    rkl = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1)  # sum_v q (log q - log p)
    mask, w, adv = batch.target_mask.bool(), batch.weights, batch.advantages
    assert ((w[mask] - 1).abs() > 1e-3).any(), "teacher mixing should move the weights off 1"
    logp_y, logq_y = (x.gather(-1, batch.target_ids[..., None]).squeeze(-1) for x in (log_p, log_q))  # (B, T)
    torch.testing.assert_close(batch.rewards[mask], (logp_y - logq_y)[mask])  # r_t = log p - log q_old
    q_y, p_y = logq_y.exp(), logp_y.exp()
    torch.testing.assert_close(w[mask], (q_y / (0.2 * p_y + 0.8 * q_y))[mask])  # w_t = q_old / pi_mix
    if form == "paper":  # rho = 1 exactly: pg = -w R; the single-step term is w * RKL
        torch.testing.assert_close(terms["single_step"][mask], (w * rkl)[mask])
        torch.testing.assert_close(terms["pg"][mask], (-w * adv)[mask])
        torch.testing.assert_close(adv, paper_returns(batch.rewards, batch.target_mask))
    else:  # the clip acts on w * rho = w; the single-step term is unweighted
        torch.testing.assert_close(terms["single_step"][mask], rkl[mask])
        expected = torch.max(-adv * w, -adv * w.clamp(0.8, 1.2))
        torch.testing.assert_close(terms["pg"][mask], expected[mask])
    assert all(torch.isfinite(t[mask]).all() for t in terms.values())


@pytest.mark.parametrize("form", ["paper", "code"])
def test_policy_term_away_from_the_rollouts_policy(tokenizer, family, toy_data, form):
    """rho != 1 (a later PPO epoch): paper clips rho and weights by w; the code clips w * rho."""
    impl = make(tokenizer, family, return_form=form)
    batch = impl.sequences(examples(impl, toy_data)[0], 0)
    g = torch.Generator().manual_seed(1)
    batch.old_logprobs = batch.old_logprobs + 0.3 * torch.randn(batch.old_logprobs.shape, generator=g)
    with torch.no_grad():
        pg = impl.loss(batch)["pg"]
        logq_y = F.log_softmax(impl.ctx.student.target_logits(batch), -1)
    rho = (logq_y.gather(-1, batch.target_ids[..., None]).squeeze(-1) - batch.old_logprobs).exp()
    mask, w, adv, eps = batch.target_mask.bool(), batch.weights, batch.advantages, impl.config.clip_range
    assert ((rho[mask] - 1).abs() > 0.05).any()
    if form == "paper":
        expected = w * torch.max(-adv * rho, -adv * rho.clamp(1 - eps, 1 + eps))
    else:
        expected = torch.max(-adv * w * rho, -adv * (w * rho).clamp(1 - eps, 1 + eps))
    torch.testing.assert_close(pg[mask], expected[mask])


def test_a_rollout_serves_ppo_epochs_steps_per_micro_batch(tokenizer, family, toy_data):
    impl = make(tokenizer, family, ppo_epochs=2)
    seen, generated = [], []
    for step in range(3):
        seen.append([impl.sequences(ex, step) for ex in examples(impl, toy_data, step, grad_accum=2)])
        generated.append(int(impl.ctx.generated_tokens))
    assert not torch.equal(seen[0][0].prompt_ids, seen[0][1].prompt_ids)
    for k in range(2):
        assert torch.equal(seen[1][k].target_ids, seen[0][k].target_ids) and torch.equal(seen[1][k].weights, seen[0][k].weights)
    assert generated[0] == generated[1] < generated[2]
    # the cached rollouts survive a state round trip: a fresh method continues without sampling again
    again = make(tokenizer, family, ppo_epochs=2)
    again.load_state_dict(impl.state_dict())
    reused = again.sequences(examples(impl, toy_data, 2, grad_accum=2)[0], 2)
    assert torch.equal(reused.advantages, seen[2][0].advantages) and int(again.ctx.generated_tokens) == 0


def test_training_runs_and_logs_finite_terms(tmp_path, tokenizer, family, toy_data):
    form = {"llama": "paper", "t5": "code"}[family]  # both forms, both families, two runs
    _, summary = run(tokenizer, family, toy_data, tmp_path / "r",
                     settings={"ppo_epochs": 2, "return_form": form}, steps=3)
    records = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("loss", "pg", "single_step", "grad_norm"))
    assert summary["generated_tokens"] > 0 and summary["teacher_forward_sequences"] == 2 * 8 * 2 + 3 * 8


@pytest.mark.parametrize("family", ["llama"])  # the method state is the same for both families
def test_resume_in_the_middle_of_a_rollout_equals_uninterrupted(tmp_path, tokenizer, family, toy_data):
    settings = {"ppo_epochs": 2}
    full, summary = run(tokenizer, family, toy_data, tmp_path / "full", settings=settings, steps=4)
    run(tokenizer, family, toy_data, tmp_path / "cut", settings=settings, steps=4, stop_after=3)
    resumed, resumed_summary = run(tokenizer, family, toy_data, tmp_path / "cut", settings=settings, steps=4)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    logs = [[json.loads(line) for line in open(tmp_path / d / "train_log.jsonl")] for d in ("full", "cut")]
    for x, y in zip(*logs, strict=True):
        assert {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
    assert resumed_summary["generated_tokens"] == summary["generated_tokens"]


@pytest.mark.parametrize("settings,field", [({"lm_loss_weight": 0.5}, "corpus"), ({"return_form": "lmops"}, "return_form"),
                                            ({"teacher_mix_weight": 1.5}, "teacher_mix_weight"), ({"ppo_epochs": 0}, "ppo_epochs")])
def test_bad_settings_are_refused(settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config("minillm", settings, "config.methods[0].settings")


@pytest.mark.parametrize("family", ["llama"])
@pytest.mark.parametrize("decoder", ["lean", "hf"])
def test_mixture_sampling_uses_the_lean_decoder_only_when_asked(tokenizer, family, toy_data, monkeypatch, decoder):
    """The lean decoder is the fast path `generate` takes; `decoder: hf` keeps Hugging Face's modules."""
    from xkdbench.core import mixture_sampling
    calls = []
    original = mixture_sampling.lean_decode.decoder_for
    monkeypatch.setattr(mixture_sampling.lean_decode, "decoder_for",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    student, teacher = tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48)
    student.decoder = teacher.decoder = decoder
    prompts = StepLoader(toy_data, student, batch_size=4, grad_accum=1, seed=0).step_examples(0)[0].gold
    sample_mixture(student, teacher, prompts, teacher_weight=0.5, max_new_tokens=3)
    assert len(calls) == (2 if decoder == "lean" else 0)


@pytest.mark.parametrize("decoder", ["lean", "hf"])
def test_incremental_decoders_give_the_full_forwards_logits(tokenizer, family, toy_data, decoder):
    """Logits, not draws: a position error moves the logits a little and a draw rarely, so every step's
    logits of both incremental decoders are compared with a full forward over the same left-padded rows."""
    from xkdbench.core.mixture_sampling import _decoder
    student = tiny_model(tokenizer, family, seed=1)
    student.decoder = decoder
    prompts = StepLoader(toy_data, student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0].gold
    assert len(set(prompts.prompt_mask.sum(1).tolist())) > 1, "rows of different prompt lengths (padding)"
    tokens = torch.randint(4, 100, (prompts.size, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = student.target_logits(prompts.with_targets(tokens, torch.ones_like(tokens))).float()  # (B, 5, V)
        incremental = _decoder(student, prompts, max_new_tokens=5)
        for t in range(5):
            torch.testing.assert_close(incremental.logits, full[:, t], rtol=0, atol=1e-5, msg=f"step {t}")
            if t < 4:
                incremental.advance(tokens[:, t])


@pytest.mark.parametrize("family", ["llama"])
@pytest.mark.parametrize("weight", [0.2, 0.0, 1.0])
def test_mixture_log_probabilities_at_a_sampling_temperature_by_hand(tokenizer, family, weight):
    """log(w softmax(p / tau) + (1 - w) softmax(q / tau)) at the drawn tokens, tau = 0.5, written out; at
    w = 1 the teacher's own log-probabilities, at w = 0 the student's."""
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(sampling_temperature=0.5), max_new_tokens=8, device=CPU, use_bf16=False, seed=0)
    impl = METHODS.get("minillm")(method_config("minillm", {"teacher_mix_weight": weight}), ctx)
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g) * 3
    ids = torch.randint(0, 7, (2, 3), generator=g)
    mix = weight * torch.softmax(teacher / 0.5, -1) + (1 - weight) * torch.softmax(student / 0.5, -1)
    expected = mix.gather(-1, ids[..., None]).squeeze(-1).log()
    torch.testing.assert_close(impl.mixture_logprobs(student, teacher, ids), expected, rtol=1e-5, atol=1e-6)


def test_code_advantages_of_a_single_token_and_of_equal_returns_are_zero():
    """One valid token has no variance (the unbiased var of one value is NaN, so it is taken as 0), and
    equal returns have variance 0: both give advantage 0, finite, through the 1e-8 of sqrt(var + 1e-8)."""
    one = code_advantages(torch.tensor([[2.0, 5.0]]), torch.tensor([[1.0, 0.0]]), discount=1.0)
    assert torch.equal(one, torch.zeros(1, 2))
    flat = code_advantages(torch.tensor([[0.0, 2.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]), 1.0)
    assert torch.equal(flat, torch.zeros(2, 2))  # the valid returns are 2 and 2: variance 0
