"""Shapes, dtypes, temperature, extreme logits and gradients of every divergence; endpoint and range checks."""
from __future__ import annotations

import math

import pytest
import torch

from xkdbench.losses import (
    DIVERGENCES,
    divergence_fn,
    forward_kl,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)

# every divergence, with interior and endpoint parameters: (registry name, parameters)
CASES = [("forward_kl", {}), ("reverse_kl", {}), ("total_variation", {}), ("jsd", {"beta": 0.0}),
         ("jsd", {"beta": 0.1}), ("jsd", {"beta": 0.5}), ("jsd", {"beta": 0.9}), ("jsd", {"beta": 1.0}),
         ("skew_forward_kl", {"alpha": 0.1}), ("skew_forward_kl", {"alpha": 1.0}),
         ("skew_reverse_kl", {"alpha": 0.1}), ("skew_reverse_kl", {"alpha": 0.0})]
IDS = [f"{name}{params}" for name, params in CASES]
# divergences that are +inf (correctly) when the teacher gives 0 where the student does not
REVERSE_LIKE = {"reverse_kl{}", "jsd{'beta': 1.0}", "skew_reverse_kl{'alpha': 0.0}"}


def _finite_grad(x: torch.Tensor) -> bool:
    """True if x's gradient is finite; no gradient at all (skew_forward_kl at alpha=1 is 0) counts."""
    return x.grad is None or bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
@pytest.mark.parametrize("shape", [(2, 3, 7), (5, 7)])
def test_shape_is_leading_dims(name, params, shape, make_logits):
    value = divergence_fn(name, **params)(make_logits(*shape, seed=1), make_logits(*shape, seed=2))
    assert value.shape == shape[:-1]


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_half_precision_logits_are_computed_in_fp32(name, params, make_logits):
    student, teacher = make_logits(2, 3, 9, seed=3, dtype=torch.bfloat16), make_logits(2, 3, 9, seed=4, dtype=torch.bfloat16)
    f = divergence_fn(name, **params)
    value = f(student, teacher)
    assert value.dtype == torch.float32
    assert torch.equal(value, f(student.float(), teacher.float()))
    assert f(student.half(), teacher.half()).dtype == torch.float32
    assert f(student.double(), teacher.double()).dtype == torch.float64  # fp64 is never downcast


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_temperature_equals_dividing_logits_by_hand(name, params, make_logits):
    student, teacher = make_logits(2, 3, 9, seed=5, scale=3.0), make_logits(2, 3, 9, seed=6, scale=3.0)
    f = divergence_fn(name, **params)
    for tau in (0.5, 2.0):
        torch.testing.assert_close(f(student, teacher, temperature=tau), f(student / tau, teacher / tau))
    if params.get("alpha") != 1.0:  # the skews at alpha=1 are identically 0
        assert not torch.allclose(f(student, teacher, temperature=2.0), f(student, teacher))


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_finite_values_and_gradients_for_extreme_logits(name, params, make_logits):
    student = make_logits(2, 3, 8, seed=7, scale=1e4, dtype=torch.float32).requires_grad_()
    teacher = make_logits(2, 3, 8, seed=8, scale=1e4, dtype=torch.float32).requires_grad_()
    value = divergence_fn(name, **params)(student, teacher)
    value.sum().backward()
    assert torch.isfinite(value).all()
    assert _finite_grad(student) and _finite_grad(teacher)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_minus_inf_teacher_logits(name, params, make_logits):
    student = make_logits(2, 3, 8, seed=9, dtype=torch.float32).requires_grad_()
    teacher = make_logits(2, 3, 8, seed=10, dtype=torch.float32)
    teacher[..., :3] = -math.inf  # the teacher rules out three tokens (0 log 0 = 0 must not give NaN)
    value = divergence_fn(name, **params)(student, teacher)
    if f"{name}{params}" in REVERSE_LIKE:  # KL(q || p) with p_v = 0 < q_v is +inf, and must not be NaN
        assert torch.isposinf(value).all()
        return
    if value.requires_grad:  # skew_forward_kl at alpha=1 is KL(p || p) = 0, with no path to the student
        value.sum().backward()
    assert torch.isfinite(value).all() and _finite_grad(student)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_minus_inf_in_both_on_the_same_tokens_is_ignored(name, params, make_logits):
    student = make_logits(2, 3, 8, seed=11, dtype=torch.float32)
    teacher = make_logits(2, 3, 8, seed=12, dtype=torch.float32)
    f = divergence_fn(name, **params)
    expected = f(student[..., 3:], teacher[..., 3:])
    student[..., :3] = teacher[..., :3] = -math.inf  # e.g. a padded vocabulary masked in both models
    student.requires_grad_()
    teacher.requires_grad_()
    value = f(student, teacher)
    value.sum().backward()
    torch.testing.assert_close(value, expected)
    assert _finite_grad(student) and _finite_grad(teacher)


