"""MM-PbKD (Jia, arXiv 2505.18952), reconstructed: PbKD's reward through a Q-function with the teacher's value.

With Q = f, the AMM adversary, and V(s) = E_p Q(s) (the teacher's next-token probabilities, white-box),
the reward r(s_t, y_t) = Q(s_t, y_t) - V(s_{t+1}) (V = 0 after the output's last token) telescopes to
    R(x, y) = V(s_0) + sum_t A(s_t, y_t),   A = Q - V, the teacher-relative advantage,
so J(teacher, r) = V(s_0) and the performance gap J(teacher, r) - J(student, r) is AMM's on-policy term;
in a Bradley-Terry likelihood of two outputs of one input V(s_0) cancels, and the preference compares
sums of advantages. MM-PbKD is AMM with eta times that log-likelihood in the adversary's objective.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from xkdbench.methods.amm import ADVERSARY_NAME, AMM, AMMConfig, MomentAdversary, probabilities
from xkdbench.methods.base import Paper, register
from xkdbench.methods.preference import (
    PreferenceRounds,
    PreferenceSettings,
    bradley_terry_loglik,
    fit_bradley_terry,
    oracle_labels,
)
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import eval_mode
from xkdbench.validation import ConfigError, check_range


def advantage_sums(f: torch.Tensor, teacher_probs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """sum_t [Q(s_t, y_t) - E_p Q(s_t)] over each row's valid tokens (B,); f, probs (B, T, V)."""
    taken = f.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    return ((taken - (teacher_probs * f).sum(-1)) * batch.target_mask).sum(1)


