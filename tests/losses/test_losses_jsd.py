"""Generalized JSD: endpoints, role symmetry, bounds, and its behaviour near beta = 0 and beta = 1.

Derivation of the limits (m = beta p + (1 - beta) q = q + beta (p - q), chi2(p||q) = sum (p - q)^2 / q):
  KL(q || m) = -sum q log(1 + beta (p - q) / q)   = beta^2 chi2(p||q) / 2 + O(beta^3)
  KL(p || m) = KL(p || q) - beta chi2(p||q) + O(beta^2)
so JSD(beta) = beta KL(p||q) - beta^2 chi2(p||q) / 2 + O(beta^3): both terms vanish, but the first
vanishes only linearly, and JSD(beta) / beta -> forward KL(p||q) with error ~ -beta chi2(p||q) / 2.
By the role symmetry JSD_beta(p, q) = JSD_{1-beta}(q, p), JSD(beta) / (1 - beta) -> reverse KL(q||p)
as beta -> 1, with error ~ -(1 - beta) chi2(q||p) / 2.
"""
from __future__ import annotations

import math

import pytest
import torch

from xkdbench.losses import forward_kl, generalized_jsd, reverse_kl, skew_forward_kl, skew_reverse_kl


@pytest.fixture
def pair(make_logits):
    return make_logits(2, 4, 12, seed=20), make_logits(2, 4, 12, seed=21, scale=1.5)  # student, teacher


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_endpoints_are_exactly_forward_and_reverse_kl(dtype, pair):
    student, teacher = (x.to(dtype) for x in pair)
    assert torch.equal(generalized_jsd(student, teacher, beta=0.0), forward_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, beta=1.0), reverse_kl(student, teacher))
    assert torch.equal(generalized_jsd(student, teacher, beta=0), forward_kl(student, teacher))


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_swapping_roles_mirrors_beta(beta, pair):
    student, teacher = pair
    torch.testing.assert_close(
        generalized_jsd(student, teacher, beta=beta), generalized_jsd(teacher, student, beta=1.0 - beta)
    )


def test_half_is_symmetric_and_bounded_by_log2_reached_for_disjoint_supports(pair):
    student, teacher = pair
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=0.5), generalized_jsd(teacher, student, beta=0.5))
    assert generalized_jsd(student, teacher, beta=0.5).max() < math.log(2)
    disjoint_student = torch.tensor([[1e4, -1e4, -1e4, -1e4], [-1e4, -1e4, 1e4, 1e4]])
    disjoint_teacher = torch.tensor([[-1e4, 1e4, 1e4, -1e4], [1e4, 1e4, -1e4, -1e4]])
    value = generalized_jsd(disjoint_student, disjoint_teacher, beta=0.5)
    torch.testing.assert_close(value, torch.full((2,), math.log(2)))


@pytest.mark.parametrize("beta", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_bounded_by_binary_entropy_of_beta(beta, pair):
    student, teacher = pair
    value = generalized_jsd(student, teacher, beta=beta)
    assert (value >= 0).all()
    assert value.max() <= -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)


def test_is_the_weighted_sum_of_the_two_skew_kls(pair):
    student, teacher = pair
    beta = 0.3  # m = beta p + (1-beta) q is the skew mixture of both skew KLs
    expected = beta * skew_forward_kl(student, teacher, alpha=beta) + (1 - beta) * skew_reverse_kl(
        student, teacher, alpha=1 - beta
    )
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=beta), expected)


def _chi2(a, b):
    return ((a - b) ** 2 / b).sum(-1)  # chi2(a || b)


def test_near_zero_divided_by_beta_tends_to_forward_kl(pair):
    student, teacher = pair
    q, p = student.softmax(-1), teacher.softmax(-1)
    fkl, chi2 = forward_kl(student, teacher), _chi2(p, q)
    errors = []
    for beta in [1e-2, 1e-3, 1e-4, 1e-5]:
        error = generalized_jsd(student, teacher, beta=beta) / beta - fkl
        errors.append(error.abs().max().item())
        if beta <= 1e-4:  # the first-order term of the error is the derived -beta chi2(p||q) / 2
            torch.testing.assert_close(error / beta, -chi2 / 2, rtol=0.02, atol=0)
    assert all(later < 0.2 * earlier for earlier, later in zip(errors[:-1], errors[1:], strict=True))
    assert errors[-1] < 1e-3 * fkl.min().item()
    # the two pieces, with m the skew mixture: KL(p||m) = KL(p||q) - beta chi2 + ..., KL(q||m) = beta^2 chi2 / 2 + ...
    beta = 1e-4
    torch.testing.assert_close((skew_forward_kl(student, teacher, alpha=beta) - fkl) / beta, -chi2, rtol=0.02, atol=0)
    torch.testing.assert_close(skew_reverse_kl(student, teacher, alpha=1 - beta) / beta**2, chi2 / 2, rtol=0.02, atol=0)


def test_near_one_divided_by_one_minus_beta_tends_to_reverse_kl(pair):
    student, teacher = pair
    q, p = student.softmax(-1), teacher.softmax(-1)
    rkl, chi2 = reverse_kl(student, teacher), _chi2(q, p)
    errors = []
    for gap in [1e-2, 1e-3, 1e-4, 1e-5]:
        error = generalized_jsd(student, teacher, beta=1.0 - gap) / gap - rkl
        errors.append(error.abs().max().item())
        if gap <= 1e-4:
            torch.testing.assert_close(error / gap, -chi2 / 2, rtol=0.02, atol=0)
    assert all(later < 0.2 * earlier for earlier, later in zip(errors[:-1], errors[1:], strict=True))
    assert errors[-1] < 1e-3 * rkl.min().item()


def test_limit_holds_in_fp32_at_practical_precision(pair):
    student, teacher = (x.float() for x in pair)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=1e-3) / 1e-3, forward_kl(student, teacher),
                               rtol=0.02, atol=0)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=1 - 1e-3) / 1e-3, reverse_kl(student, teacher),
                               rtol=0.05, atol=0)


def test_trl_before_pr_3043_is_neither_jsd_beta_nor_jsd_one_minus_beta():
    """The docstring's statement about TRL <= 0.15, from that code's formula: mixture
    m' = beta q + (1 - beta) p, weights beta KL(p || m') + (1 - beta) KL(q || m')."""
    from xkdbench.losses import generalized_jsd

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    log_q, log_p = student.log_softmax(-1).double(), teacher.log_softmax(-1).double()

    def old_trl(beta):
        log_m = torch.logsumexp(torch.stack([log_q + math.log(beta), log_p + math.log(1 - beta)]), 0)
        return beta * torch.nn.functional.kl_div(log_m, log_p, reduction="none", log_target=True).sum(-1) + \
            (1 - beta) * torch.nn.functional.kl_div(log_m, log_q, reduction="none", log_target=True).sum(-1)

    for beta in (0.1, 0.9):
        for ours in (beta, 1 - beta):
            assert (old_trl(beta) - generalized_jsd(student, teacher, beta=ours).double()).abs().max() > 0.1
    torch.testing.assert_close(old_trl(0.5), generalized_jsd(student, teacher, beta=0.5).double(), atol=1e-6, rtol=1e-6)
