"""Reverse KL, KL(q_student || p_teacher): mode seeking; MiniLLM's per-token objective."""
from __future__ import annotations

import torch

from xkdbench.losses._common import kl, log_probs


def reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """RKL = sum_v q_v (log q_v - log p_v), per position.

    A teacher entry with p_v = 0 (a -inf teacher logit) where the student puts mass gives +inf, the true
    value; entries where both are 0 contribute 0.

    Args:
        student_logits: (..., V) logits of the student q.
        teacher_logits: (..., V) logits of the teacher p.
        temperature: loss temperature tau; both logits are divided by it, no tau^2 factor.

    Returns:
        (...) per-position divergence in >= fp32; no masking, no reduction.
    """
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    return kl(log_q, log_p)
