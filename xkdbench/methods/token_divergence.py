"""Token-level distillation with any divergence of xkdbench.losses, on gold sequences."""
from __future__ import annotations

from dataclasses import dataclass

from xkdbench.methods.base import FIXED, Method, register
from xkdbench.methods.common import DivergenceSettings, divergence_on


@dataclass
class TokenDivergenceConfig(DivergenceSettings):
    """See DivergenceSettings: divergence, beta (jsd), alpha (skew), loss_temperature."""


@register("token_divergence")
class TokenDivergence(Method):
    """D(teacher(.|s_t), student(.|s_t)) per position of gold outputs, e.g. token-level reverse KL,
    JSD or total variation (the off-policy column of the GKD paper's grid)."""

    Config = TokenDivergenceConfig

    @classmethod
    def teacher_sequences(cls, config):
        return frozenset({FIXED})

    def loss(self, batch):
        return {self.config.divergence: divergence_on(self.ctx, batch, self.config)}
