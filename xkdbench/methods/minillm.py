"""MiniLLM (Gu et al., ICLR 2024): sequence-level reverse KL by policy gradient on teacher-mixed samples."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from xkdbench.core.mixture_sampling import sample_teacher_mixed
from xkdbench.losses import reverse_kl
from xkdbench.methods.base import SAMPLED, Method, Paper, register
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import eval_mode
from xkdbench.validation import ConfigError, check_choice, check_range

RETURN_FORMS = ("paper", "code")


@dataclass
class MiniLLMConfig:
    """teacher_mix_weight: alpha, the teacher's weight in the sampling policy pi_mix = alpha p + (1 - alpha) q
      (the paper's teacher-mixed sampling; LMOps `teacher_mixed_alpha`). 0 samples from the student alone.
    clip_range: epsilon of PPO's ratio clipping (LMOps `cliprange`).
    ppo_epochs: K, the optimiser steps one rollout batch is used for (LMOps `ppo_epochs`); each counts
      against the run's step budget.
    return_form: `paper` (default) or `code` (the LMOps code): see the class docstring.
    discount: gamma of the code form's return (LMOps `gamma`); the paper form has none.
    lm_loss_weight: the weight of the paper's language-model loss L_PT on a pre-training corpus (LMOps
      `lm_coef`); must be 0, the suite's tasks have no such corpus."""

    teacher_mix_weight: float = 0.2
    clip_range: float = 0.2
    ppo_epochs: int = 4
    return_form: str = "paper"
    discount: float = 0.95
    lm_loss_weight: float = 0.0

    def validate(self, where: str) -> None:
        check_range(f"{where}.teacher_mix_weight", self.teacher_mix_weight, 0, 1)
        check_range(f"{where}.clip_range", self.clip_range, 0, 1, low_open=True)
        check_range(f"{where}.ppo_epochs", self.ppo_epochs, 1)
        check_choice(f"{where}.return_form", self.return_form, RETURN_FORMS)
        check_range(f"{where}.discount", self.discount, 0, 1)
        if self.lm_loss_weight != 0:
            raise ConfigError(f"{where}.lm_loss_weight: {self.lm_loss_weight!r} is not allowed; allowed: 0 (the "
                              "pre-training-corpus language-model term needs a corpus the embedded tasks do not have)")


@dataclass
class Rollout(Batch):
    """A teacher-mixed sample and what the policy gradient needs, each (B, T) and 0 after the target."""

    old_logprobs: torch.Tensor  # log q_old(y_t | s_t): the student when the rollout was drawn
    teacher_logprobs: torch.Tensor  # log p(y_t | s_t)
    mixture_logprobs: torch.Tensor  # log pi_mix(y_t | s_t), at the sampling temperature
    weights: torch.Tensor  # w_t = q_old(y_t | s_t) / pi_mix(y_t | s_t)
    rewards: torch.Tensor  # r_t = log p(y_t | s_t) - log q_old(y_t | s_t)
    advantages: torch.Tensor  # R_t (paper) or whitened A_t (code)

    def to(self, device) -> Rollout:
        return Rollout(*(getattr(self, f.name).to(device) for f in fields(self)))


