"""X-KD: the AVRIL regulariser against a float64 hand computation, the off switch against the base
methods (bitwise), the gold-sequence normalisation, the learned reward of a trained checkpoint,
training and resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig, TrainingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.core.trainer import TrainSetup, backward_step, train
from xkdbench.methods import METHODS, method_config
from xkdbench.methods.xkd_reward import AVRILSettings, avril_regulariser, q_values
from xkdbench.models import load_model
from xkdbench.stages import learned_reward_of

CPU = torch.device("cpu")


# -- the regulariser as a pure function ----------------------------------------------------------
def reference_q(logits, b, t, y, q_map, alpha):
    """Q(s_t, y_t) from its definition, in float64."""
    z = logits[b, t].double()
    if q_map == "logit":
        return float(z[y])
    scale = 1.0 if q_map == "logprob" else alpha
    return float(scale * z[y] - torch.log(torch.exp(scale * z).sum()))


def reference_regulariser(logits, target_ids, mu, log_sigma, mask, s: AVRILSettings):
    """R_t by loops over rows and valid transitions t < L (float64; Normal.log_prob as the density)."""
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for b in range(mask.shape[0]):
        length = int(mask[b].sum())
        for t in range(length - 1):  # the last transition (t = L) is dropped
            q = reference_q(logits, b, t, int(target_ids[b, t]), s.q_map, s.ava_alpha)
            q_next = reference_q(logits, b, t + 1, int(target_ids[b, t + 1]), s.q_map, s.ava_alpha)
            m, sd = mu[b, t].double(), log_sigma[b, t].double().exp()
            kl = 0.5 * (m ** 2 + sd ** 2 - 1) - torch.log(sd)  # KL(N(m, sd^2) || N(0, 1)), closed form
            delta = torch.tensor(q - s.discount * q_next, dtype=torch.float64)
            log_density = torch.distributions.Normal(m, sd).log_prob(delta)
            out[b, t] = s.kl_weight * kl - s.reward_likelihood_weight * log_density
    return out


def tiny_example(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(3, 5, 7, generator=g)  # (B, T, V)
    target_ids = torch.randint(0, 7, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])  # lengths 5, 3, 1
    mu, log_sigma = torch.randn(3, 5, generator=g), 0.5 * torch.randn(3, 5, generator=g)
    return logits, target_ids, mu, log_sigma, mask


@pytest.mark.parametrize("q_map", ["logit", "logprob", "ava"])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.3, 0.0, 0.99), (0.0, 2.0, 0.9)])
def test_regulariser_matches_the_formula(q_map, weights):
    lam, kl_weight, gamma = weights
    s = AVRILSettings(reward_likelihood_weight=lam, kl_weight=kl_weight, discount=gamma, q_map=q_map, ava_alpha=0.7)
    logits, target_ids, mu, log_sigma, mask = tiny_example()
    got = avril_regulariser(logits, target_ids, mu, log_sigma, mask, s)
    assert got.shape == mask.shape
    torch.testing.assert_close(got.double(), reference_regulariser(logits, target_ids, mu, log_sigma, mask, s),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("full", [True, False])
def test_td_target_gradient_switch(full):
    """Full gradient: dR_t/dQ(s_{t+1}) = -gamma dR_t/dQ(s_t) (the residual's chain rule). Semi-gradient:
    the bootstrap term is a constant, so the logits of step t+1 get nothing from R_t."""
    s = AVRILSettings(reward_likelihood_weight=0.5, discount=0.9, q_map="logit", td_target_gradient=full)
    logits, target_ids, mu, log_sigma, _ = tiny_example()
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 3)  # one transition per row: R_0 from Q_0 and Q_1
    logits = logits.clone().requires_grad_(True)
    avril_regulariser(logits, target_ids, mu, log_sigma, mask, s).sum().backward()
    rows = torch.arange(3)
    grad_q0 = logits.grad[rows, 0, target_ids[:, 0]]
    grad_q1 = logits.grad[rows, 1, target_ids[:, 1]]
    assert grad_q0.abs().min() > 0
    expected = -s.discount * grad_q0 if full else torch.zeros_like(grad_q0)
    torch.testing.assert_close(grad_q1, expected)
    assert logits.grad[:, 2:].abs().max() == 0


def test_last_transition_and_padding_carry_nothing():
    s = AVRILSettings(reward_likelihood_weight=1.0)
    logits, target_ids, mu, log_sigma, mask = tiny_example()
    r = avril_regulariser(logits, target_ids, mu, log_sigma, mask, s)
    assert (r[0, :4] != 0).all() and (r[1, :2] != 0).all()
    assert r[0, 4] == 0 and (r[1, 2:] == 0).all() and (r[2] == 0).all()  # last valid token and pads
    # the reward at the last valid position never enters: changing it changes nothing
    mu2, ls2 = mu.clone(), log_sigma.clone()
    mu2[0, 4] += 5.0
    ls2[1, 2] -= 1.0
    assert torch.equal(avril_regulariser(logits, target_ids, mu2, ls2, mask, s), r)


def test_q_maps_follow_their_definitions():
    logits, target_ids, *_ = tiny_example(1)
    taken = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(q_values(logits, target_ids, "logit"), taken)
    torch.testing.assert_close(q_values(logits, target_ids, "logprob"), taken - logits.logsumexp(-1))
    torch.testing.assert_close(q_values(logits, target_ids, "ava", 0.3), 0.3 * taken - (0.3 * logits).logsumexp(-1))
    torch.testing.assert_close(q_values(logits, target_ids, "ava", 1.0), q_values(logits, target_ids, "logprob"))
    torch.testing.assert_close(q_values(logits, target_ids, "ava"), q_values(logits, target_ids, "logprob"))  # alpha 1
    assert (q_values(logits, target_ids, "ava", 0.3) <= 0).all()  # bounded above, unlike the logit


@pytest.mark.parametrize("settings,field", [({"q_map": "value"}, "q_map"), ({"discount": 1.5}, "discount"),
                                            ({"reward_likelihood_weight": -1}, "reward_likelihood_weight"),
                                            ({"regulariser_on": "teacher"}, "regulariser_on")])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=field):
        method_config("xkd_div", settings, "config.methods[0].settings")


# -- the methods --------------------------------------------------------------------------------
def make(method, settings, tokenizer, family):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=0)
    return METHODS.get(method)(method_config(method, settings), ctx)


def step_batches(impl, data, batch_size=8, grad_accum=1, step=0):
    loader = StepLoader(data, impl.ctx.student, batch_size=batch_size, grad_accum=grad_accum, seed=0)
    return [impl.sequences(ex, step) for ex in loader.step_examples(step)], loader.step_examples(step)


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


OFF = {"reward_likelihood_weight": 0.0, "kl_weight": 0.0}
BASES = [("xkd_seq", "seqkd", {}), ("xkd_div", "gkd", {"divergence": "jsd", "beta": 0.9, "student_data_fraction": 0.0}),
         ("xkd_div", "gkd", {"divergence": "reverse_kl", "student_data_fraction": 1.0}),
         ("xkd_div", "gkd", {"divergence": "forward_kl", "student_data_fraction": 0.0, "seq_kd": True})]


@pytest.mark.parametrize("xkd,base,settings", BASES)
def test_switched_off_it_is_its_base_method_exactly(tokenizer, family, toy_data, xkd, base, settings):
    """lambda = 0 and no KL term: the same batches, loss values and student gradients, bitwise."""
    extra = {"regulariser_on": "gold"} if xkd == "xkd_div" else {}
    x, b = make(xkd, {**settings, **OFF, **extra}, tokenizer, family), make(base, settings, tokenizer, family)
    torch.manual_seed(0)
    batch = step_batches(b, toy_data)[0][0]
    if settings.get("student_data_fraction", 0) == 0:
        torch.testing.assert_close(step_batches(x, toy_data)[0][0].target_ids, batch.target_ids, rtol=0, atol=0)
    results = []
    for impl in (x, b):
        tokens, totals = backward_step(impl, [batch])
        results.append((tokens, totals, grads(impl.ctx.student.model)))
    (tx, lx, gx), (tb, lb, gb) = results
    assert tx == tb and lx.keys() == lb.keys()
    for name in lb:
        assert torch.equal(lx[name], lb[name]), name
    assert gx.keys() == gb.keys() and gb
    for name in gb:
        assert torch.equal(gx[name], gb[name]), name
    assert all(p.grad is None for p in x.reward_head.parameters())
    per_token_x, per_token_b = x.loss(batch), b.loss(batch)  # the (B, T) terms themselves
    assert per_token_x.keys() == per_token_b.keys()
    assert all(torch.equal(per_token_x[k], per_token_b[k]) for k in per_token_b)


@pytest.mark.parametrize("method,settings", [("xkd_seq", {}), ("xkd_div", {"student_data_fraction": 1.0})])
def test_regulariser_gradients_reach_student_and_head(tokenizer, family, toy_data, method, settings):
    impl = make(method, {**settings, "reward_likelihood_weight": 1.0}, tokenizer, family)
    batch = step_batches(impl, toy_data)[0][0]
    r = impl.loss(batch)["avril"]
    ((r * batch.target_mask).sum() / batch.target_mask.sum()).backward()
    student, head = grads(impl.ctx.student.model), grads(impl.reward_head)
    assert student and all(torch.isfinite(v).all() for v in [*student.values(), *head.values()])
    assert sum(float(v.abs().sum()) for v in student.values()) > 0  # through Q
    assert head.keys() == {"linear.weight", "linear.bias"} and all(v.abs().sum() > 0 for v in head.values())


def test_gold_regulariser_is_a_gold_token_mean_independent_of_accumulation(tokenizer, family, toy_data):
    """regulariser_on gold: the step loss is sum D / N_div + sum R / N_gold, whatever the split."""
    settings = {"divergence": "forward_kl", "student_data_fraction": 0.0, "seq_kd": True, "regulariser_on": "gold",
                "reward_likelihood_weight": 1.0}
    runs = []
    for batch_size, accum in ((8, 1), (4, 2)):
        impl = make("xkd_div", settings, tokenizer, family)
        micro, examples = step_batches(impl, toy_data, batch_size, accum)
        assert not torch.equal(micro[0].target_ids, examples[0].gold.target_ids)  # really other sequences
        n_div = sum(b.target_mask.sum() for b in micro)
        n_gold = sum(e.gold.target_mask.sum() for e in examples)
        # independent expectation: R straight from the head on the gold batches, over gold tokens
        with torch.no_grad():
            gold_sum = 0.0
            for e in examples:
                logits, hidden = impl.ctx.student.target_logits(e.gold, with_hidden=True)
                mu, log_sigma = impl.reward_head(hidden)
                r = avril_regulariser(logits, e.gold.target_ids, mu, log_sigma, e.gold.target_mask, impl.config)
                gold_sum += r.sum()
        tokens, totals = backward_step(impl, micro)
        assert tokens == n_div
        torch.testing.assert_close(totals["avril"] / tokens, gold_sum / n_gold)
        runs.append((totals, grads(impl.ctx.student.model), grads(impl.reward_head)))
    (t1, s1, h1), (t2, s2, h2) = runs
    for name in t1:
        torch.testing.assert_close(t1[name], t2[name], rtol=1e-5, atol=1e-6)
    for a, b in ((s1, s2), (h1, h2)):
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-7, rtol=1e-5, msg=name)


# -- through the core ---------------------------------------------------------------------------
def run(tokenizer, family, data, out, method, settings, *, stop_after=None, **training):
    student = tiny_model(tokenizer, family, seed=1)
    cfg = TrainingConfig(**{"steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "log_every": 1,
                            "checkpoint_every": 100, **training})
    setup = TrainSetup(METHODS.get(method), method_config(method, settings), student, data, cfg, 0, CPU,
                       teacher=tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(),
                       max_new_tokens=8)
    return student, train(setup, out, stop_after=stop_after)


def log(out):
    return [json.loads(line) for line in open(Path(out) / "train_log.jsonl")]


@pytest.mark.parametrize("method,settings", [("xkd_seq", {}), ("xkd_div", {"student_data_fraction": 0.0}),
                                             ("xkd_div", {"regulariser_on": "gold", "student_data_fraction": 1.0})])
def test_training_reduces_the_loss_and_the_learned_reward_is_the_summed_mu(tmp_path, tokenizer, family, toy_data,
                                                                          method, settings):
    run(tokenizer, family, toy_data, tmp_path, method, settings, steps=12, lr=3e-3)
    records = log(tmp_path)
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "avril", "grad_norm"))
    assert sum(r["loss"] for r in records[-3:]) < sum(r["loss"] for r in records[:3])
    model_dir = tmp_path / "model"
    assert (model_dir / "reward_head.pt").exists()
    student = load_model(model_dir)  # as the evaluator does
    reward_fn = learned_reward_of(model_dir, student)
    batch = student.collate(toy_data.prompts[:5], toy_data.targets[:5])
    head = torch.load(model_dir / "reward_head.pt", weights_only=True)
    with torch.no_grad():
        _, hidden = student.target_logits(batch, with_hidden=True)
        mu = hidden.double() @ head["linear.weight"][0].double() + head["linear.bias"][0].double()  # (B, T)
    expected = (mu * batch.target_mask).sum(1)
    got = reward_fn(batch)
    assert got.shape == (5,) and expected.abs().sum() > 0
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_no_learned_reward_when_the_regulariser_is_off(tmp_path):
    assert METHODS.get("xkd_seq").learned_reward(tmp_path, method_config("xkd_seq", OFF), None) is None


@pytest.mark.parametrize("settings", [{"student_data_fraction": 0.5},
                                      {"student_data_fraction": 0.5, "regulariser_on": "gold"}])
def test_resume_equals_uninterrupted(tmp_path, tokenizer, family, toy_data, settings):
    full, _ = run(tokenizer, family, toy_data, tmp_path / "full", "xkd_div", settings, steps=5)
    run(tokenizer, family, toy_data, tmp_path / "cut", "xkd_div", settings, steps=5, stop_after=2)
    assert not (tmp_path / "cut" / "model").exists()
    resumed, _ = run(tokenizer, family, toy_data, tmp_path / "cut", "xkd_div", settings, steps=5)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    heads = [torch.load(tmp_path / d / "model" / "reward_head.pt", weights_only=True) for d in ("full", "cut")]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in log(tmp_path / d)] for d in ("full", "cut")]
    assert strip[0] == strip[1] and [r["step"] for r in strip[1]] == [1, 2, 3, 4, 5]


WHOLE_RUNS = [("xkd_seq", "seqkd", {}),
              ("xkd_div", "gkd", {"divergence": "jsd", "beta": 0.9, "student_data_fraction": 1.0}),
              ("xkd_div", "gkd", {"divergence": "reverse_kl", "student_data_fraction": 0.5})]


@pytest.mark.parametrize("xkd,base,settings", WHOLE_RUNS)
def test_switched_off_a_whole_run_is_its_base_method_bit_for_bit(tmp_path, tokenizer, family, toy_data, xkd, base,
                                                                 settings):
    """Over a run of on-policy steps, not one batch: the reward head draws its initialisation from its
    own stream, so every later sample, coin and weight equals the base method's."""
    off = {**settings, **OFF, **({"regulariser_on": "gold"} if xkd == "xkd_div" else {})}
    x, _ = run(tokenizer, family, toy_data, tmp_path / "x", xkd, off, steps=6)
    b, _ = run(tokenizer, family, toy_data, tmp_path / "b", base, settings, steps=6)
    for key, value in b.model.state_dict().items():
        assert torch.equal(value, x.model.state_dict()[key]), key
    keep = ("step", "loss", "grad_norm", "tokens", "generated_tokens")
    logs = [[{k: r[k] for k in keep} for r in log(tmp_path / d)] for d in ("x", "b")]
    assert logs[0] == logs[1]
    if settings.get("student_data_fraction"):
        assert logs[1][-1]["generated_tokens"] > 0, "the run must sample"


def test_a_stream_offset_changes_the_samples_only(tmp_path, tokenizer, family, toy_data):
    """Two variants differing only in `stream` (an A/A control) sample differently from the same
    student initialisation and data order; the same offset reproduces a run exactly."""
    settings = {"divergence": "reverse_kl", "student_data_fraction": 1.0}
    runs = {}
    for name, stream in (("a", 0), ("a_again", 0), ("control", 1)):
        student = tiny_model(tokenizer, family, seed=1)
        cfg = TrainingConfig(steps=3, batch_size=8, lr=1e-2, warmup_steps=1, log_every=1, checkpoint_every=100)
        setup = TrainSetup(METHODS.get("gkd"), method_config("gkd", settings), student, toy_data, cfg, 0, CPU,
                           teacher=tiny_model(tokenizer, family, seed=2, width=48), sampling=SamplingConfig(),
                           max_new_tokens=8, stream=stream)
        train(setup, tmp_path / name)
        runs[name] = (student.model.state_dict(), log(tmp_path / name))
    assert all(torch.equal(v, runs["a_again"][0][k]) for k, v in runs["a"][0].items())
    assert runs["a"][1][0]["tokens"] != runs["control"][1][0]["tokens"] or \
        any(not torch.equal(v, runs["control"][0][k]) for k, v in runs["a"][0].items())


def test_the_shared_forward_serves_only_its_own_batch(tokenizer, family, toy_data):
    """Inside X-KD's loss the base method must reuse X-KD's forward: any other request is a bug."""
    from xkdbench.methods.xkd import _SharedForward

    impl = make("xkd_div", {"student_data_fraction": 0.0}, tokenizer, family)
    (first, *_), _ = step_batches(impl, toy_data, batch_size=4, grad_accum=2)
    other, _ = step_batches(impl, toy_data, batch_size=4, grad_accum=2, step=1)
    logits = impl.ctx.student.target_logits(first)
    shared = _SharedForward(impl.ctx, first, logits)
    assert shared.student_logits(first) is logits
    with pytest.raises(AssertionError, match=r"^the base loss asked for another forward$"):
        shared.student_logits(other[0])
    with pytest.raises(AssertionError, match=r"^the base loss asked for another forward$"):
        shared.student_logits(first, with_hidden=True)


def test_regulariser_on_same_runs_on_the_sampled_sequences(tokenizer, family, toy_data):
    """regulariser_on same, on-policy: R_t is the regulariser of the student's own samples, position by
    position, not the gold outputs' (that is regulariser_on gold)."""
    impl = make("xkd_div", {"student_data_fraction": 1.0, "reward_likelihood_weight": 1.0}, tokenizer, family)
    torch.manual_seed(0)
    (batch,), (examples,) = step_batches(impl, toy_data)
    assert batch.target_ids.shape != examples.gold.target_ids.shape or \
        not torch.equal(batch.target_ids, examples.gold.target_ids)
    with torch.no_grad():
        logits, hidden = impl.ctx.student.target_logits(batch, with_hidden=True)
        mu, log_sigma = impl.reward_head(hidden)
        expected = avril_regulariser(logits, batch.target_ids, mu, log_sigma, batch.target_mask, impl.config)
        got = impl.loss(batch)["avril"]
    mask = batch.target_mask.bool()
    torch.testing.assert_close(got[mask], expected[mask])


def test_gold_regulariser_on_the_fixed_data_takes_one_forward(tokenizer, family, toy_data):
    """When the divergence already runs on the gold outputs, R reuses that forward (no second one)."""
    impl = make("xkd_div", {"student_data_fraction": 0.0, "regulariser_on": "gold", "reward_likelihood_weight": 1.0},
                tokenizer, family)
    (batch,), (examples,) = step_batches(impl, toy_data)
    assert torch.equal(batch.target_ids, examples.gold.target_ids)
    calls = []
    forward = impl.ctx.student.target_logits
    impl.ctx.student.target_logits = lambda b, **kw: calls.append(b) or forward(b, **kw)
    impl.loss(batch)
    assert len(calls) == 1


@pytest.mark.parametrize("step", [1, 3])
def test_gold_regulariser_counts_from_a_resumed_runs_first_step(tokenizer, family, toy_data, step):
    """A resumed run's first step is not step 0: its shared token counts still start fresh."""
    settings = {"divergence": "forward_kl", "student_data_fraction": 0.0, "seq_kd": True, "regulariser_on": "gold",
                "reward_likelihood_weight": 1.0}
    impl = make("xkd_div", settings, tokenizer, family)
    micro, examples = step_batches(impl, toy_data, 4, 2, step=step)
    assert micro[0].step_tokens["div"] == sum(b.target_mask.sum() for b in micro)
    assert micro[0].step_tokens["gold"] == sum(e.gold.target_mask.sum() for e in examples)


def test_gold_regulariser_over_a_one_token_divergence_batch(tokenizer, family):
    """The divergence runs on one token (an empty teacher output), R on a longer gold output: that one
    token carries R's whole gold-token mean."""
    from xkdbench.core.data import TrainData

    impl = make("xkd_div", {"divergence": "forward_kl", "student_data_fraction": 0.0, "seq_kd": True,
                            "regulariser_on": "gold", "reward_likelihood_weight": 1.0, "kl_weight": 0.5},
                tokenizer, family)
    data = TrainData.from_texts(impl.ctx.student, ["a b c"], ["b c a b"], max_prompt_tokens=24,
                                max_target_tokens=12, teacher_outputs=[""])
    (batch,), (examples,) = step_batches(impl, data, batch_size=1)
    n_gold = int(examples.gold.target_mask.sum())
    assert int(batch.target_mask.sum()) == 1 and n_gold > 2
    with torch.no_grad():
        logits, hidden = impl.ctx.student.target_logits(examples.gold, with_hidden=True)
        mu, log_sigma = impl.reward_head(hidden)
        r = avril_regulariser(logits, examples.gold.target_ids, mu, log_sigma, examples.gold.target_mask,
                              impl.config)
        got = impl.loss(batch)["avril"]
    assert float(r.sum()) != 0
    torch.testing.assert_close(got[batch.target_mask.bool()].sum(), r.sum() / n_gold)
