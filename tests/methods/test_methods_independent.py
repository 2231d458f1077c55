"""Methods at non-default settings against references computed without the code under test.

- the loss temperature, supervised KD's hard-label weight, the skew and JSD parameters: per-token
  terms against torch.nn.functional on the tempered logits, and one accumulated step's gradient
  against a hand-written loss;
- X-KD's `detach_reward_features`: the student gradient of the regulariser against a hand-written
  AVRIL term on the hidden state with and without gradient;
- the training sampling temperature and top_p: as either goes to 0 an on-policy batch is the greedy
  continuation, which a teacher-forced argmax checks;
- GKD's per-step coin under gradient accumulation: one branch per step for all micro-batches, the
  coins of the run's `decisions` stream, a binomial test of their frequency;
- DistiLLM's replay draws: from the run's seeded `decisions` stream (seed recomputed here from its
  documented recipe), whatever the global generators do.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from tests.conftest import tiny_model, toy_pairs
from xkdbench.config import SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader, TrainData
from xkdbench.core.trainer import TrainSetup, backward_step, train
from xkdbench.methods import METHODS, method_config

CPU = torch.device("cpu")


def context(tokenizer, family, *, sampling=None, seed=0, **kwargs):
    return TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                        sampling or SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=seed,
                        **kwargs)


def make(method, settings, tokenizer, family, **kwargs):
    return METHODS.get(method)(method_config(method, settings), context(tokenizer, family, **kwargs))


def gold_batches(impl, data, *, batch_size=8, grad_accum=1, step=0):
    return StepLoader(data, impl.ctx.student, batch_size=batch_size, grad_accum=grad_accum, seed=0).step_examples(step)


def decisions_seed(seed: int, stream: int = 0) -> int:
    """The seed of a run's `decisions` stream, from its documented recipe (sha256 of seed/offset/name)."""
    digest = hashlib.sha256(f"{seed}/{stream}/decisions".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# -- references on probabilities, in float64 ------------------------------------------------------
def tempered_log_probs(student_logits, teacher_logits, temperature):
    """(log q, log p) of the tempered logits, float64."""
    return (F.log_softmax(student_logits.double() / temperature, dim=-1),
            F.log_softmax(teacher_logits.double() / temperature, dim=-1))


def kl(log_a, log_b):
    """KL(a || b) over the last dim; F.kl_div(input=log b, target=log a) is sum a (log a - log b)."""
    return F.kl_div(log_b, log_a, reduction="none", log_target=True).sum(-1)


def mixture(log_a, log_b, weight_a):
    return torch.log(weight_a * log_a.exp() + (1 - weight_a) * log_b.exp())


REFERENCES = {  # divergence settings -> KL of the tempered distributions, written out
    "forward_kl": lambda q, p, s: kl(p, q),
    "reverse_kl": lambda q, p, s: kl(q, p),
    "jsd": lambda q, p, s: s["beta"] * kl(p, mixture(p, q, s["beta"])) + (1 - s["beta"]) * kl(q, mixture(p, q, s["beta"])),
    "skew_forward_kl": lambda q, p, s: kl(p, mixture(p, q, s["alpha"])),
    "skew_reverse_kl": lambda q, p, s: kl(q, mixture(q, p, s["alpha"])),
    "total_variation": lambda q, p, s: 0.5 * (p.exp() - q.exp()).abs().sum(-1),
}

DIVERGENCE_CASES = [
    ("token_divergence", {"divergence": "jsd", "beta": 0.3, "loss_temperature": 2.0}),
    ("token_divergence", {"divergence": "total_variation", "loss_temperature": 0.5}),
    ("gkd", {"divergence": "reverse_kl", "student_data_fraction": 0.0, "loss_temperature": 0.5}),
    ("gkd", {"divergence": "jsd", "beta": 0.8, "student_data_fraction": 0.0, "loss_temperature": 3.0}),
    ("distillm", {"divergence": "skew_reverse_kl", "alpha": 0.3, "loss_temperature": 1.7, "schedule_steps": 10}),
    ("distillm", {"divergence": "skew_forward_kl", "alpha": 0.25, "loss_temperature": 2.5, "schedule_steps": 10}),
    ("xkd_div", {"divergence": "forward_kl", "student_data_fraction": 0.0, "loss_temperature": 2.0}),
]


@pytest.mark.parametrize("method,settings", DIVERGENCE_CASES, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items() if k != "schedule_steps"))
def test_divergence_terms_use_the_loss_temperature_and_parameters(tokenizer, family, toy_data, method, settings):
    """The per-token divergence of each method that takes DivergenceSettings is the divergence of
    softmax(logits / loss_temperature), with its own beta or alpha (no tau^2 factor)."""
    impl = make(method, settings, tokenizer, family, validate_every=1)
    batch = gold_batches(impl, toy_data)[0].gold
    terms = impl.loss(batch)
    with torch.no_grad():
        student, teacher = impl.ctx.student.target_logits(batch), impl.ctx.teacher.target_logits(batch)
    reference = REFERENCES[settings["divergence"]]
    expected = reference(*tempered_log_probs(student, teacher, settings["loss_temperature"]), settings)
    torch.testing.assert_close(terms[settings["divergence"]].double(), expected, atol=1e-6, rtol=1e-5)
    at_one = reference(*tempered_log_probs(student, teacher, 1.0), settings)
    assert not torch.allclose(expected, at_one, rtol=1e-2), "the temperature must matter at these logits"