def paper_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised future return (B, T): with 1-indexed t in a target of L tokens,
    R_t = 1/(L - t) * sum_{t'=t+1..L} r_t', the mean of the rewards AFTER t; R_L = 0 (no future)."""
    r, m = rewards * mask, mask.float()
    future = r.flip(1).cumsum(1).flip(1) - r  # sum over t' > t
    count = m.flip(1).cumsum(1).flip(1) - m  # L - t
    return torch.where(count > 0, future / count.clamp(min=1), torch.zeros_like(r)) * m


def code_advantages(rewards: torch.Tensor, mask: torch.Tensor, discount: float) -> torch.Tensor:
    """LMOps' advantage (B, T): G_t = sum_{t'>=t} gamma^(t'-t) r_t' divided by L - t + 1 (the tokens from t
    on, t itself included), then whitened over the batch's target tokens: (G - mean) / sqrt(var + 1e-8),
    var unbiased as in `torch.var_mean`."""
    r, m = rewards * mask, mask.float()
    returns, running = torch.zeros_like(r), torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        running = r[:, t] + discount * running
        returns[:, t] = running
    returns = returns / m.flip(1).cumsum(1).flip(1).clamp(min=1)
    valid = returns[m.bool()]
    var = valid.var() if valid.numel() > 1 else torch.zeros(())
    return (returns - valid.mean()) * torch.rsqrt(var + 1e-8) * m


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> torch.Tensor:
    """PPO's pessimistic surrogate as a loss: max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)), per token."""
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range))


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] in fp32: (B, T, V), (B, T) -> (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


@register("minillm")
class MiniLLM(Method):
    """MiniLLM: minimise the sequence-level reverse KL(q || p) by policy gradient, with the paper's three
    stabilisers: teacher-mixed sampling with a per-token importance weight, the single-step term
    differentiated exactly, and length-normalised returns; PPO ratio clipping over `ppo_epochs` steps.

    Per rollout (one micro-batch): y ~ pi_mix token by token (KV caches, no gradient; at the experiment's
    sampling temperature, 1 by default as in the paper, which w_t then also corrects; its top_p is not
    applied), then q_old, p, pi_mix, w_t, r_t and the return are stored. Loss terms per token:
      pg           paper: w_t * max(-R_t rho_t, -R_t clip(rho_t, 1 - eps, 1 + eps)), rho_t = q_theta / q_old
                   code:  max(-A_t w_t rho_t, -A_t clip(w_t rho_t, 1 - eps, 1 + eps))  (LMOps clips the
                          product w_t rho_t = q_theta / pi_mix)
      single_step  paper: w_t * RKL_t, the exact per-token reverse KL over the vocabulary (its gradient is
                   the paper's single-step part, not estimated); code: RKL_t (LMOps weights it by nothing).
    Return: paper R_t = mean of the rewards after t (see `paper_returns`); code: discounted (gamma 0.95)
    return including r_t, divided by the tokens left, whitened over the rollout micro-batch (LMOps: over
    the rollout mini-batch of the update) (`code_advantages`).

    Deviations and reconstructed choices:
    - The paper writes R^Norm_{t+1} = 1/(T - t - 1) sum_{t'=t+1}^T r_t'; the normaliser here is the number
      of terms summed (L - t), and R_L = 0 for the last token.
    - RECONSTRUCTED (the paper's clipped objective was not at hand): the paper form keeps w_t as a fixed
      weight outside PPO's clip of rho_t; w_t itself is not clipped (LMOps neither): at temperature 1 it
      is at most 1/(1 - alpha), as pi_mix >= (1 - alpha) q_old.
    - Rollouts are per micro-batch and reused for `ppo_epochs` consecutive optimiser steps (LMOps shuffles
      a store of 256 rollouts into mini-batches): the loader's examples of the reused steps are not read,
      so within the shared step budget MiniLLM sees 1/ppo_epochs of the prompts the others see.
    - LMOps' reward scaling (0.5) and reward clipping (100) are left out: whitening undoes the scale, the
      clip binds only past 50 nats; its whitening also counts padding, ours target tokens only.
    - The pre-training-corpus term L_PT is not available (lm_loss_weight must be 0).
    - The student runs without dropout in this method's forwards (LMOps sets eval mode for RL), so
      rho_t = 1 exactly in a rollout's first step.
    """

    Config = MiniLLMConfig
    paper = Paper("MiniLLM: Knowledge Distillation of Large Language Models", "2306.08543", "ICLR 2024")

    @classmethod
    def teacher_sequences(cls, config):
        return frozenset({SAMPLED})  # every rollout is a fresh teacher-mixed sample

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._rollout_key, self._rollouts = -1, {}  # rollout per micro-batch index
        self._step, self._micro = -1, 0

    def sequences(self, examples, step):
        if step != self._step:
            self._step, self._micro = step, 0
        micro, self._micro = self._micro, self._micro + 1
        key = step // self.config.ppo_epochs
        if key != self._rollout_key:
            self._rollout_key, self._rollouts = key, {}
        if micro not in self._rollouts:
            self._rollouts[micro] = self.rollout(examples.gold)
        return self._rollouts[micro].to(self.ctx.device)

    @torch.no_grad()
    def rollout(self, prompts: Batch) -> Rollout:
        cfg, ctx = self.config, self.ctx
        batch = sample_teacher_mixed(ctx, prompts, cfg.teacher_mix_weight)
        mask = batch.target_mask.float()  # (B, T)
        with eval_mode(ctx.student.model):
            student = ctx.student_logits(batch).float()  # (B, T, V)
        teacher = ctx.teacher_logits(batch).float()  # (B, T, V)
        log_q, log_p = token_logprobs(student, batch.target_ids), token_logprobs(teacher, batch.target_ids)
        log_mix = self.mixture_logprobs(student, teacher, batch.target_ids)
        rewards = (log_p - log_q) * mask
        if cfg.return_form == "paper":
            advantages = paper_returns(rewards, mask)
        else:
            advantages = code_advantages(rewards, mask, cfg.discount)
        return Rollout(batch.prompt_ids, batch.prompt_mask, batch.target_ids, batch.target_mask,
                       old_logprobs=log_q * mask, teacher_logprobs=log_p * mask, mixture_logprobs=log_mix * mask,
                       weights=torch.exp(log_q - log_mix) * mask, rewards=rewards, advantages=advantages)

    def mixture_logprobs(self, student: torch.Tensor, teacher: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """log pi_mix(y_t | s_t) (B, T) at the sampling temperature tau, the distribution y was drawn from."""
        alpha, tau = self.config.teacher_mix_weight, self.ctx.sampling.sampling_temperature
        log_q, log_p = token_logprobs(student / tau, ids), token_logprobs(teacher / tau, ids)
        if alpha in (0.0, 1.0):
            return log_p if alpha == 1.0 else log_q
        return torch.logaddexp(log_p + math.log(alpha), log_q + math.log1p(-alpha))

    def loss(self, batch: Rollout):
        with eval_mode(self.ctx.student.model):
            student = self.ctx.student_logits(batch)  # (B, T, V), with gradient
        teacher = self.ctx.teacher_logits(batch)  # (B, T, V)
        ratio = torch.exp(token_logprobs(student, batch.target_ids) - batch.old_logprobs)  # rho_t (B, T)
        single_step = reverse_kl(student, teacher)  # (B, T)
        eps = self.config.clip_range
        if self.config.return_form == "paper":
            pg = batch.weights * clipped_surrogate(ratio, batch.advantages, eps)
            single_step = batch.weights * single_step
        else:
            pg = clipped_surrogate(batch.weights * ratio, batch.advantages, eps)
        return {"pg": pg, "single_step": single_step}

    def state_dict(self):
        rollouts = {k: {f.name: getattr(r, f.name).cpu() for f in fields(r)} for k, r in self._rollouts.items()}
        return {"rollout_key": self._rollout_key, "rollouts": rollouts}

    def load_state_dict(self, state):
        self._rollout_key = state["rollout_key"]
        self._rollouts = {k: Rollout(**v) for k, v in state["rollouts"].items()}
