"""X-KD's reward model: the reward head, the AVRIL regulariser, and the learned reward it yields.

AVRIL (Chan & van der Schaar, ICLR 2021; public code XanderJC/scalable-birl) maximises over data
transitions (s, a, s', a')
    log softmax(Q(s, .))[a] - KL(N(mu, sigma^2) || N(0, 1)) + lambda log N(Q(s, a) - gamma Q(s', a'); mu, sigma^2)
with a reward encoder giving (mu, log sigma) per state (its default `state_only=True`), prior N(0, 1),
a' the next action of the data, no target network. Its code has no discount (gamma = 1) and weights
both reward terms by 1. X-KD (Cai & Yuan, arXiv 2602.12674) uses AVRIL for distillation; the exact
loss is not public. RECONSTRUCTED here (switch in brackets where there is one):
  - the policy term is the base method's loss (SeqKD NLL or a GKD divergence), not AVRIL's own
    (equal to it for SeqKD with q_map `logit`);
  - Q(s_t, y_t) comes from the student's own logits [q_map, ava_alpha], along the training sequence,
    the last transition dropped, no target network [discount, reward_likelihood_weight, kl_weight];
  - the reward encoder is a linear head H -> 2 on the student's last decoder hidden state h_t, i.e.
    on the state s_t = (x, y_<t): a state-only reward as AVRIL's default (AVRIL: a 2-layer MLP on the
    state); it reads h_t without gradient by default [detach_reward_features];
  - log sigma is clamped to [-5, 5]; the head starts at the prior (mu = 0, sigma = 1, zero init);
  - R is a per-token term averaged over target tokens by the core, like the base loss;
  - the learned reward of an output is the sum of mu_t over its valid tokens.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM, eval_mode
from xkdbench.validation import ConfigError, check_choice, check_range

Q_MAPS = ("logit", "logprob", "ava")
LOG_SIGMA_RANGE = (-5.0, 5.0)
HEAD_NAME = "reward_head"  # saved by the core beside the checkpoint as reward_head.pt


@dataclass
class AVRILSettings:
    """The AVRIL regulariser R_t = kl_weight KL(N(mu_t, sigma_t^2) || N(0,1))
    - reward_likelihood_weight log N(delta_t; mu_t, sigma_t^2), delta_t = Q(s_t, y_t) - discount Q(s_{t+1}, y_{t+1}).

    reward_likelihood_weight: lambda of AVRIL (1 in its code), the weight of the TD residual's
      Gaussian log-likelihood under the reward posterior. Known from AVRIL; its value for X-KD is not public.
    kl_weight: beta, the weight of the KL of the reward posterior to its N(0, 1) prior (1 in AVRIL,
      where it is implicit). 0 switches the KL term off; with reward_likelihood_weight 0 too, the
      regulariser is off and X-KD is exactly its base method.
    discount: gamma of the TD residual (AVRIL's code: 1, no discount).
    q_map: RECONSTRUCTED, how the student gives Q(s_t, y_t): `logit` (the raw logit of y_t; then the
      Boltzmann policy softmax(Q) is the student itself, as in AVRIL, whose Q-network gives the policy
      logits), `logprob` (log q(y_t|s_t)), `ava` (log_softmax(ava_alpha * logits)[y_t], the bounded
      mapping of the authors' AVA paper, arXiv 2411.09341).
    ava_alpha: alpha of the `ava` mapping (its value is not public; at 1 `ava` equals `logprob`).
    Defaults: lambda 0.1, gamma 1, q_map `logit` trained stably on tiny models of both families
      (RECONSTRUCTED choices). Keep lambda below kl_weight: with residuals fit exactly, the optimal
      sigma^2 is 1 - lambda / kl_weight, so lambda >= kl_weight drives sigma to its clamp and
      multiplies the TD gradient by up to e^10.
    detach_reward_features: RECONSTRUCTED. True: the head reads h_t without gradient, so the reward
      terms train the student only through Q and the head only through (mu, sigma), like AVRIL's
      separate encoder and Q-network. False: they also shape the student's features through h_t.
    td_target_gradient: RECONSTRUCTED. True (default, as AVRIL's code, which has no target network
      and no stop-gradient): the residual's gradient flows into both Q(s_t, y_t) and Q(s_{t+1}, y_{t+1}).
      False: semi-gradient TD, the bootstrap term discount * Q(s_{t+1}, y_{t+1}) is a constant.
    """

    reward_likelihood_weight: float = 0.1
    kl_weight: float = 1.0
    discount: float = 1.0
    q_map: str = "logit"
    ava_alpha: float = 0.5
    detach_reward_features: bool = True
    td_target_gradient: bool = True

    def validate(self, where: str) -> None:
        check_range(f"{where}.reward_likelihood_weight", self.reward_likelihood_weight, 0)
        check_range(f"{where}.kl_weight", self.kl_weight, 0)
        check_range(f"{where}.discount", self.discount, 0, 1)
        check_choice(f"{where}.q_map", self.q_map, Q_MAPS)
        check_range(f"{where}.ava_alpha", self.ava_alpha, 0, low_open=True)

    @property
    def regulariser_active(self) -> bool:
        return self.reward_likelihood_weight != 0 or self.kl_weight != 0


class RewardHead(torch.nn.Module):
    """h_t (B, T, H) -> (mu_t, log sigma_t), each (B, T), in fp32. Zero init: mu = 0, sigma = 1 (the prior)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 2)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.linear(hidden.float()).unbind(-1)
        return mu, log_sigma.clamp(*LOG_SIGMA_RANGE)


def reward_head_for(student: Seq2SeqLM) -> RewardHead:
    return RewardHead(student.model.config.hidden_size)


def q_values(logits: torch.Tensor, target_ids: torch.Tensor, q_map: str, ava_alpha: float = 1.0) -> torch.Tensor:
    """Q(s_t, y_t) (B, T) of the taken tokens from student logits (B, T, V), in fp32."""
    logits = logits.float()
    if q_map == "logit":
        table = logits
    elif q_map == "logprob":
        table = F.log_softmax(logits, dim=-1)
    elif q_map == "ava":
        table = F.log_softmax(ava_alpha * logits, dim=-1)
    else:
        raise ConfigError(f"q_map: {q_map!r} is not allowed; allowed: {', '.join(Q_MAPS)}")
    return table.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


def avril_regulariser(logits: torch.Tensor, target_ids: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                      target_mask: torch.Tensor, settings: AVRILSettings) -> torch.Tensor:
    """R_t per position (B, T); 0 at the last valid token of each row (its transition has no next
    token) and at padding. logits (B, T, V), target_ids/target_mask/mu/log_sigma (B, T)."""
    q = q_values(logits, target_ids, settings.q_map, settings.ava_alpha)  # (B, T)
    valid = target_mask.bool()
    has_next = valid & F.pad(valid[:, 1:], (0, 1), value=False)  # t valid and t+1 valid
    q_next = F.pad(q[:, 1:], (0, 1))  # Q(s_{t+1}, y_{t+1}); the pad is never used
    if not settings.td_target_gradient:
        q_next = q_next.detach()
    delta = q - settings.discount * q_next  # (B, T)
    mu, log_sigma = mu.float(), log_sigma.float()
    variance = torch.exp(2 * log_sigma)
    kl = 0.5 * (mu ** 2 + variance - 1.0) - log_sigma  # KL(N(mu, sigma^2) || N(0, 1))
    log_lik = -0.5 * math.log(2 * math.pi) - log_sigma - 0.5 * (delta - mu) ** 2 / variance
    r = settings.kl_weight * kl - settings.reward_likelihood_weight * log_lik
    return torch.where(has_next, r, torch.zeros_like(r))


def load_learned_reward(model_dir: str | Path, student: Seq2SeqLM) -> Callable[[Batch], torch.Tensor]:
    """The learned reward of an X-KD checkpoint: sum over each output's valid tokens of mu_t (B,)."""
    path = Path(model_dir) / f"{HEAD_NAME}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: an X-KD checkpoint must hold its reward head; was it trained with X-KD?")
    head = reward_head_for(student)
    head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    head.to(next(student.model.parameters()).device).eval()

    @torch.no_grad()
    def reward(batch: Batch) -> torch.Tensor:
        with eval_mode(student.model):
            _, hidden = student.target_logits(batch, with_hidden=True)  # (B, T, H)
        mu, _ = head(hidden)  # (B, T)
        return (mu * batch.target_mask.to(mu.dtype)).sum(dim=1)

    return reward
