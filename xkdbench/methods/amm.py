"""AMM (Jia, NeurIPS 2024, arXiv 2406.02959), reconstructed: adversarial moment matching of action values.

Token MDP: state s_t = (x, y_<t), action y_t. An adversary f(s, .) in [-1, 1]^V (a bounded Q-function)
estimates the moment-matching distance between teacher p and student q; the student minimises it:
    off-policy, on the teacher's outputs y:  d_off = mean_t [ f(s_t, y_t) - E_q f(s_t) ]
    on-policy, on the student's samples y:   d_on  = mean_t [ E_p f(s_t) - f(s_t, y_t) ]
    L = beta d_on + (1 - beta) d_off,        E_pi f(s) = sum_a pi(a|s) f(s, a).
With an unrestricted adversary the maximiser is f = sign(p - q) and each state's gap E_p f - E_q f is
sum_a |p - q| = 2 x total variation (the `closed_form` ablation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from xkdbench.methods.base import FIXED, SAMPLED, Method, Paper, register
from xkdbench.methods.minillm import token_logprobs
from xkdbench.methods.preference import stack_batches
from xkdbench.models.batch import Batch
from xkdbench.validation import check_choice, check_range

ADVERSARIES = ("learned", "closed_form")
MOMENT_ESTIMATES = ("sampled", "exact")
COSTS_TO_GO = ("mean", "sum")
ADVERSARY_NAME = "moment_adversary"  # saved beside the checkpoint as moment_adversary.pt


@dataclass
class AMMConfig:
    """on_policy_weight: beta, the weight of the on-policy distance d_on (1 - beta weighs d_off).
    adversary: `learned` (tanh(E U h), see MomentAdversary) or `closed_form` (f = sign(p - q), the
      unrestricted maximiser: the distance is 2 x stepwise total variation).
    adversary_steps: K, the adversary's gradient-ascent steps per micro-batch (per student step when
      training.grad_accum is 1).
    adversary_lr, adversary_weight_decay: the adversary's own AdamW (constant learning rate). 0.03 is 10x
      the default study's distillation learning rate (the context does not tell a method the student's).
    adversary_rank: r, the rank of U.
    num_samples: on-policy samples per input.
    moment_estimate: `sampled` (the formulas above: f at the data token) or `exact` (E_p f(s) - E_q f(s) at
      every state of both parts). The student's gradient is the same; the adversary's objective, the
      logged terms and the cost-to-go differ.
    policy_gradient: the REINFORCE part of d_on's gradient (the states' dependence on the student);
      false keeps the per-state part only, as GKD's on-policy loss does.
    cost_to_go: what REINFORCE weighs log q(y_t|s_t) by: `mean` (default), the mean of the row's moment gaps
      after t (MiniLLM's length-normalised return), or `sum`, their sum: the exact gradient of the token
      sum, which on the default study drove the student to stop at once (stopping ends the costs)."""

    on_policy_weight: float = 0.5
    adversary: str = "learned"
    adversary_steps: int = 1
    adversary_lr: float = 0.03
    adversary_weight_decay: float = 0.01
    adversary_rank: int = 16
    num_samples: int = 1
    moment_estimate: str = "sampled"
    policy_gradient: bool = True
    cost_to_go: str = "mean"

    def validate(self, where: str) -> None:
        check_range(f"{where}.on_policy_weight", self.on_policy_weight, 0, 1)
        check_choice(f"{where}.adversary", self.adversary, ADVERSARIES)
        check_range(f"{where}.adversary_steps", self.adversary_steps, 1)
        check_range(f"{where}.adversary_lr", self.adversary_lr, 0, low_open=True)
        check_range(f"{where}.adversary_weight_decay", self.adversary_weight_decay, 0)
        check_range(f"{where}.adversary_rank", self.adversary_rank, 1)
        check_range(f"{where}.num_samples", self.num_samples, 1)
        check_choice(f"{where}.moment_estimate", self.moment_estimate, MOMENT_ESTIMATES)
        check_choice(f"{where}.cost_to_go", self.cost_to_go, COSTS_TO_GO)


class MomentAdversary(torch.nn.Module):
    """f(s, .) = tanh(E U h(s)) in [-1, 1]^V: h the teacher's last hidden state (H), E its frozen unembedding
    (V, H), U = down @ up a rank-r map. `up` starts at zero, so f = 0 at the start, and `down` is random
    (were both zero, neither would ever get a gradient). The teacher's path is kept for the learned reward."""

    def __init__(self, hidden_size: int, rank: int, teacher_path: str = ""):
        super().__init__()
        self.down = torch.nn.Parameter(torch.randn(hidden_size, rank) / math.sqrt(hidden_size))
        self.up = torch.nn.Parameter(torch.zeros(rank, hidden_size))
        self.teacher_path = teacher_path

    def forward(self, hidden: torch.Tensor, unembedding: torch.Tensor) -> torch.Tensor:
        return torch.tanh((hidden.float() @ self.down) @ (self.up @ unembedding.float().T))  # (B, T, V)

    def get_extra_state(self):
        return {"teacher": self.teacher_path}

    def set_extra_state(self, state) -> None:
        self.teacher_path = state["teacher"]


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax in fp32 by the divergences' arithmetic (exp of log_softmax), so p = q ties agree with theirs."""
    return torch.log_softmax(logits.float(), dim=-1).exp()


def closed_form_adversary(teacher_probs: torch.Tensor, student_probs: torch.Tensor) -> torch.Tensor:
    return torch.sign(teacher_probs - student_probs)


def moment_gaps(f, teacher_probs, student_probs, target_ids, on_policy, estimate: str) -> torch.Tensor:
    """Per-token moment gap (R, T): off-policy rows f(s, y) - E_q f(s), on-policy rows E_p f(s) - f(s, y)
    (`sampled`), or E_p f(s) - E_q f(s) on every row (`exact`). f, probs (R, T, V); on_policy (R,) bool."""
    expected_teacher = (teacher_probs * f).sum(-1)
    expected_student = (student_probs * f).sum(-1)
    if estimate == "exact":
        return expected_teacher - expected_student
    taken = f.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return torch.where(on_policy[:, None], expected_teacher - taken, taken - expected_student)


def cost_to_go(costs: torch.Tensor, mask: torch.Tensor, form: str = "sum") -> torch.Tensor:
    """sum_{t' > t} costs_t' over the valid tokens of each row (B, T), or (`mean`) that sum divided by the
    number of its terms (0 at the last token)."""
    c, m = costs * mask, mask.float()
    future = c.flip(1).cumsum(1).flip(1) - c
    if form == "sum":
        return future
    count = m.flip(1).cumsum(1).flip(1) - m
    return torch.where(count > 0, future / count.clamp(min=1), torch.zeros_like(future))


def position_baseline(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """At each position, the mean of `values` over the rows valid there (B, T)."""
    m = mask.float()
    return ((values * m).sum(0) / m.sum(0).clamp(min=1)).expand_as(values)


def student_terms(logits, teacher_probs, f, target_ids, target_mask, on_policy, estimate: str, future_form: str = "sum"):
    """The student's per-token terms (R, T) for a fixed adversary f (no gradient) and teacher probabilities:
      per_state  value: the moment gap; gradient: -d E_q f(s_t), the exact per-state part (both parts);
      pg         value 0; gradient: (G_t - b_t) d log q(y_t|s_t) on the on-policy rows, the REINFORCE part,
                 G_t = sum (`future_form` sum) or mean (`mean`) of the row's moment gaps after t (the
                 cost-to-go), b_t its mean at position t over the on-policy rows of the batch.
    With the sum, their gradient is that of sum_t gap_t: per state for the off-policy rows, and for the
    on-policy rows the gradient of E_{y ~ q}[sum_t gap_t] (the policy-gradient theorem with MiniLLM's
    single-step split). The mean is MiniLLM's length normalisation of the same estimator."""
    student_probs = probabilities(logits)
    gap = moment_gaps(f, teacher_probs, student_probs.detach(), target_ids, on_policy, estimate)  # no gradient
    expected_student = (student_probs * f).sum(-1)
    per_state = gap + (expected_student.detach() - expected_student)
    valid = target_mask.bool() & on_policy[:, None]
    future = cost_to_go(gap, valid, future_form)
    advantage = future - position_baseline(future, valid)
    log_q = token_logprobs(logits, target_ids)
    pg = torch.where(valid, advantage * (log_q - log_q.detach()), torch.zeros_like(log_q))
    return per_state, pg


@dataclass
class MomentRollout(Batch):
    """Off-policy rows (the teacher's outputs) then on-policy rows (student samples), with the teacher's view."""

    on_policy: torch.Tensor | None = None  # (R,) bool
    teacher_logits: torch.Tensor | None = None  # (R, T, V)
    teacher_hidden: torch.Tensor | None = None  # (R, T, H), learned adversary only
    step_tokens: dict | None = None  # target tokens of each part over the optimiser step, shared


@register("amm")
class AMM(Method):
    """AMM: the adversary ascends L (K AdamW steps per micro-batch, before the student's step, on the same
    rows), the student descends it. Per token, loss terms (see `student_terms`)
      moment_off  (1 - beta) x the off-policy gaps; gradient through E_q f(s), an exact vocabulary sum;
      moment_on   beta x the on-policy gaps; gradient through -E_q f(s), the exact per-state part;
      moment_pg   value 0; gradient beta (G_t - b_t) d log q(y_t|s_t), the REINFORCE part.
    The logged loss is the step's estimate of L: each part is a mean over its own target tokens of the
    optimiser step (the core divides by all N of them, so a part's tokens carry (its weight) N / N_part).
    With the closed form and beta 0 the per-token loss is 2 x GKD's total variation on the teacher's
    outputs; with beta 1 and no policy gradient, 2 x on-policy GKD with total variation.

    RECONSTRUCTED (neither the paper's full text nor code was available), each with its switch:
    - the adversary's form tanh(E U h), low rank, U = 0 at the start [adversary, adversary_rank];
    - its optimiser: AdamW at a fixed learning rate with weight decay, K steps per micro-batch, updated
      before the student on the student's current probabilities [adversary_lr, adversary_weight_decay,
      adversary_steps];
    - which moment estimates [moment_estimate]; the REINFORCE part with the future moment gaps as
      cost-to-go, length-normalised, and a per-position batch-mean baseline [policy_gradient, cost_to_go];
      samples per input [num_samples];
    - the off-policy data are SeqKD's cached teacher outputs (greedy by default), the samples are drawn
      at the experiment's sampling temperature (1 by default, which REINFORCE assumes).
    """

    Config = AMMConfig
    paper = Paper("Adversarial Moment-Matching Distillation of Large Language Models (reconstructed)",
                  "2406.02959", "NeurIPS 2024", reconstructed=True)

    @classmethod
    def uses_teacher_outputs(cls, config) -> bool:
        return config.on_policy_weight < 1

    @classmethod
    def teacher_sequences(cls, config):
        if config.adversary == "learned":  # the teacher's hidden states come from the live teacher only
            return frozenset({FIXED, SAMPLED})
        beta = config.on_policy_weight
        return frozenset({FIXED} if beta < 1 else set()) | frozenset({SAMPLED} if beta > 0 else set())

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.adversary, self._optimizer = None, None
        if config.adversary == "learned":
            hidden_size = ctx.teacher.model.get_output_embeddings().weight.shape[1]
            teacher_path = ctx.teacher.model.name_or_path  # a directory (kept absolute) or a hub id; "" if built here
            if teacher_path and Path(teacher_path).exists():
                teacher_path = str(Path(teacher_path).resolve())
            self.adversary = MomentAdversary(hidden_size, config.adversary_rank, teacher_path).to(ctx.device)
        self._step, self._micro, self._tokens = -1, 0, {}

    def trainable_modules(self):
        # Saved and restored by the core; trained only by the adversary's own optimiser (the student's loss
        # leaves its gradients empty, so the core's optimiser skips it).
        return {ADVERSARY_NAME: self.adversary} if self.adversary is not None else {}

    def unembedding(self) -> torch.Tensor:
        return self.ctx.teacher.model.get_output_embeddings().weight.detach()  # (V, H)

    def adversary_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self.adversary.parameters(), lr=self.config.adversary_lr,
                                                weight_decay=self.config.adversary_weight_decay)
        return self._optimizer

    def sequences(self, examples, step):
        if step != self._step:
            self._step, self._micro, self._tokens = step, 0, {"off": 0, "on": 0}
        micro, self._micro = self._micro, self._micro + 1
        rollout = self.rollout(examples)
        self.collect(examples, rollout, step)
        if self.adversary is not None:
            self.update_adversary(rollout, self.preference_objective(step, micro))
        self.after_update(step, micro)
        return rollout

    def rollout(self, examples) -> MomentRollout:
        ctx, beta = self.ctx, self.config.on_policy_weight
        off = [examples.teacher_output] if beta < 1 else []
        prompts = examples.teacher_output if beta < 1 else examples.gold
        on = [ctx.sample_student(prompts, num_samples=self.config.num_samples)] if beta > 0 else []
        batch = stack_batches(off + on, ctx.student.pad_id)
        rows = [False] * sum(b.size for b in off) + [True] * sum(b.size for b in on)
        on_policy = torch.tensor(rows, dtype=torch.bool, device=batch.target_ids.device)
        for name, part in (("off", off), ("on", on)):
            for b in part:
                self._tokens[name] = self._tokens.get(name, 0) + b.target_mask.sum()
        hidden = None
        if self.adversary is None:
            logits = ctx.teacher_logits(batch)
        else:
            logits, hidden = ctx.teacher_logits(batch, with_hidden=True)
        return MomentRollout(batch.prompt_ids, batch.prompt_mask, batch.target_ids, batch.target_mask,
                             on_policy=on_policy, teacher_logits=logits, teacher_hidden=hidden, step_tokens=self._tokens)

    # hooks MM-PbKD fills in: pairs from the rollout, a preference term for the adversary, a record
    def collect(self, examples, rollout: MomentRollout, step: int) -> None:
        pass

    def preference_objective(self, step: int, micro: int):
        return None

    def after_update(self, step: int, micro: int) -> None:
        pass

    def update_adversary(self, rollout: MomentRollout, preference=None) -> None:
        """K ascent steps on this micro-batch's L (its own token means), plus the preference term if any."""
        cfg, beta = self.config, self.config.on_policy_weight
        with torch.no_grad():
            student_probs = probabilities(self.ctx.student_logits(rollout))
        teacher_probs = probabilities(rollout.teacher_logits)
        mask = rollout.target_mask.float()
        on_tokens, off_tokens = mask * rollout.on_policy[:, None], mask * ~rollout.on_policy[:, None]
        optimizer = self.adversary_optimizer()
        for _ in range(cfg.adversary_steps):
            f = self.adversary(rollout.teacher_hidden, self.unembedding())
            gap = moment_gaps(f, teacher_probs, student_probs, rollout.target_ids, rollout.on_policy,
                              cfg.moment_estimate)
            objective = 0.0
            if beta > 0:
                objective = objective + beta * (gap * on_tokens).sum() / on_tokens.sum().clamp(min=1)
            if beta < 1:
                objective = objective + (1 - beta) * (gap * off_tokens).sum() / off_tokens.sum().clamp(min=1)
            if preference is not None:
                objective = objective + preference()
            optimizer.zero_grad(set_to_none=True)
            (-objective).backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def loss(self, batch: MomentRollout):
        cfg, beta = self.config, self.config.on_policy_weight
        logits = self.ctx.student_logits(batch)  # (R, T, V), with gradient
        teacher_probs = probabilities(batch.teacher_logits)
        with torch.no_grad():
            if self.adversary is None:
                f = closed_form_adversary(teacher_probs, probabilities(logits))
            else:
                f = self.adversary(batch.teacher_hidden, self.unembedding())
        per_state, pg = student_terms(logits, teacher_probs, f, batch.target_ids, batch.target_mask, batch.on_policy,
                                      cfg.moment_estimate, cfg.cost_to_go)
        tokens = batch.step_tokens
        total, on = tokens.get("off", 0) + tokens.get("on", 0), batch.on_policy[:, None]
        terms = {}
        if beta < 1:
            weight = (1 - beta) * total / tokens["off"]
            terms["moment_off"] = torch.where(on, torch.zeros_like(per_state), weight * per_state)
        if beta > 0:
            weight = beta * total / tokens["on"]
            terms["moment_on"] = torch.where(on, weight * per_state, torch.zeros_like(per_state))
            if cfg.policy_gradient:
                terms["moment_pg"] = weight * pg
        return terms

    def state_dict(self):
        return {"adversary_optimizer": self._optimizer.state_dict()} if self._optimizer is not None else {}

    def load_state_dict(self, state):
        if "adversary_optimizer" in state:
            self.adversary_optimizer().load_state_dict(state["adversary_optimizer"])