def test_forward_kl_ignores_teacher_zero_tokens(make_logits):
    student, teacher = make_logits(3, 6, seed=13), make_logits(3, 6, seed=14)
    teacher[:, 0] = -math.inf
    q, p = student.softmax(-1), teacher.softmax(-1)
    expected = (p[:, 1:] * (p[:, 1:].log() - q[:, 1:].log())).sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher), expected)


def test_skew_endpoints(make_logits):
    student, teacher = make_logits(2, 3, 9, seed=15), make_logits(2, 3, 9, seed=16, scale=2.0)
    assert torch.equal(skew_forward_kl(student, teacher, alpha=0.0), forward_kl(student, teacher))
    assert torch.equal(skew_reverse_kl(student, teacher, alpha=0.0), reverse_kl(student, teacher))
    for skew in (skew_forward_kl, skew_reverse_kl):
        assert torch.equal(skew(student, teacher, alpha=1.0), torch.zeros(2, 3, dtype=torch.float64))
        torch.testing.assert_close(skew(student, teacher, alpha=1e-9), skew(student, teacher, alpha=0.0), atol=1e-5, rtol=0)
        assert (skew(student, teacher, alpha=0.5) < skew(student, teacher, alpha=0.1)).all()


def test_default_skew_is_distillm_alpha_0_1(make_logits):
    student, teacher = make_logits(4, 9, seed=17), make_logits(4, 9, seed=18)
    assert torch.equal(skew_forward_kl(student, teacher), skew_forward_kl(student, teacher, alpha=0.1))
    assert torch.equal(skew_reverse_kl(student, teacher), skew_reverse_kl(student, teacher, alpha=0.1))


def test_total_variation_lies_in_unit_interval_and_reaches_one(make_logits):
    value = total_variation(make_logits(50, 20, seed=19, scale=5.0), make_logits(50, 20, seed=20, scale=5.0))
    assert (value >= 0).all() and (value <= 1).all()
    disjoint = total_variation(torch.tensor([1e4, -1e4, -math.inf]), torch.tensor([-1e4, -math.inf, 1e4]))
    torch.testing.assert_close(disjoint, torch.tensor(1.0))


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_bad_inputs_are_errors(name, make_logits):
    f = DIVERGENCES.get(name)
    with pytest.raises(ValueError, match="differ in shape"):
        f(make_logits(2, 5), make_logits(2, 6))
    with pytest.raises(ValueError, match="temperature"):
        f(make_logits(2, 5), make_logits(2, 5), temperature=0.0)


@pytest.mark.parametrize(("f", "param"), [(skew_forward_kl, "alpha"), (skew_reverse_kl, "alpha")])
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, True])
def test_parameter_out_of_range_is_an_error(f, param, value, make_logits):
    with pytest.raises(ValueError, match=rf"{param} must be a number in \[0, 1\]"):
        f(make_logits(2, 5), make_logits(2, 5), **{param: value})