@pytest.mark.parametrize("temperature,weight", [(2.0, 0.7), (0.5, 3.0)])
def test_supervised_kd_at_a_temperature_with_a_hard_label_weight(tokenizer, family, toy_data, temperature, weight):
    """forward_kl on tempered logits; the NLL on the untempered student, times hard_label_weight."""
    impl = make("supervised_kd", {"loss_temperature": temperature, "hard_label_weight": weight}, tokenizer, family)
    batch = gold_batches(impl, toy_data)[0].gold
    terms = impl.loss(batch)
    with torch.no_grad():
        student, teacher = impl.ctx.student.target_logits(batch), impl.ctx.teacher.target_logits(batch)
    log_q, log_p = tempered_log_probs(student, teacher, temperature)
    torch.testing.assert_close(terms["forward_kl"].double(), kl(log_p, log_q), atol=1e-6, rtol=1e-5)
    nll = F.cross_entropy(student.double().transpose(1, 2), batch.target_ids, reduction="none")  # (B, T)
    torch.testing.assert_close(terms["nll"].double(), weight * nll, atol=1e-5, rtol=1e-5)


def test_an_accumulated_step_of_supervised_kd_is_the_hand_written_token_mean(tokenizer, family, toy_data):
    """Through the core's backward_step, 2 micro-batches of 4: the gradient and the logged terms are
    those of sum over the step's target tokens of [KL_tau(p || q) + w CE(q)] / (step's token count)."""
    temperature, weight = 2.0, 0.4
    impl = make("supervised_kd", {"loss_temperature": temperature, "hard_label_weight": weight}, tokenizer, family)
    micro = [impl.sequences(ex, 0) for ex in gold_batches(impl, toy_data, batch_size=4, grad_accum=2)]
    tokens, totals = backward_step(impl, micro)
    got = {n: p.grad.clone() for n, p in impl.ctx.student.model.named_parameters()}

    reference_student = tiny_model(tokenizer, family, seed=1)  # the same initial weights
    n_tokens = sum(int(b.target_mask.sum()) for b in micro)
    kl_sum, nll_sum = 0.0, 0.0
    for batch in micro:
        student = reference_student.target_logits(batch)
        with torch.no_grad():
            teacher = impl.ctx.teacher.target_logits(batch)
        mask = batch.target_mask.double()
        log_q, log_p = tempered_log_probs(student, teacher, temperature)
        kl_sum = kl_sum + (kl(log_p, log_q) * mask).sum()
        nll_sum = nll_sum + (F.cross_entropy(student.double().transpose(1, 2), batch.target_ids, reduction="none")
                             * mask).sum()
    ((kl_sum + weight * nll_sum) / n_tokens).backward()
    assert int(tokens) == n_tokens
    torch.testing.assert_close(totals["forward_kl"].double() / n_tokens, kl_sum.detach() / n_tokens, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(totals["nll"].double() / n_tokens, weight * nll_sum.detach() / n_tokens, rtol=1e-5, atol=1e-7)
    for name, parameter in reference_student.model.named_parameters():
        expected = parameter.grad.double()
        torch.testing.assert_close(got[name].double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) + 1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")


# -- X-KD's detach_reward_features ---------------------------------------------------------------
def hand_avril(logits, target_ids, mask, mu, log_sigma, *, lam, kl_weight):
    """sum over transitions (t and t+1 valid) of kl_weight KL(N(mu, s^2) || N(0, 1)) - lam log N(delta; mu, s^2),
    delta = logit(y_t) - logit(y_{t+1}) (q_map logit, discount 1)."""
    q = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1).double()  # (B, T)
    valid = mask.bool()
    has_next = valid[:, :-1] & valid[:, 1:]  # transitions t -> t+1
    delta = q[:, :-1] - q[:, 1:]
    mu, log_sigma = mu[:, :-1].double(), log_sigma[:, :-1].double()
    sigma2 = torch.exp(2 * log_sigma)
    prior_kl = 0.5 * (mu ** 2 + sigma2 - 1) - log_sigma
    log_density = -0.5 * math.log(2 * math.pi) - log_sigma - (delta - mu) ** 2 / (2 * sigma2)
    return ((kl_weight * prior_kl - lam * log_density) * has_next).sum()


