"""Each divergence against an independent reference: torch's kl_div for direction, direct fp64 formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xkdbench.losses import (
    DIVERGENCES,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)


def _probs(student, teacher):
    return student.double().softmax(-1), teacher.double().softmax(-1)  # q, p: (..., V)


def _kl(a, b):
    return (a * (a.log() - b.log())).sum(-1)


REFERENCES = {  # name -> (call with the divergence's parameter, direct formula on q, p)
    "forward_kl": (lambda s, t: forward_kl(s, t), lambda q, p: _kl(p, q)),
    "reverse_kl": (lambda s, t: reverse_kl(s, t), lambda q, p: _kl(q, p)),
    "jsd_0.1": (lambda s, t: generalized_jsd(s, t, beta=0.1),
                lambda q, p: 0.1 * _kl(p, 0.1 * p + 0.9 * q) + 0.9 * _kl(q, 0.1 * p + 0.9 * q)),
    "jsd_0.9": (lambda s, t: generalized_jsd(s, t, beta=0.9),
                lambda q, p: 0.9 * _kl(p, 0.9 * p + 0.1 * q) + 0.1 * _kl(q, 0.9 * p + 0.1 * q)),
    "skew_forward_kl": (lambda s, t: skew_forward_kl(s, t, alpha=0.1), lambda q, p: _kl(p, 0.1 * p + 0.9 * q)),
    "skew_reverse_kl": (lambda s, t: skew_reverse_kl(s, t, alpha=0.1), lambda q, p: _kl(q, 0.1 * q + 0.9 * p)),
    "total_variation": (lambda s, t: total_variation(s, t), lambda q, p: 0.5 * (p - q).abs().sum(-1)),
}


def test_forward_kl_is_kl_div_of_teacher_against_student(make_logits):
    student, teacher = make_logits(2, 3, 13, seed=1), make_logits(2, 3, 13, seed=2, scale=2.0)
    # kl_div(input, target, log_target=True) = sum target * (log target - input) = KL(target || input)
    expected = F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(forward_kl(student, teacher), expected)


def test_reverse_kl_is_kl_div_of_student_against_teacher(make_logits):
    student, teacher = make_logits(2, 3, 13, seed=1), make_logits(2, 3, 13, seed=2, scale=2.0)
    expected = F.kl_div(teacher.log_softmax(-1), student.log_softmax(-1), reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(reverse_kl(student, teacher), expected)
    assert not torch.allclose(forward_kl(student, teacher), expected)  # the direction test has teeth


def test_forward_kl_is_the_true_kl_not_cross_entropy(make_logits):
    logits = make_logits(4, 9, seed=3)
    torch.testing.assert_close(forward_kl(logits, logits), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("name", DIVERGENCES.names())
def test_zero_on_identical_inputs(name, make_logits):
    logits = make_logits(2, 5, 17, seed=4, scale=3.0, dtype=torch.float32)
    value = DIVERGENCES.get(name)(logits, logits.clone())
    torch.testing.assert_close(value, torch.zeros(2, 5), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_value_and_gradient_match_direct_fp64_formula(name, dtype, make_logits):
    call, formula = REFERENCES[name]
    student = make_logits(2, 3, 11, seed=5, dtype=dtype).requires_grad_()
    teacher = make_logits(2, 3, 11, seed=6, scale=2.0, dtype=dtype)
    reference_student = student.detach().double().requires_grad_()
    tol = {"atol": 1e-10, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    value, reference = call(student, teacher), formula(*_probs(reference_student, teacher))
    torch.testing.assert_close(value.double(), reference, **tol)
    weights = torch.rand(value.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (value.double() * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(student.grad.double(), reference_student.grad, **tol)


def test_skew_gradient_flows_through_student_inside_mixture(make_logits):
    student = make_logits(3, 7, seed=8).requires_grad_()
    teacher = make_logits(3, 7, seed=9, scale=2.0)
    # KL(p || a p + (1-a) q) depends on q only through the mixture: a detached mixture gives no gradient.
    skew_forward_kl(student, teacher, alpha=0.3).sum().backward()
    assert student.grad.abs().max() > 1e-3
    # KL(q || a q + (1-a) p): the gradient differs from the one with q detached inside the mixture.
    student.grad = None
    skew_reverse_kl(student, teacher, alpha=0.3).sum().backward()
    reference = student.detach().clone().requires_grad_()
    q, p = _probs(reference, teacher)
    _kl(q, 0.3 * q.detach() + 0.7 * p).sum().backward()  # wrong on purpose
    assert not torch.allclose(student.grad, reference.grad)


def test_classic_jsd_at_half_equals_entropy_form(make_logits):
    student, teacher = make_logits(4, 6, 10, seed=10), make_logits(4, 6, 10, seed=11, scale=3.0)
    q, p = _probs(student, teacher)
    m = 0.5 * (p + q)

    def entropy(x):
        return -(x * x.log()).sum(-1)

    classic = entropy(m) - 0.5 * (entropy(p) + entropy(q))
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=0.5), classic)
    assert classic.max() <= math.log(2)
