"""The one batch shape every method and model sees: prompts and targets kept apart.

Whatever the model family, a training example is a prompt (the input text) and a target (the output
text, ending with EOS). Keeping them apart lets the same loss code run on T5 and on a decoder-only
model: `Seq2SeqLM.target_logits` returns logits aligned with `target_ids` for both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Batch:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 for real prompt tokens
    target_ids: torch.Tensor  # (B, T) right-padded with pad; the EOS is a target token
    target_mask: torch.Tensor  # (B, T) 1 for target tokens that carry loss (up to and including EOS)

    @property
    def size(self) -> int:
        return self.prompt_ids.shape[0]

    def num_target_tokens(self) -> torch.Tensor:
        return self.target_mask.sum()

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.target_ids, self.target_mask)))

    def with_targets(self, target_ids: torch.Tensor, target_mask: torch.Tensor) -> Batch:
        """The same prompts with other targets (teacher or student samples)."""
        return replace(self, target_ids=target_ids, target_mask=target_mask)

    def repeat_prompts(self, k: int) -> Batch:
        """Each prompt repeated k times in a row (for k samples per input)."""
        return Batch(*(t.repeat_interleave(k, dim=0) for t in (self.prompt_ids, self.prompt_mask, self.target_ids, self.target_mask)))


def pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
    return ids, mask


def mask_after_first_eos(ids: torch.Tensor, eos_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep tokens up to and including the first EOS of each row; pad and mask the rest.

    The EOS itself stays a target token even when pad == eos, so the student learns to stop.
    """
    is_eos = ids == eos_id  # (B, T)
    # number of EOS strictly before each position; a token is kept while no EOS precedes it
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (eos_before == 0).long()
    return torch.where(mask.bool(), ids, torch.full_like(ids, pad_id)), mask
