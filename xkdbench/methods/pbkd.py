"""PbKD (Jia, arXiv 2505.18952), reconstructed: preference-based distillation with reward guidance.

Distillation as imitation under an unknown reward: minimise the performance gap J(teacher, r) - J(student, r)
by a min-max between the student and a reward model r restricted to a confidence set, the reward models
whose Bradley-Terry log-likelihood on preference pairs is within zeta of the best. Black-box: only the
teacher's outputs are used (SeqKD's cached outputs). Two registry keys: `pbkd_offline` (pairs built once,
from the initial student) and `pbkd_online` (rounds that add pairs from the current student).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from xkdbench.losses import reverse_kl
from xkdbench.methods.base import Method, Paper, register
from xkdbench.methods.bellman_distill import with_trailing_pad
from xkdbench.methods.minillm import token_logprobs
from xkdbench.methods.preference import (
    PreferenceRounds,
    PreferenceSettings,
    bradley_terry_loglik,
    fit_bradley_terry,
    oracle_labels,
    rloo_advantages,
    zscore,
)
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM, eval_mode
from xkdbench.validation import ConfigError, check_range

PAPER = Paper("Online Knowledge Distillation with Reward Guidance (PbKD, reconstructed)", "2505.18952",
              reconstructed=True)
REWARD_NAME = "reward_model"  # saved beside the checkpoint as reward_model.pt


class RewardModel(torch.nn.Module):
    """r(x, y): a language model of the student's architecture with a scalar head on the hidden state that
    has read the whole output (the position after its last token). The head starts at zero (r = 0)."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        super().__init__()
        self.trunk = model
        self.head = torch.nn.Linear(model.config.hidden_size, 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self._view = Seq2SeqLM(model, tokenizer)

    def forward(self, batch: Batch) -> torch.Tensor:
        _, hidden = self._view.target_logits(with_trailing_pad(batch, self._view.pad_id), with_hidden=True)  # (B, T+1, H)
        last = batch.target_mask.sum(dim=1)  # the state after each output's last token
        return self.head(hidden[torch.arange(batch.size, device=hidden.device), last].float()).squeeze(-1)  # (B,)


@dataclass
class PbKDConfig(PreferenceSettings):
    """num_samples: k, student samples per input for RLOO (>= 2); each is also a rejected output of a pair.
      2 by default: with 4, a default-study cell took ~4x the two minutes of the other on-policy cells.
    reward_steps, reward_lr, reward_weight_decay: the reward model's own AdamW, `reward_steps` steps per
      micro-batch before the policy step (constant learning rate).
    reward_l2: the weight of the penalty on squared rewards (mean over the teacher's and the samples'),
      which keeps the reward gap bounded.
    kl_weight: the per-token KL(q || q_init) to the initial student on the samples (0: off; not part of
      the papers' stated objective).
    preference_weight (eta), preference_labels, pair_batch_size, ml_fit_steps, ml_fit_lr, confidence_slack
      (zeta): see preference.PreferenceSettings."""

    num_samples: int = 2
    reward_steps: int = 1
    reward_lr: float = 3e-3
    reward_weight_decay: float = 0.0
    reward_l2: float = 0.1
    kl_weight: float = 0.05

    def validate(self, where: str) -> None:
        super().validate(where)
        check_range(f"{where}.num_samples", self.num_samples, 2)
        check_range(f"{where}.reward_steps", self.reward_steps, 1)
        check_range(f"{where}.reward_lr", self.reward_lr, 0, low_open=True)
        check_range(f"{where}.reward_weight_decay", self.reward_weight_decay, 0)
        check_range(f"{where}.reward_l2", self.reward_l2, 0)
        check_range(f"{where}.kl_weight", self.kl_weight, 0)


@dataclass
class PbKDOnlineConfig(PbKDConfig):
    """PbKD's settings, plus rounds: preference rounds spread evenly over the run's steps (1 = offline)."""

    rounds: int = 4

    def validate(self, where: str) -> None:
        super().validate(where)
        check_range(f"{where}.rounds", self.rounds, 1)


@dataclass
class PolicyRollout(Batch):
    """The student's samples (k consecutive rows per input) with their rewards and RLOO advantages (B,)."""

    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None


@register("pbkd_offline")
class PbKD(Method):
    """PbKD, alternating per micro-batch (k samples per input drawn first):
      reward step: AdamW ascent on  mean r(x, y_teacher) - mean r(x, y_student)
                   + eta * mean_pairs log sigmoid(r(x, y_w) - r(x, y_l)) - reward_l2 * (mean r_teacher^2 + mean r_student^2);
      policy step: RLOO on the samples: z-score their rewards over the micro-batch, subtract from each the
                   mean of the other samples of its input; loss terms per token
                   policy  -A (log q(y_t|s_t) - its detached value) - r: value -r(x, y), gradient REINFORCE;
                   kl      kl_weight * KL(q || q_init)(s_t), exact over the vocabulary.
    Pairs: the teacher's output over each sample of the same input, added at each round's first step;
    round r starts at step floor(r * steps / rounds). At each round's last step, the confidence-set
    record (one JSON line in the run's log, see preference.PreferenceRounds) compares the reward's mean
    log-likelihood on all pairs with a copy fitted to them by maximum likelihood alone (ml_fit_start).
    The learned reward for the evaluator is r(x, y).

    RECONSTRUCTED (neither the paper's full text nor code was available), each with its switch: the
    Lagrangian form with a fixed eta [preference_weight]; the reward model's form (the student's
    architecture and initialisation, a zero scalar head after the last token) and its own optimiser
    [reward_steps, reward_lr, reward_weight_decay]; the squared-reward penalty [reward_l2]; RLOO with
    per-batch z-scored rewards [num_samples]; the KL to the initial student [kl_weight]; teacher-preferred
    pairs from the step's samples at each round's start [rounds, pair_batch_size]; the record's fit
    [ml_fit_steps, ml_fit_lr, ml_fit_start, confidence_slack]; on embedded tasks the pairs may be labelled
    by the task's oracle instead of the teacher [preference_labels]. Samples are drawn at the
    experiment's sampling temperature.
    """

    Config = PbKDConfig
    paper = PAPER

    @classmethod
    def needs_teacher(cls, config) -> bool:
        return False  # black-box: the teacher's outputs are SeqKD's cached ones

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return True

    @classmethod
    def needs_oracle(cls, config) -> bool:
        return config.preference_labels == "oracle"

    @classmethod
    def learned_reward(cls, model_dir, config, student):
        return load_learned_reward(model_dir, student)

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        student = ctx.student
        self.reward_model = RewardModel(copy.deepcopy(student.model), student.tokenizer).to(ctx.device)
        self._initial_reward = copy.deepcopy(self.reward_model.state_dict())
        self.reference = None
        if config.kl_weight > 0:
            self.reference = Seq2SeqLM(copy.deepcopy(student.model), student.tokenizer)
            self.reference.model.eval().requires_grad_(False)
        self.rounds = PreferenceRounds(getattr(config, "rounds", 1), ctx.total_steps)
        self._optimizer, self._step, self._micro = None, -1, 0

    def trainable_modules(self):
        # Saved and restored by the core; trained only by the reward step's own optimiser (the policy loss
        # leaves its gradients empty, so the core's optimiser skips it).
        return {REWARD_NAME: self.reward_model}

    def reward(self, batch: Batch) -> torch.Tensor:
        with self.ctx.autocast():
            return self.reward_model(batch).float()

    def reward_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self.reward_model.parameters(), lr=self.config.reward_lr,
                                                weight_decay=self.config.reward_weight_decay)
        return self._optimizer

    def sequences(self, examples, step):
        if step != self._step:
            self._step, self._micro = step, 0
        micro, self._micro = self._micro, self._micro + 1
        teacher = examples.teacher_output
        samples = self.ctx.sample_student(teacher, num_samples=self.config.num_samples)
        if self.rounds.starts_round(step):
            labels = oracle_labels(self.ctx, self.config, examples, samples, self.config.num_samples)
            self.rounds.add(teacher, samples, labels)
        self.update_reward(teacher, samples, f"preference_pairs/{step}/{micro}")
        index = self.rounds.ends_round(step)
        if index is not None and micro == 0 and self.config.ml_fit_steps > 0:
            self.record_confidence(index, step)
        with torch.no_grad(), eval_mode(self.reward_model):
            rewards = self.reward(samples)
        advantages = rloo_advantages(zscore(rewards), self.config.num_samples)
        return PolicyRollout(samples.prompt_ids, samples.prompt_mask, samples.target_ids, samples.target_mask,
                             rewards=rewards, advantages=advantages)

    def update_reward(self, teacher: Batch, samples: Batch, stream: str) -> None:
        cfg = self.config
        pairs = None
        if cfg.preference_weight > 0 and self.rounds.pairs:
            pairs = self.rounds.minibatch(self.ctx, cfg.pair_batch_size, stream)
        optimizer = self.reward_optimizer()
        for _ in range(cfg.reward_steps):
            r_teacher, r_student = self.reward(teacher), self.reward(samples)
            objective = r_teacher.mean() - r_student.mean() - cfg.reward_l2 * (r_teacher.pow(2).mean() + r_student.pow(2).mean())
            if pairs is not None:
                objective = objective + cfg.preference_weight * bradley_terry_loglik(*map(self.reward, pairs)).mean()
            optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def record_confidence(self, index: int, step: int) -> None:
        preferred, rejected = self.rounds.batches(self.ctx)
        with torch.no_grad(), eval_mode(self.reward_model):
            loglik = float(bradley_terry_loglik(self.reward(preferred), self.reward(rejected)).mean())
        fitted = RewardModel(copy.deepcopy(self.reward_model.trunk), self.ctx.student.tokenizer).to(self.ctx.device)
        fitted.load_state_dict(self._initial_reward if self.config.ml_fit_start == "initial"
                               else self.reward_model.state_dict())
        with eval_mode(fitted), self.ctx.autocast():
            ml_loglik = fit_bradley_terry(fitted.parameters(), lambda: (fitted(preferred).float(), fitted(rejected).float()),
                                          steps=self.config.ml_fit_steps, lr=self.config.ml_fit_lr)
        self.rounds.record(index, step, loglik, ml_loglik, self.config.confidence_slack)

    def loss(self, batch: PolicyRollout):
        logits = self.ctx.student_logits(batch)  # (B, T, V), with gradient
        log_q = token_logprobs(logits, batch.target_ids)
        advantage, reward = batch.advantages[:, None], batch.rewards[:, None]
        terms = {"policy": -reward.expand_as(log_q) - advantage * (log_q - log_q.detach())}
        if self.reference is not None:
            with torch.no_grad(), self.ctx.autocast():
                reference = self.reference.target_logits(batch)
            terms["kl"] = self.config.kl_weight * reverse_kl(logits, reference)
        return terms

    def state_dict(self):
        state = {"rounds": self.rounds.state_dict()}
        if self._optimizer is not None:
            state["reward_optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state):
        self.rounds.load_state_dict(state["rounds"])
        if "reward_optimizer" in state:
            self.reward_optimizer().load_state_dict(state["reward_optimizer"])


@register("pbkd_online")
class PbKDOnline(PbKD):
    """Online PbKD: PbKD (see pbkd_offline) whose pairs grow in `rounds` rounds, each adding the teacher's
    outputs over the current student's samples at its first step. rounds 1 is pbkd_offline exactly."""

    Config = PbKDOnlineConfig

    @classmethod
    def check_training(cls, config, training, where):
        if config.rounds > training.steps:
            raise ConfigError(f"{where}.steps: {training.steps} steps cannot hold {config.rounds} preference rounds "
                              "(rounds must be at most the steps)")


def load_learned_reward(model_dir, student: Seq2SeqLM):
    """r(x, y) of a PbKD checkpoint (reward_model.pt beside it), for each row of a batch (B,)."""
    path = Path(model_dir) / f"{REWARD_NAME}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: a PbKD checkpoint must hold its reward model; was it trained with PbKD?")
    reward_model = RewardModel(copy.deepcopy(student.model), student.tokenizer)
    reward_model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    reward_model.to(next(student.model.parameters()).device).eval()

    @torch.no_grad()
    def reward(batch: Batch) -> torch.Tensor:
        return reward_model(batch)

    return reward
