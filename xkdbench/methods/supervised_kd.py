"""Supervised KD: forward KL to the teacher's token distributions on gold sequences."""
from __future__ import annotations

from dataclasses import dataclass

from xkdbench.methods.base import FIXED, Method, Paper, register
from xkdbench.methods.common import token_nll
from xkdbench.validation import check_range


@dataclass
class SupervisedKDConfig:
    """hard_label_weight: weight of the gold NLL added to the KL (0 as in GKD). LMOps and DistiLLM train on
      (1 - kd_ratio) NLL + kd_ratio KD with kd_ratio 0.5, i.e. NLL and KD weighted 1:1: in this form that
      is hard_label_weight 1 (their loss is half of ours, a factor Adam's update is invariant to).
    loss_temperature: logits of both models are divided by it inside the KL."""

    hard_label_weight: float = 0.0
    loss_temperature: float = 1.0

    def validate(self, where):
        check_range(f"{where}.hard_label_weight", self.hard_label_weight, 0)
        check_range(f"{where}.loss_temperature", self.loss_temperature, 0, low_open=True)


@register("supervised_kd")
class SupervisedKD(Method):
    """sum_v p(v|s_t) (log p - log q) on gold y (Hinton et al. 2015; Sanh et al. 2019 for LMs),
    equal to GKD with student_data_fraction 0 and forward KL."""

    Config = SupervisedKDConfig
    paper = Paper("Distilling the Knowledge in a Neural Network", "1503.02531")

    @classmethod
    def teacher_sequences(cls, config):
        return frozenset({FIXED})

    def loss(self, batch):
        from xkdbench.losses import forward_kl

        teacher = self.ctx.teacher_logits(batch)
        student = self.ctx.student_logits(batch)
        terms = {"forward_kl": forward_kl(student, teacher, temperature=self.config.loss_temperature)}
        if self.config.hard_label_weight:
            terms["nll"] = self.config.hard_label_weight * token_nll(student, batch.target_ids)
        return terms
