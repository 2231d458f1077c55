"""Training data: tokenised once, served in a deterministic order that depends only on (seed, step).

Because the order is a pure function of the step, resuming from a checkpoint needs no loader state,
and `batch_size x grad_accum` splits of the same step see the same examples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xkdbench.core.context import TrainExamples
from xkdbench.core.distributed import shard
from xkdbench.models.seq2seq import Seq2SeqLM


@dataclass
class TrainData:
    prompts: list[list[int]]
    targets: list[list[int]]
    teacher_outputs: list[list[int]] | None = None

    @classmethod
    def from_texts(cls, model: Seq2SeqLM, prompts: list[str], targets: list[str], *, max_prompt_tokens: int,
                   max_target_tokens: int, teacher_outputs: list[str] | None = None) -> TrainData:
        if not prompts:
            raise ValueError("the training split is empty")
        if teacher_outputs is not None and len(teacher_outputs) != len(prompts):
            raise ValueError(f"teacher outputs cover {len(teacher_outputs)} inputs, the training data has {len(prompts)}")
        return cls(
            prompts=model.encode_prompts(prompts, max_prompt_tokens),
            targets=model.encode_targets(targets, max_target_tokens),
            teacher_outputs=None if teacher_outputs is None else model.encode_targets(teacher_outputs, max_target_tokens),
        )

    def __len__(self) -> int:
        return len(self.prompts)


class StepLoader:
    """Serves the micro-batches of optimiser step `step`: batch_size x grad_accum examples (over all ranks)."""

    def __init__(self, data: TrainData, model: Seq2SeqLM, *, batch_size: int, grad_accum: int, seed: int):
        self.data, self.model = data, model
        self.batch_size, self.grad_accum, self.seed = batch_size, grad_accum, seed
        self._epoch, self._order = -1, None

    def _indices(self, start: int, count: int) -> list[int]:
        n = len(self.data)
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, n)
            if epoch != self._epoch:  # a fresh seeded permutation per epoch
                generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._order, self._epoch = torch.randperm(n, generator=generator).tolist(), epoch
            out.append(self._order[offset])
        return out

    def step_indices(self, step: int) -> list[int]:
        """The data indices of optimiser step `step`, every micro-batch (and every rank's share) in order.
        Only len(data) is read, so `data` may be any sequence: an external trainer serves these to see the
        suite's examples step by step (`xkdbench cell-inputs`)."""
        per_step = self.batch_size * self.grad_accum
        return self._indices(step * per_step, per_step)

    def step_examples(self, step: int) -> list[TrainExamples]:
        indices = self.step_indices(step)
        micro = []
        for k in range(self.grad_accum):
            # in a distributed run this rank's equal share of the micro-batch (see xkdbench.core.distributed)
            chunk = shard(indices[k * self.batch_size:(k + 1) * self.batch_size])
            gold = self.model.collate([self.data.prompts[i] for i in chunk], [self.data.targets[i] for i in chunk])
            teacher = None
            if self.data.teacher_outputs is not None:
                teacher = self.model.collate([self.data.prompts[i] for i in chunk],
                                             [self.data.teacher_outputs[i] for i in chunk])
            micro.append(TrainExamples(gold, teacher, tuple(chunk)))
        return micro
