"""Total variation distance between teacher and student token distributions."""
from __future__ import annotations

import torch

from xkdbench.losses._common import log_probs


def total_variation(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """TVD = 0.5 sum_v |p_v - q_v|, per position, in [0, 1].

    Args:
        student_logits: (..., V) logits of the student q.
        teacher_logits: (..., V) logits of the teacher p.
        temperature: loss temperature tau; both logits are divided by it, no tau^2 factor.

    Returns:
        (...) per-position distance in >= fp32; no masking, no reduction.
    """
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
