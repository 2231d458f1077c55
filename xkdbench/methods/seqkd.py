"""SeqKD (Kim & Rush, 2016): SFT on the teacher's own outputs, decoded once per task and cached."""
from __future__ import annotations

from dataclasses import dataclass

from xkdbench.methods.base import Method, Paper, register
from xkdbench.methods.common import token_nll


@dataclass
class SeqKDConfig:
    """SeqKD has no settings of its own; how the teacher decodes is the experiment's `seqkd` section
    (greedy by default; the paper used beam search)."""


@register("seqkd")
class SeqKD(Method):
    """Token NLL on teacher outputs y ~ teacher(x) instead of gold outputs.

    Deviation: the teacher decodes greedily (or by sampling) rather than with beam search; the
    decoding rule is recorded in the cached outputs' metadata.
    """

    Config = SeqKDConfig
    paper = Paper("Sequence-Level Knowledge Distillation", "1606.07947", "EMNLP 2016")

    @classmethod
    def needs_teacher(cls, config) -> bool:
        return False  # the teacher's work is already in the cached outputs

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return True

    def sequences(self, examples, step):
        return examples.teacher_output

    def loss(self, batch):
        return {"nll": token_nll(self.ctx.student_logits(batch), batch.target_ids)}