def sequence_rewards(f: torch.Tensor, teacher_probs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """R(x, y) = sum_t [Q(s_t, y_t) - V(s_{t+1})], V(s) = E_p Q(s) and 0 after the last token (B,)."""
    mask = batch.target_mask.float()
    taken = f.gather(-1, batch.target_ids.unsqueeze(-1)).squeeze(-1)
    value = (teacher_probs * f).sum(-1)
    next_value = torch.zeros_like(value)
    next_value[:, :-1] = value[:, 1:] * mask[:, 1:]
    return ((taken - next_value) * mask).sum(1)


@dataclass
class MMPbKDConfig(AMMConfig, PreferenceSettings):
    """AMM's settings (on_policy_weight beta, adversary_*, num_samples, moment_estimate, policy_gradient; the
    adversary must be `learned`) and PbKD's preference settings (preference_weight eta, pair_batch_size,
    ml_fit_steps, ml_fit_lr, ml_fit_start, confidence_slack; see preference.PreferenceSettings), plus
    rounds: preference rounds spread evenly over the run (1: offline, pairs from the initial student only).
    The pairs' rejected outputs are the on-policy samples, so eta > 0 needs beta > 0."""

    rounds: int = 4

    def validate(self, where: str) -> None:
        AMMConfig.validate(self, where)
        PreferenceSettings.validate(self, where)
        check_range(f"{where}.rounds", self.rounds, 1)
        if self.adversary != "learned":
            raise ConfigError(f"{where}.adversary: {self.adversary!r} is not allowed; allowed: 'learned' (the "
                              "preference term trains the adversary)")
        if self.preference_weight > 0 and self.on_policy_weight == 0:
            raise ConfigError(f"{where}.on_policy_weight: 0 is not allowed with preference_weight > 0; allowed: "
                              "(0, 1] (the pairs' rejected outputs are the on-policy samples)")


@register("mm_pbkd")
class MMPbKD(AMM):
    """MM-PbKD: AMM's loop (see AMM) with, in each adversary step, eta * mean log sigmoid(sum A(y_w) - sum A(y_l))
    over a minibatch of teacher-preferred pairs, collected in rounds as in PbKD (the step's teacher outputs
    against its on-policy samples). At each round's last step the confidence-set record compares the
    adversary's log-likelihood on all pairs with that of a copy fitted by maximum likelihood alone
    (ml_fit_start; preference.PreferenceRounds.record: one JSON line in the run's log).
    The learned reward is R(x, y) above, computed with the teacher the run was trained with.

    RECONSTRUCTED, beyond AMM's: the preference term in the adversary's step only (the student's loss is
    AMM's) [preference_weight]; the pairs and rounds [rounds, pair_batch_size]; the record's fit
    [ml_fit_steps, ml_fit_lr, ml_fit_start, confidence_slack]; oracle-labelled pairs on embedded tasks
    [preference_labels]. With preference_weight 0 it
    collects no pairs and is AMM exactly.
    """

    Config = MMPbKDConfig
    paper = Paper("Online Knowledge Distillation with Reward Guidance (MM-PbKD, reconstructed)", "2505.18952",
                  reconstructed=True)

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return True

    @classmethod
    def needs_oracle(cls, config) -> bool:
        return config.preference_weight > 0 and config.preference_labels == "oracle"

    @classmethod
    def check_training(cls, config, training, where):
        if config.rounds > training.steps:
            raise ConfigError(f"{where}.steps: {training.steps} steps cannot hold {config.rounds} preference rounds "
                              "(rounds must be at most the steps)")

    @classmethod
    def learned_reward(cls, model_dir, config, student):
        return load_learned_reward(model_dir, config, student)

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.rounds = PreferenceRounds(config.rounds, ctx.total_steps) if config.preference_weight > 0 else None
        self._initial = {name: p.detach().clone() for name, p in self.adversary.named_parameters()}

    def collect(self, examples, rollout, step):
        if self.rounds is not None and self.rounds.starts_round(step):
            on = rollout.on_policy
            samples = Batch(*(t[on] for t in (rollout.prompt_ids, rollout.prompt_mask, rollout.target_ids,
                                                rollout.target_mask)))
            self.rounds.add(examples.teacher_output, samples,
                            oracle_labels(self.ctx, self.config, examples, samples, self.config.num_samples))

    def pair_view(self, preferred: Batch, rejected: Batch):
        """The teacher's probabilities and hidden states on both sides of the pairs (no gradient)."""
        views = []
        for batch in (preferred, rejected):
            logits, hidden = self.ctx.teacher_logits(batch, with_hidden=True)
            views.append((batch, probabilities(logits), hidden))
        return views

    def pair_scores(self, adversary: MomentAdversary, views) -> tuple[torch.Tensor, torch.Tensor]:
        unembedding = self.unembedding()
        return tuple(advantage_sums(adversary(hidden, unembedding), probs, batch) for batch, probs, hidden in views)

    def preference_objective(self, step, micro):
        if self.rounds is None or not self.rounds.pairs:
            return None
        views = self.pair_view(*self.rounds.minibatch(self.ctx, self.config.pair_batch_size,
                                                       f"preference_pairs/{step}/{micro}"))
        eta = self.config.preference_weight
        return lambda: eta * bradley_terry_loglik(*self.pair_scores(self.adversary, views)).mean()

    def after_update(self, step, micro):
        index = self.rounds.ends_round(step) if self.rounds is not None else None
        if index is None or micro > 0 or self.config.ml_fit_steps == 0:
            return
        views = self.pair_view(*self.rounds.batches(self.ctx))
        with torch.no_grad():
            loglik = float(bradley_terry_loglik(*self.pair_scores(self.adversary, views)).mean())
        fitted = copy.deepcopy(self.adversary)
        if self.config.ml_fit_start == "initial":
            with torch.no_grad():
                for name, p in fitted.named_parameters():
                    p.copy_(self._initial[name])
        ml_loglik = fit_bradley_terry(fitted.parameters(), lambda: self.pair_scores(fitted, views),
                                      steps=self.config.ml_fit_steps, lr=self.config.ml_fit_lr)
        self.rounds.record(index, step, loglik, ml_loglik, self.config.confidence_slack)

    def state_dict(self):
        state = super().state_dict()
        if self.rounds is not None:
            state["rounds"] = self.rounds.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.rounds is not None:
            self.rounds.load_state_dict(state["rounds"])


def load_learned_reward(model_dir, config, student):
    """R(x, y) of an MM-PbKD checkpoint: its adversary (moment_adversary.pt) and the teacher it was trained with."""
    from xkdbench.models import load_model

    path = Path(model_dir) / f"{ADVERSARY_NAME}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: an MM-PbKD checkpoint must hold its adversary; was it trained with MM-PbKD?")
    state = torch.load(path, map_location="cpu", weights_only=True)
    teacher_path = state["_extra_state"]["teacher"]
    if not teacher_path:
        raise FileNotFoundError(f"{path}: the learned reward needs the teacher the run was trained with, and the run's "
                                "teacher was not loaded from a checkpoint directory")
    device = next(student.model.parameters()).device
    teacher = load_model(teacher_path)
    teacher.model.to(device).eval()
    with torch.random.fork_rng(devices=[]):  # its random initialisation is overwritten: draw outside the run's stream
        adversary = MomentAdversary(*state["down"].shape, teacher_path)
    adversary.load_state_dict(state)
    adversary.to(device).eval()
    unembedding = teacher.model.get_output_embeddings().weight.detach()

    @torch.no_grad()
    def reward(batch: Batch) -> torch.Tensor:
        with eval_mode(teacher.model):
            logits, hidden = teacher.target_logits(batch, with_hidden=True)
        return sequence_rewards(adversary(hidden, unembedding), probabilities(logits), batch)

    return reward
