"""Shared pieces of the divergences: log-probabilities, a safe KL sum, a log-mixture, a range check."""
from __future__ import annotations

import math

import torch


def check_unit_interval(name: str, value: float) -> float:
    """Return ``value`` as a float if it lies in [0, 1]; otherwise raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q_student, log p_teacher), each (..., V): log_softmax(logits / temperature) in >= fp32.

    Half-precision logits (bf16, fp16) are upcast to fp32; fp64 logits stay fp64.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: "
                         f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")

    def one(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return torch.log_softmax(logits / temperature, dim=-1)

    return one(student_logits), one(teacher_logits)


def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = sum_v a_v (log a_v - log b_v) over the last dim: (..., V) -> (...).

    Entries with a_v = 0 contribute exactly 0 (0 log 0 = 0) with zero gradient, also when log a_v or
    log b_v is -inf. An entry with a_v > 0 and b_v = 0 gives +inf, as it should.
    """
    a = log_a.exp()
    support = a > 0
    diff = torch.where(support, log_a - log_b, torch.zeros_like(log_a))
    return (a * diff).sum(-1)


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) for 0 < w < 1, stably with logsumexp: (..., V) -> (..., V).

    -inf inputs are clamped to the dtype's finite minimum (exact in value) so that an entry where both
    a and b are 0 gets a finite log-mixture and zero gradient instead of NaN from logsumexp's backward.
    """
    floor = torch.finfo(log_a.dtype).min
    log_a, log_b = log_a.clamp(min=floor), log_b.clamp(min=floor)
    stacked = torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)])
    return torch.logsumexp(stacked, dim=0)
