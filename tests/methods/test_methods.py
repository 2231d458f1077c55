"""Methods: degenerate settings coincide, registry and config errors, on-policy data flows."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_model
from xkdbench.config import ConfigError, SamplingConfig
from xkdbench.core.context import TrainContext
from xkdbench.core.data import StepLoader
from xkdbench.losses import forward_kl
from xkdbench.methods import METHODS, method_config

CPU = torch.device("cpu")


def make(method, settings, tokenizer, family, seed=0):
    ctx = TrainContext(tiny_model(tokenizer, family, seed=1), tiny_model(tokenizer, family, seed=2, width=48),
                       SamplingConfig(), max_new_tokens=8, device=CPU, use_bf16=False, seed=seed)
    return METHODS.get(method)(method_config(method, settings), ctx)


def first_step(impl, data, step=0):
    loader = StepLoader(data, impl.ctx.student, batch_size=8, grad_accum=1, seed=0)
    return [impl.sequences(ex, step) for ex in loader.step_examples(step)][0]


def test_gkd_off_policy_forward_kl_equals_supervised_kd(tokenizer, family, toy_data):
    """GKD with student_data_fraction 0 and beta 0 (JSD endpoint = forward KL) is supervised KD."""
    gkd = make("gkd", {"student_data_fraction": 0.0, "divergence": "jsd", "beta": 0.0}, tokenizer, family)
    skd = make("supervised_kd", {}, tokenizer, family)
    for step in range(3):
        a, b = first_step(gkd, toy_data, step), first_step(skd, toy_data, step)
        assert torch.equal(a.target_ids, b.target_ids)
        (la,), (lb,) = gkd.loss(a).values(), skd.loss(b).values()
        assert torch.equal(la, lb)


def test_supervised_kd_is_forward_kl_on_gold(tokenizer, family, toy_data):
    skd = make("supervised_kd", {}, tokenizer, family)
    batch = first_step(skd, toy_data)
    expected = forward_kl(skd.ctx.student.target_logits(batch), skd.ctx.teacher.target_logits(batch))
    torch.testing.assert_close(skd.loss(batch)["forward_kl"], expected)


def test_gkd_on_policy_trains_on_student_samples(tokenizer, family, toy_data):
    gkd = make("gkd", {"student_data_fraction": 1.0}, tokenizer, family)
    gold = StepLoader(toy_data, gkd.ctx.student, batch_size=8, grad_accum=1, seed=0).step_examples(0)[0].gold
    batch = first_step(gkd, toy_data)
    assert torch.equal(batch.prompt_ids, gold.prompt_ids)
    assert not torch.equal(batch.target_ids, gold.target_ids)
    assert int(gkd.ctx.generated_tokens) == int(batch.target_mask.sum())


def test_gkd_coin_is_per_step_and_follows_the_fraction(tokenizer, family):
    gkd = make("gkd", {"student_data_fraction": 0.3}, tokenizer, family)
    draws = [gkd.on_policy(step) for step in range(2000)]
    assert abs(sum(draws) / len(draws) - 0.3) < 0.04
    assert gkd.on_policy(1999) == draws[-1]  # asking twice in a step gives the same answer



def test_gkd_draws_its_coin_at_the_first_step_it_is_asked_about(tokenizer, family):
    """A run resumed after step 0 first asks at step 1: that step draws its own coin from the run's
    decision stream (nothing carried over from before the first step)."""
    import random

    gkd = make("gkd", {"student_data_fraction": 0.5}, tokenizer, family)
    reference = random.Random()
    reference.setstate(gkd.ctx.rng.getstate())
    assert gkd.on_policy(1) == (reference.random() < 0.5)
    assert gkd.ctx.rng.getstate() == reference.getstate()

def test_seqkd_trains_on_cached_teacher_outputs(tokenizer, family, toy_data):
    seqkd = make("seqkd", {}, tokenizer, family)
    loader = StepLoader(toy_data, seqkd.ctx.student, batch_size=8, grad_accum=1, seed=0)
    examples = loader.step_examples(0)[0]
    batch = seqkd.sequences(examples, 0)
    assert torch.equal(batch.target_ids, examples.teacher_output.target_ids)
    assert METHODS.get("seqkd").uses_teacher_outputs(seqkd.config)
    assert not METHODS.get("seqkd").needs_teacher(seqkd.config)
    # its one loss term is the token NLL of the teacher's outputs, logged as `nll`
    terms = seqkd.loss(batch)
    assert list(terms) == ["nll"]
    logp = torch.log_softmax(seqkd.ctx.student.target_logits(batch), dim=-1)
    expected = -logp.gather(-1, batch.target_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(terms["nll"], expected)


@pytest.mark.parametrize("method,settings,field", [
    ("gkd", {"student_data_fraction": 1.5}, "student_data_fraction"),
    ("gkd", {"divergence": "kl"}, "divergence"),
    ("gkd", {"divergence": "forward_kl", "beta": 0.5}, "beta"),
    ("token_divergence", {"divergence": "jsd", "beta": 2.0}, "beta"),
    ("supervised_kd", {"temperature": 2.0}, "temperature"),
    ("supervised_kd", {"loss_temperature": 0}, "loss_temperature"),
])
def test_bad_settings_name_the_field(method, settings, field):
    with pytest.raises(ConfigError) as error:
        method_config(method, settings, "config.methods[0].settings")
    assert field in str(error.value) and "config.methods[0]" in str(error.value)


def test_divergence_defaults_do_not_leak_between_divergences():
    assert method_config("gkd", {"divergence": "forward_kl"}).divergence_fn().keywords == {}
    assert method_config("gkd", {}).divergence_fn().keywords == {}  # jsd at its own default beta


def test_unknown_method_lists_known_ones():
    with pytest.raises(KeyError) as error:
        METHODS.get("gdk", field="config.methods[3].method")
    assert "gkd" in str(error.value) and "config.methods[3].method" in str(error.value)


def test_every_method_is_documented():
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.__doc__ and cls.Config.__doc__, name