@pytest.mark.parametrize("detach", [True, False])
def test_detach_reward_features_decides_whether_the_reward_shapes_the_student_features(tokenizer, family, toy_data,
                                                                                       detach):
    """The student's gradient from the regulariser equals the hand-written AVRIL term with the head
    reading h_t without gradient (detach) or with it; the two differ once the head is not at its zero init."""
    settings = {"reward_likelihood_weight": 0.5, "kl_weight": 1.0, "q_map": "logit", "discount": 1.0,
                "detach_reward_features": detach}
    results = {}
    for name in ("method", "reference"):
        impl = make("xkd_seq", settings, tokenizer, family)
        with torch.no_grad():  # a head away from its zero init, so that mu and sigma depend on h_t
            generator = torch.Generator().manual_seed(3)
            impl.reward_head.linear.weight.copy_(0.1 * torch.randn(impl.reward_head.linear.weight.shape,
                                                                   generator=generator))
            impl.reward_head.linear.bias.copy_(torch.tensor([0.2, -0.3]))
        batch = impl.sequences(gold_batches(impl, toy_data)[0], 0)  # the teacher's cached outputs
        if name == "method":
            r = impl.loss(batch)["avril"]
            (r * batch.target_mask).sum().backward()
        else:
            logits, hidden = impl.ctx.student.target_logits(batch, with_hidden=True)
            features = hidden.detach() if detach else hidden
            weight, bias = impl.reward_head.linear.weight, impl.reward_head.linear.bias
            out = features.float() @ weight.T + bias  # (B, T, 2)
            mu, log_sigma = out[..., 0], out[..., 1].clamp(-5.0, 5.0)
            hand_avril(logits, batch.target_ids, batch.target_mask, mu, log_sigma, lam=0.5, kl_weight=1.0).backward()
        results[name] = {n: p.grad.clone() for n, p in impl.ctx.student.model.named_parameters()}
        results[name + "_head"] = {n: p.grad.clone() for n, p in impl.reward_head.named_parameters()}
    for key in ("", "_head"):
        for name, grad in results["method" + key].items():
            expected = results["reference" + key][name].to(grad.dtype)  # float32 sums of terms up to ~1e2
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) + 1e-7,
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_detached_and_attached_features_give_different_student_gradients(tokenizer, family, toy_data):
    """The two settings of detach_reward_features train the student differently (the check above has teeth)."""
    grads = []
    for detach in (True, False):
        impl = make("xkd_seq", {"reward_likelihood_weight": 0.5, "detach_reward_features": detach}, tokenizer, family)
        with torch.no_grad():
            impl.reward_head.linear.weight.normal_(std=0.1, generator=torch.Generator().manual_seed(3))
        batch = impl.sequences(gold_batches(impl, toy_data)[0], 0)
        (impl.loss(batch)["avril"] * batch.target_mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in impl.ctx.student.model.parameters()]))
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6)


