"""Forward KL, KL(p_teacher || q_student): mode covering; the loss of supervised KD."""
from __future__ import annotations

import torch

from xkdbench.losses._common import kl, log_probs


def forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """FKL = sum_v p_v (log p_v - log q_v), per position.

    The true KL, not the cross-entropy -sum_v p_v log q_v (they differ by the teacher entropy, which has
    no gradient for the student but changes the reported value). Teacher entries with p_v = 0 (including
    -inf teacher logits) contribute 0.

    Args:
        student_logits: (..., V) logits of the student q.
        teacher_logits: (..., V) logits of the teacher p.
        temperature: loss temperature tau; both logits are divided by it, no tau^2 factor.

    Returns:
        (...) per-position divergence in >= fp32; no masking, no reduction.
    """
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    return kl(log_p, log_q)
