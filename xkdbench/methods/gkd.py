"""GKD (Agarwal et al., ICLR 2024): divergence on a mix of fixed and student-generated sequences."""
from __future__ import annotations

from dataclasses import dataclass

from xkdbench.methods.base import FIXED, SAMPLED, Method, Paper, register
from xkdbench.methods.common import DivergenceSettings, divergence_on
from xkdbench.validation import check_range


@dataclass
class GKDConfig(DivergenceSettings):
    """student_data_fraction: lambda in the paper, the probability that an optimiser step trains on
      student samples (drawn at the experiment's sampling temperature, 1 by default) instead of
      fixed data. 0 = supervised (off-policy), 1 = fully on-policy.
    seq_kd: the fixed data are the teacher's cached outputs instead of gold outputs.
    divergence, beta, alpha, loss_temperature: see DivergenceSettings (default: generalized JSD with
      beta 0.5, the divergence's own default)."""

    divergence: str = "jsd"
    student_data_fraction: float = 0.5
    seq_kd: bool = False

    def validate(self, where):
        super().validate(where)
        check_range(f"{where}.student_data_fraction", self.student_data_fraction, 0, 1)


@register("gkd")
class GKD(Method):
    """Generalized knowledge distillation, the paper's Algorithm 1.

    One coin per optimiser step (not per micro-batch), drawn from the context's seeded generator,
    decides on-policy vs fixed data, so all micro-batches and all processes of a step agree.
    """

    Config = GKDConfig
    paper = Paper("On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes",
                  "2306.13649", "ICLR 2024")

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return config.seq_kd

    @classmethod
    def teacher_sequences(cls, config):
        fraction = config.student_data_fraction
        return frozenset({FIXED} if fraction < 1 else set()) | frozenset({SAMPLED} if fraction > 0 else set())

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._coin_step, self._on_policy = -1, False

    def on_policy(self, step: int) -> bool:
        if step != self._coin_step:
            self._coin_step = step
            self._on_policy = self.ctx.rng.random() < self.config.student_data_fraction
        return self._on_policy

    def sequences(self, examples, step):
        fixed = examples.teacher_output if self.config.seq_kd else examples.gold
        return self.ctx.sample_student(fixed) if self.on_policy(step) else fixed

    def loss(self, batch):
        return {self.config.divergence: divergence_on(self.ctx, batch, self.config)}