# -- the training sampling temperature and top_p -------------------------------------------------
def is_greedy(model, batch) -> bool:
    """Every valid target token is the argmax of a full teacher-forced forward (no decoding code)."""
    with torch.no_grad():
        logits = model.target_logits(batch)
    valid = batch.target_mask.bool()
    return bool(torch.equal(logits.argmax(-1)[valid], batch.target_ids[valid]))


@pytest.mark.parametrize("sampling,greedy", [
    (SamplingConfig(sampling_temperature=1e-4), True),  # T -> 0: the argmax
    (SamplingConfig(top_p=1e-6), True),  # the nucleus holds the most probable token only
    (SamplingConfig(sampling_temperature=1e-4, top_p=0.5), True),
    (SamplingConfig(), False),  # T = 1, top_p = 1: the near-uniform untrained model is far from greedy
    (SamplingConfig(sampling_temperature=3.0, top_p=0.9), False),
], ids=["T-small", "top_p-small", "both", "defaults", "hot"])
def test_on_policy_samples_follow_the_sampling_settings(tokenizer, family, toy_data, sampling, greedy):
    """GKD's on-policy batch is drawn with the experiment's sampling temperature and top_p."""
    impl = make("gkd", {"student_data_fraction": 1.0}, tokenizer, family, sampling=sampling)
    examples = gold_batches(impl, toy_data)[0]
    batch = impl.sequences(examples, 0)
    assert torch.equal(batch.prompt_ids, examples.gold.prompt_ids) and impl.ctx.sampling_calls == 1
    assert is_greedy(impl.ctx.student, batch) == greedy


def test_sampling_temperature_reaches_distillm_fresh_generations(tokenizer, family, toy_data):
    impl = make("distillm", {"initial_threshold": 1.0, "schedule_steps": 10}, tokenizer, family,
                sampling=SamplingConfig(sampling_temperature=1e-4), validate_every=1)
    assert impl.source(0) == "fresh"
    assert is_greedy(impl.ctx.student, impl.sequences(gold_batches(impl, toy_data)[0], 0))


# -- GKD's per-step coin under gradient accumulation ----------------------------------------------
def test_gkd_coin_is_one_per_step_for_all_micro_batches_and_follows_lambda(tokenizer, monkeypatch):
    """lambda 0.3, 3 micro-batches per step, 600 steps: every micro-batch of a step takes the same
    branch, the branch of step k is the k-th draw of the run's `decisions` stream below lambda, and
    the on-policy frequency passes a binomial test against lambda."""
    fraction, accum, steps = 0.3, 3, 600
    impl = make("gkd", {"student_data_fraction": fraction}, tokenizer, "llama", seed=4)
    sampled = []

    def sample_student(batch):  # no decoding: the branch is what is counted; another object than the fixed batch
        sampled.append(batch)
        return batch.with_targets(batch.target_ids.clone(), batch.target_mask.clone())

    monkeypatch.setattr(impl.ctx, "sample_student", sample_student)
    prompts, targets = toy_pairs(16)
    data = TrainData.from_texts(impl.ctx.student, prompts, targets, max_prompt_tokens=24, max_target_tokens=12)
    examples = gold_batches(impl, data, batch_size=2, grad_accum=accum)
    reference = random.Random(decisions_seed(4))
    branches = []
    for step in range(steps):
        micro = [impl.sequences(ex, step) is not ex.gold for ex in examples]
        assert len(set(micro)) == 1, f"step {step}: micro-batches took different branches {micro}"
        branches.append(micro[0])
        assert micro[0] == (reference.random() < fraction), f"step {step}: not the run's coin"
    on = sum(branches)
    assert len(sampled) == accum * on
    assert binomtest(on, steps, fraction).pvalue > 1e-3
    assert 0 < on < steps


