"""SFT: token negative log-likelihood on gold outputs (also trains the teacher and initialises students)."""
from __future__ import annotations

from dataclasses import dataclass

from xkdbench.methods.base import Method, register
from xkdbench.methods.common import token_nll


@dataclass
class SFTConfig:
    """SFT has no settings."""


@register("sft")
class SFT(Method):
    """Supervised fine-tuning on gold targets: -log q(y_t | s_t) per token."""

    Config = SFTConfig

    @classmethod
    def needs_teacher(cls, config) -> bool:
        return False

    def loss(self, batch):
        return {"nll": token_nll(self.ctx.student_logits(batch), batch.target_ids)}
