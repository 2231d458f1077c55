"""Preference pieces PbKD and MM-PbKD share: Bradley-Terry, RLOO, the pair store with its rounds, and
the confidence-set record.

PbKD (Jia, arXiv 2505.18952) restricts its reward model to a confidence set: the reward models whose
Bradley-Terry log-likelihood on the preference pairs is within a slack zeta of the best one. Both
methods solve the Lagrangian form (eta times the log-likelihood in the reward's objective) and record,
at the end of every round, how far the reward's log-likelihood lies below that of a reward model
fitted separately by maximum likelihood on the same pairs (see PreferenceSettings.ml_fit_start).

Pairs are teacher-preferred by default: for an input x, the teacher's output is preferred over each of
the student's samples. With `preference_labels: oracle` (embedded tasks) the task's oracle decides
each pair instead: the output with the higher oracle score is preferred, whichever model wrote it,
and a tie (both right, or both wrong) carries no preference and adds no pair. A round adds the pairs
of one optimiser step (its inputs, the teacher's cached outputs, the student's samples of that step);
round r starts at step floor(r * steps / rounds), so one round is offline PbKD (pairs from the initial
student only).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xkdbench.models.batch import Batch
from xkdbench.validation import check_choice, check_range

PREFERENCE_LABELS = ("teacher", "oracle")
FIT_STARTS = ("current", "initial")


def bradley_terry_loglik(preferred: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """log P(preferred > rejected) = log sigmoid(r_w - r_l), per pair."""
    return F.logsigmoid(preferred - rejected)


def zscore(values: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all values (population std)."""
    return (values - values.mean()) / (values.std(unbiased=False) + eps)


def rloo_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """REINFORCE leave-one-out: each of the `group` consecutive samples of an input minus the mean of the
    other samples of that input. rewards (N,) with N a multiple of group >= 2."""
    r = rewards.view(-1, group)
    others = (r.sum(dim=1, keepdim=True) - r) / (group - 1)
    return (r - others).view(-1)


def fit_bradley_terry(parameters: Iterable[torch.nn.Parameter], scores: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                      *, steps: int, lr: float) -> float:
    """Maximum likelihood by full-batch Adam: `steps` steps on -mean log sigmoid(r_w - r_l), where
    scores() gives (r_w, r_l) of every pair under the parameters. Returns the final mean log-likelihood."""
    optimizer = torch.optim.Adam(list(parameters), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        (-bradley_terry_loglik(*scores()).mean()).backward()
        optimizer.step()
    with torch.no_grad():
        return float(bradley_terry_loglik(*scores()).mean())


def unpadded_rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[keep.bool()].tolist() for row, keep in zip(ids.cpu(), mask.cpu(), strict=True)]


def stack_batches(batches: list[Batch], pad_id: int) -> Batch:
    """The rows of several batches as one: prompts left-padded, targets right-padded to the widest."""
    if len(batches) == 1:
        return batches[0]
    prompt_width = max(b.prompt_ids.shape[1] for b in batches)
    target_width = max(b.target_ids.shape[1] for b in batches)

    def cat(name: str, width: int, left: bool, value: int) -> torch.Tensor:
        pads = [(width - getattr(b, name).shape[1], 0) if left else (0, width - getattr(b, name).shape[1])
                for b in batches]
        return torch.cat([F.pad(getattr(b, name), pad, value=value) for b, pad in zip(batches, pads, strict=True)])

    return Batch(cat("prompt_ids", prompt_width, True, pad_id), cat("prompt_mask", prompt_width, True, 0),
                 cat("target_ids", target_width, False, pad_id), cat("target_mask", target_width, False, 0))


@dataclass
class PreferenceSettings:
    """preference_weight: eta, the Lagrange multiplier of the confidence set: the weight of the pairs'
      Bradley-Terry log-likelihood in the reward's (MM-PbKD: the adversary's) objective. 0 drops it.
    preference_labels: who prefers: `teacher` (the teacher's output over the student's sample) or
      `oracle` (the embedded task's oracle score: the higher-scoring output of the two; ties add no pair).
    pair_batch_size: pairs drawn (without replacement, from the run's seeded streams) for the
      log-likelihood term of each reward update; all pairs when there are fewer.
    ml_fit_steps, ml_fit_lr, ml_fit_start: the separate maximum-likelihood fit of the confidence-set record:
      full-batch Adam on every pair collected so far, from a copy of the current reward (`current`) or of
      its initialisation (`initial`). 0 steps: no record. From the initialisation, 10 steps fell short of
      the reward's own likelihood on the default study (a negative gap says nothing); from the current
      reward the fit measures the likelihood the reward gives up for the gap term, a lower bound of the
      gap to the best reward.
    confidence_slack: zeta, the slack of the confidence set, in nats per pair; the record says whether
      the reward's log-likelihood gap to the maximum-likelihood fit stayed within it.
    """

    preference_weight: float = 1.0
    preference_labels: str = "teacher"
    pair_batch_size: int = 16
    ml_fit_steps: int = 10
    ml_fit_lr: float = 0.01
    ml_fit_start: str = "current"
    confidence_slack: float = 0.1

    def validate(self, where: str) -> None:
        check_range(f"{where}.preference_weight", self.preference_weight, 0)
        check_choice(f"{where}.preference_labels", self.preference_labels, PREFERENCE_LABELS)
        check_range(f"{where}.pair_batch_size", self.pair_batch_size, 1)
        check_range(f"{where}.ml_fit_steps", self.ml_fit_steps, 0)
        check_range(f"{where}.ml_fit_lr", self.ml_fit_lr, 0, low_open=True)
        check_choice(f"{where}.ml_fit_start", self.ml_fit_start, FIT_STARTS)
        check_range(f"{where}.confidence_slack", self.confidence_slack, 0)