def test_gkd_coin_through_the_trainer_with_accumulation(tmp_path, tokenizer, family, toy_data):
    """A whole run (2 micro-batches per step, lambda 0.5, real samples): each step's micro-batches are
    both sampled or both fixed, in the pattern of the run's `decisions` stream."""
    seen = []

    class Spy(METHODS.get("gkd")):
        def sequences(self, examples, step):
            out = super().sequences(examples, step)
            seen.append((step, out is not (examples.teacher_output if self.config.seq_kd else examples.gold)))
            return out

    steps, seed = 8, 6
    cfg = TrainingConfig(steps=steps, batch_size=4, grad_accum=2, lr=1e-3, warmup_steps=0, log_every=100,
                         checkpoint_every=100)
    setup = TrainSetup(Spy, method_config("gkd", {"student_data_fraction": 0.5}), tiny_model(tokenizer, family, seed=1),
                       toy_data, cfg, seed, CPU, teacher=tiny_model(tokenizer, family, seed=2, width=48),
                       sampling=SamplingConfig(), max_new_tokens=6)
    summary = train(setup, tmp_path)
    reference = random.Random(decisions_seed(seed))
    expected = [reference.random() < 0.5 for _ in range(steps)]
    assert 0 < sum(expected) < steps, "the seed should give both branches"
    assert seen == [(step, expected[step]) for step in range(steps) for _ in range(2)]
    assert (summary["generated_tokens"] > 0) == any(expected)


# -- DistiLLM's replay draws ----------------------------------------------------------------------
def rows(batch):
    """(prompt tokens, target tokens) of each row, padding removed."""
    return [([t for t, m in zip(p, pm, strict=True) if m], [t for t, m in zip(y, ym, strict=True) if m])
            for p, pm, y, ym in zip(batch.prompt_ids.tolist(), batch.prompt_mask.tolist(), batch.target_ids.tolist(),
                                    batch.target_mask.tolist(), strict=True)]


@pytest.mark.parametrize("seed", [0, 7])
def test_distillm_replays_are_drawn_from_the_runs_decisions_stream(tokenizer, family, toy_data, seed):
    """Threshold 1, T = 4, a buffer of 8 rows: fresh generations while the buffer fills or the fresh share
    wins, replays afterwards. One generator seeded from (run seed, stream offset, "decisions") gives the
    step's coin, then for a replay the buffer rows it picks (without replacement): reproduced here with
    Python's random.Random and a deque, while the global generators are reseeded at every step (a replay
    drawn from them would not follow)."""
    impl = make("distillm", {"initial_threshold": 1.0, "schedule_steps": 4, "replay_buffer_size": 8}, tokenizer,
                family, seed=seed, validate_every=1)
    reference, buffer, sources = random.Random(decisions_seed(seed)), deque(maxlen=8), []
    for step in range(10):
        random.seed(1000 + step)
        torch.manual_seed(1000 + step)
        examples = gold_batches(impl, toy_data, step=step)[0]
        batch = impl.sequences(examples, step)
        u, share = reference.random(), min(1.0, max(0.0, 1.0 - (step + 1) / 4))
        source = "fresh" if u < share or len(buffer) < 8 else "replay"
        sources.append(source)
        if source == "fresh":
            assert not torch.equal(batch.target_ids, examples.gold.target_ids)
            buffer.extend(rows(batch))
        else:
            picked = reference.sample(range(len(buffer)), min(examples.gold.size, len(buffer)))
            assert rows(batch) == [buffer[i] for i in picked], f"step {step}: other rows than the stream's"
    assert sources.count("replay") >= 3 and sources.count("fresh") >= 1


def test_distillm_replay_order_depends_on_the_run_seed_only(tokenizer, family, toy_data):
    """T = 1: step 0 fills the buffer (8 rows), later steps replay all 8 in an order drawn from the run's
    stream: the same for the same seed whatever the global generators, another for another seed."""
    def replay_orders(seed, global_seed):
        impl = make("distillm", {"initial_threshold": 1.0, "schedule_steps": 1, "replay_buffer_size": 8}, tokenizer,
                    family, seed=seed, validate_every=1)
        orders = []
        for step in range(4):
            random.seed(global_seed + step)
            torch.manual_seed(global_seed + step)
            batch = impl.sequences(gold_batches(impl, toy_data, step=step)[0], step)
            if step == 0:
                buffer = rows(batch)
                assert len({str(r) for r in buffer}) == 8
            else:
                orders.append([buffer.index(r) for r in rows(batch)])
        return orders

    first = replay_orders(3, 0)
    assert all(sorted(order) == list(range(8)) for order in first)  # without replacement
    assert replay_orders(3, 500) == first
    assert replay_orders(4, 0) != first
