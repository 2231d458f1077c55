"""X-KD (Cai & Yuan, arXiv 2602.12674): distillation plus an AVRIL model of the teacher's reward.

Two forms, one per base method: `xkd_seq` = SeqKD + R, `xkd_div` = GKD + R, where R is the AVRIL
regulariser of `xkd_reward` on the student's own Q-values and a reward head trained with the student.
With R switched off (reward_likelihood_weight 0 and kl_weight 0) each is exactly its base method:
the base loss runs unchanged on the same student forward (see `_SharedForward`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xkdbench.methods.base import Paper, register
from xkdbench.methods.gkd import GKD, GKDConfig
from xkdbench.methods.seqkd import SeqKD, SeqKDConfig
from xkdbench.methods.xkd_reward import (
    HEAD_NAME,
    AVRILSettings,
    avril_regulariser,
    load_learned_reward,
    reward_head_for,
)
from xkdbench.models.batch import Batch
from xkdbench.validation import check_choice

PAPER = Paper("X-KD: General Experiential Knowledge Distillation for Large Language Models", "2602.12674",
              reconstructed=True)
REGULARISER_ON = ("same", "gold")


class _SharedForward:
    """The training context as the base method sees it inside X-KD's loss: `student_logits` returns
    the forward X-KD already made with the hidden state, so there is one student forward, not two."""

    def __init__(self, ctx, batch: Batch, logits: torch.Tensor):
        self._ctx, self._batch, self._logits = ctx, batch, logits

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def student_logits(self, batch: Batch, *, with_hidden: bool = False):
        assert batch is self._batch and not with_hidden, "the base loss asked for another forward"
        return self._logits


class _XKD:
    """What both forms add to their base method: the reward head and the regulariser R."""

    paper = PAPER

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.reward_head = reward_head_for(ctx.student)

    def trainable_modules(self):
        return {HEAD_NAME: self.reward_head}

    @classmethod
    def learned_reward(cls, model_dir, config, student):
        return load_learned_reward(model_dir, student) if config.regulariser_active else None

    def _forward(self, batch: Batch):
        """Student logits (B, T, V) and the head's (mu, log sigma), each (B, T), on batch."""
        logits, hidden = self.ctx.student_logits(batch, with_hidden=True)
        if self.config.detach_reward_features:
            hidden = hidden.detach()
        return logits, self.reward_head(hidden)

    def _regulariser(self, batch: Batch, logits: torch.Tensor, mu_sigma) -> torch.Tensor:
        return avril_regulariser(logits, batch.target_ids, *mu_sigma, batch.target_mask, self.config)  # (B, T)

    def _base_terms(self, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        ctx, self.ctx = self.ctx, _SharedForward(self.ctx, batch, logits)
        try:
            return super().loss(batch)  # the base method's own loss, unchanged
        finally:
            self.ctx = ctx

    def loss(self, batch):
        logits, mu_sigma = self._forward(batch)
        terms = self._base_terms(batch, logits)
        if self.config.regulariser_active:
            terms["avril"] = self._regulariser(batch, logits, mu_sigma)
        return terms


@dataclass
class XKDSeqConfig(SeqKDConfig, AVRILSettings):
    """Sequence-level X-KD: SeqKD's NLL on the teacher's cached outputs + R on the same outputs.

    reward_likelihood_weight (lambda), kl_weight (beta), discount (gamma), q_map, ava_alpha,
    detach_reward_features, td_target_gradient: the AVRIL regulariser, see xkd_reward.AVRILSettings.
    """


@register("xkd_seq")
class XKDSeq(_XKD, SeqKD):
    """Sequence-level X-KD: loss_t = -log q(y_t|s_t) + R_t on teacher outputs y (cached, as in SeqKD).

    RECONSTRUCTED (the X-KD loss is not public): SeqKD's NLL stands for AVRIL's policy likelihood
    log softmax(Q)[a] (identical to it with q_map `logit`); R as in xkd_reward; the sum is averaged
    over target tokens like every loss of the suite (R is 0 on each output's last token, which still
    counts in the denominator). Deviations: the reward head is linear on the student's last decoder
    hidden state (AVRIL: a 2-layer MLP encoder on the state); the teacher decodes as SeqKD does.
    """

    Config = XKDSeqConfig


@dataclass
class XKDDivConfig(GKDConfig, AVRILSettings):
    """Divergence-based X-KD: GKD's objective + R.

    divergence, beta, alpha, loss_temperature, student_data_fraction (GKD's lambda), seq_kd: as in GKD.
    reward_likelihood_weight (lambda), kl_weight (beta of AVRIL, not the JSD's), discount (gamma),
      q_map, ava_alpha, detach_reward_features, td_target_gradient: the AVRIL regulariser, see
      xkd_reward.AVRILSettings.
    regulariser_on: RECONSTRUCTED, which sequences R runs on: `same` (the divergence's sequences) or
      `gold` (the gold outputs, the teacher's own training data: one reading of "the teacher's
      original learning environment"), while the divergence runs on GKD's sequences.
    """

    regulariser_on: str = "same"

    def validate(self, where):
        GKDConfig.validate(self, where)
        AVRILSettings.validate(self, where)
        check_choice(f"{where}.regulariser_on", self.regulariser_on, REGULARISER_ON)


@dataclass
class GoldRegularised(Batch):
    """GKD's batch carrying the gold batch R runs on (regulariser_on: gold) and the step's token
    counts: `step_tokens` is shared by all micro-batches of an optimiser step and filled by
    `sequences`, which the core calls for every micro-batch before any loss of the step."""

    gold: Batch | None = None
    step_tokens: dict | None = None


@register("xkd_div")
class XKDDiv(_XKD, GKD):
    """Divergence-based X-KD: loss_t = D(p || q)(s_t) + R_t, D and the data source as in GKD.

    RECONSTRUCTED: the divergence stands for AVRIL's policy likelihood term; R as in xkd_reward.
    With regulariser_on `gold`, R runs on the gold outputs of the same prompts, and the step's loss is
      sum_{div tokens} D / N_div + sum_{gold tokens} R / N_gold
    (N_* counted over the whole optimiser step), so both parts are token means over their own
    sequences and gradient accumulation does not change the loss. The core divides every term by
    N_div, so R's gold sum S_k of micro-batch k is spread evenly over the divergence tokens of that
    micro-batch (n_k of them), each carrying (N_div / N_gold) S_k / n_k. The logged `avril` is
    then R's gold-token mean. Deviations: see XKDSeq.
    """

    Config = XKDDivConfig

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._tokens_step, self._step_tokens = -1, None

    def sequences(self, examples, step):
        batch = super().sequences(examples, step)
        if self.config.regulariser_on == "same" or not self.config.regulariser_active:
            return batch
        if step != self._tokens_step:  # a new optimiser step: fresh shared counts
            self._tokens_step, self._step_tokens = step, {"div": 0, "gold": 0}
        self._step_tokens["div"] = self._step_tokens["div"] + batch.target_mask.sum()
        self._step_tokens["gold"] = self._step_tokens["gold"] + examples.gold.target_mask.sum()
        return GoldRegularised(batch.prompt_ids, batch.prompt_mask, batch.target_ids, batch.target_mask,
                               gold=examples.gold, step_tokens=self._step_tokens)

    def loss(self, batch):
        if not isinstance(batch, GoldRegularised):
            return super().loss(batch)
        logits, mu_sigma = self._forward(batch)
        terms = self._base_terms(batch, logits)
        gold = batch.gold
        if gold.target_ids.shape != batch.target_ids.shape or not torch.equal(gold.target_ids, batch.target_ids):
            logits, mu_sigma = self._forward(gold)  # off the fixed data: a second forward, on gold
        gold_sum = self._regulariser(gold, logits, mu_sigma).sum()  # S_k (masked inside: 0 on pads)
        tokens = batch.step_tokens
        per_token = tokens["div"] / tokens["gold"].clamp(min=1) * gold_sum / batch.target_mask.sum().clamp(min=1)
        terms["avril"] = per_token * torch.ones_like(batch.target_ids, dtype=torch.float32)  # (B, T)
        return terms
