"""Skew forward and reverse KL of DistiLLM (Ko et al., arXiv 2402.03898)."""
from __future__ import annotations

import torch

from xkdbench.losses._common import check_unit_interval, kl, log_mixture, log_probs


def _skew(log_a: torch.Tensor, log_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(a || alpha a + (1 - alpha) b): (..., V) -> (...)."""
    if alpha == 0.0:
        return kl(log_a, log_b)
    if alpha == 1.0:
        return kl(log_a, log_a)  # exactly 0, still attached to the graph
    return kl(log_a, log_mixture(log_a, log_b, alpha))


def skew_forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float = 0.1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """SKL_alpha = KL(p || alpha p + (1 - alpha) q), per position (DistiLLM's `skewed_forward_kl`, lam=alpha).

    Gradients flow through q inside the mixture. alpha = 0 is forward KL(p || q); alpha = 1 is 0 (and
    then no gradient reaches the student). DistiLLM's code drops the teacher-entropy term (a cross-entropy:
    same gradient, shifted value); this is the true KL.
    alpha is the skew parameter (paper symbol alpha, default 0.1) in [0, 1]; temperature divides both
    logits (no tau^2 factor). Logits (..., V) -> divergence (...) in >= fp32; no masking, no reduction.
    """
    alpha = check_unit_interval("alpha", alpha)
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    return _skew(log_p, log_q, alpha)


def skew_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float = 0.1,
    temperature: float = 1.0,
) -> torch.Tensor:
    """SRKL_alpha = KL(q || alpha q + (1 - alpha) p), per position (DistiLLM's `skewed_reverse_kl`).

    Gradients flow through q on both sides. alpha = 0 is reverse KL(q || p); alpha = 1 is 0.
    Arguments and shapes as in `skew_forward_kl`.
    """
    alpha = check_unit_interval("alpha", alpha)
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    return _skew(log_q, log_p, alpha)
