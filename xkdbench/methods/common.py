"""Pieces several methods share: the divergence settings block and per-token NLL."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xkdbench.losses import DIVERGENCES, divergence_fn
from xkdbench.models.batch import Batch
from xkdbench.validation import ConfigError, check_range


@dataclass
class DivergenceSettings:
    """Which token-level divergence to use and its parameters.

    divergence: a key of xkdbench.losses.DIVERGENCES (forward_kl, reverse_kl, jsd, skew_forward_kl,
      skew_reverse_kl, total_variation).
    beta: the generalized JSD's teacher weight (GKD's beta; 0 = forward KL, 1 = reverse KL); jsd only.
    alpha: the skew KL's mixing weight (DistiLLM's alpha); skew divergences only.
    loss_temperature: both logits are divided by it inside the loss (never the sampling temperature).
    """

    divergence: str = "forward_kl"
    beta: float | None = None
    alpha: float | None = None
    loss_temperature: float = 1.0

    def validate(self, where: str) -> None:
        if self.divergence not in DIVERGENCES:
            raise ConfigError(f"{where}.divergence: unknown divergence {self.divergence!r}; "
                              f"allowed: {', '.join(DIVERGENCES.names())}")
        check_range(f"{where}.loss_temperature", self.loss_temperature, 0, low_open=True)
        try:
            self.divergence_fn()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None

    def divergence_fn(self):
        params = {k: v for k, v in (("beta", self.beta), ("alpha", self.alpha)) if v is not None}
        return divergence_fn(self.divergence, **params)


def token_nll(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood (B, T) in fp32; masking is the core's job."""
    return F.cross_entropy(logits.float().transpose(1, 2), target_ids, reduction="none")


def divergence_on(ctx, batch: Batch, settings: DivergenceSettings) -> torch.Tensor:
    """The chosen divergence between student and teacher on batch's targets, per token (B, T)."""
    teacher = ctx.teacher_logits(batch)  # (B, T, V), no grad
    student = ctx.student_logits(batch)  # (B, T, V)
    return settings.divergence_fn()(student, teacher, temperature=settings.loss_temperature)