class PreferenceRounds:
    """The pairs collected so far, when rounds start and end, and the confidence-set record per round.

    Pairs are kept as unpadded token-id lists (prompt, preferred target, rejected target), so they
    collate into batches of any width and go into checkpoints as plain lists."""

    def __init__(self, rounds: int, total_steps: int | None):
        if total_steps is None and rounds > 1:
            raise ValueError("online rounds are spread over the run's steps; the context has no total_steps")
        self.starts = sorted({r * (total_steps or 1) // rounds for r in range(rounds)})
        self.ends = [s - 1 for s in self.starts[1:]] + ([total_steps - 1] if total_steps else [])
        self.pairs: list[tuple[list[int], list[int], list[int]]] = []
        self.ties = 0  # oracle-labelled comparisons that tied, hence added no pair
        self.records: list[dict] = []

    def starts_round(self, step: int) -> bool:
        return step in self.starts

    def ends_round(self, step: int) -> int | None:
        """The index of the round that ends with `step`, or None."""
        return self.ends.index(step) if step in self.ends else None

    def add(self, teacher: Batch, samples: Batch, scores: tuple[list[float], list[float]] | None = None) -> None:
        """Pairs (x, preferred output, rejected output) of the teacher's outputs and the student's samples:
        `samples` has `group` consecutive rows per row of `teacher` (ctx.sample_student's num_samples),
        each paired with that row's output. Without scores the teacher's output is preferred. With the
        oracle's scores (of the teacher rows, of the sample rows) the higher-scoring output is preferred,
        and a tie adds no pair."""
        group = samples.size // teacher.size
        outputs = unpadded_rows(teacher.target_ids, teacher.target_mask)
        prompts = unpadded_rows(samples.prompt_ids, samples.prompt_mask)
        sampled = unpadded_rows(samples.target_ids, samples.target_mask)
        for i, (prompt, sample) in enumerate(zip(prompts, sampled, strict=True)):
            output = outputs[i // group]
            if scores is None:
                self.pairs.append((prompt, output, sample))
                continue
            teacher_score, sample_score = scores[0][i // group], scores[1][i]
            if teacher_score > sample_score:
                self.pairs.append((prompt, output, sample))
            elif sample_score > teacher_score:
                self.pairs.append((prompt, sample, output))
            else:
                self.ties += 1

    def batches(self, ctx, indices: list[int] | None = None) -> tuple[Batch, Batch]:
        """(preferred, rejected) batches of the chosen pairs (all by default), on the context's device."""
        chosen = [self.pairs[i] for i in indices] if indices is not None else self.pairs
        prompts = [p for p, _, _ in chosen]
        return (ctx.student.collate(prompts, [w for _, w, _ in chosen]).to(ctx.device),
                ctx.student.collate(prompts, [r for _, _, r in chosen]).to(ctx.device))

    def minibatch(self, ctx, size: int, stream: str) -> tuple[Batch, Batch]:
        """`size` pairs drawn without replacement under the run's random stream `stream`."""
        if len(self.pairs) <= size:
            return self.batches(ctx)
        with ctx.random_stream(stream):
            indices = torch.randperm(len(self.pairs))[:size].tolist()
        return self.batches(ctx, indices)

    def record(self, round_index: int, step: int, loglik: float, ml_loglik: float, slack: float) -> dict:
        """Store and print (one JSON line on stdout, in the run's log) the round's confidence-set record."""
        gap = ml_loglik - loglik
        entry = {"round": round_index, "step": step + 1, "pairs": len(self.pairs), "ties": self.ties,
                 "loglik": round(loglik, 6), "ml_loglik": round(ml_loglik, 6), "gap": round(gap, 6), "slack": slack,
                 "inside": gap <= slack}
        self.records.append(entry)
        print("confidence set: " + json.dumps(entry), flush=True)
        return entry

    def state_dict(self) -> dict:
        return {"pairs": [list(p) for p in self.pairs], "records": list(self.records), "ties": self.ties}

    def load_state_dict(self, state: dict) -> None:
        self.pairs = [tuple(p) for p in state["pairs"]]
        self.records = list(state["records"])
        self.ties = state.get("ties", 0)


def oracle_labels(ctx, settings: PreferenceSettings, examples, samples: Batch, group: int):
    """The oracle's scores (of the teacher outputs, of the samples) for PreferenceRounds.add, or None when
    the teacher labels the pairs."""
    if settings.preference_labels != "oracle":
        return None
    return (ctx.oracle_scores(examples.indices, examples.teacher_output),
            ctx.oracle_scores(examples.indices, samples, group=group))
