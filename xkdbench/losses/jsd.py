"""Generalized Jensen-Shannon divergence JSD(beta) of GKD (Agarwal et al., arXiv 2306.13649)."""
from __future__ import annotations

import torch

from xkdbench.losses._common import check_unit_interval, kl, log_mixture, log_probs


def generalized_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q, per position.

    beta is the TEACHER's weight in the mixture m (GKD paper's convention, also TRL >= 0.16): beta = 0 is
    exactly forward KL(p || q) and beta = 1 exactly reverse KL(q || p) (both endpoints special-cased).
    TRL before PR #3043 (<= 0.15) computed beta KL(p || m') + (1 - beta) KL(q || m') with
    m' = beta q + (1 - beta) p: its mixture follows 1 - beta while its weights follow beta, so it is
    neither our JSD(beta) nor JSD(1 - beta) except at beta = 0.5, where all three agree (tested).
    Near the endpoints JSD(beta) / beta -> KL(p || q) as beta -> 0 and JSD(beta) / (1 - beta) -> KL(q || p)
    as beta -> 1 (Taylor: JSD(beta) = beta KL(p||q) - beta^2 chi^2(p||q) / 2 + O(beta^3)).
    It is symmetric under swapping roles: JSD_beta(p, q) = JSD_{1-beta}(q, p), and bounded by the binary
    entropy of beta (log 2 at beta = 0.5).

    Args:
        student_logits: (..., V) logits of the student q.
        teacher_logits: (..., V) logits of the teacher p.
        beta: teacher weight in [0, 1] (paper symbol beta; TRL's GKDConfig default is 0.5).
        temperature: loss temperature tau; both logits are divided by it, no tau^2 factor.

    Returns:
        (...) per-position divergence in >= fp32; no masking, no reduction.
    """
    beta = check_unit_interval("beta", beta)
    log_q, log_p = log_probs(student_logits, teacher_logits, temperature)  # (..., V)
    if beta == 0.0:
        return kl(log_p, log_q)
    if beta == 1.0:
        return kl(log_q, log_p)
    log_m = log_mixture(log_p, log_q, beta)  # (..., V)
    return beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)
