"""DistiLLM (Ko et al., ICML 2024): skew KL with an adaptive off-policy schedule and a replay buffer."""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from xkdbench.methods.base import FIXED, SAMPLED, Method, Paper, register
from xkdbench.methods.common import DivergenceSettings, divergence_on
from xkdbench.models.batch import Batch
from xkdbench.models.seq2seq import Seq2SeqLM
from xkdbench.validation import ConfigError, check_choice, check_range

SKEW_DIVERGENCES = ("skew_forward_kl", "skew_reverse_kl")


@dataclass
class DistiLLMConfig(DivergenceSettings):
    """divergence: skew_forward_kl (SKL, default, the GPT-2 scripts) or skew_reverse_kl (SRKL, the OPT scripts).
    alpha: the skew weight alpha of SKL_alpha = KL(p || alpha p + (1 - alpha) q) (code `skew_alpha`).
    loss_temperature: see DivergenceSettings (1, as the paper).
    initial_threshold: the adaptive threshold at step 0, the probability that a step trains on student
      outputs (code `init_threshold`).
    threshold_increment: how much the threshold rises (to at most 1) when validation loss worsens (0.1, fixed in
      the code).
    loss_tolerance: epsilon, the worsening of the validation loss that raises the threshold (code `loss_eps`).
    replay_buffer_size: the capacity of the replay buffer in student samples (code `capacity`).
    schedule_steps: T, the step count over which the share of fresh generations decays to 0 (code
      `total_iters`); None: the run's step count from the context (`ctx.total_steps`; when the core does not
      provide it, set this field to the run's distill.steps)."""

    divergence: str = "skew_forward_kl"
    alpha: float | None = 0.1
    initial_threshold: float = 0.0
    threshold_increment: float = 0.1
    loss_tolerance: float = 0.1
    replay_buffer_size: int = 1000
    schedule_steps: int | None = None

    def validate(self, where: str) -> None:
        check_choice(f"{where}.divergence", self.divergence, SKEW_DIVERGENCES)
        super().validate(where)
        for name in ("initial_threshold", "threshold_increment"):
            check_range(f"{where}.{name}", getattr(self, name), 0, 1)
        check_range(f"{where}.loss_tolerance", self.loss_tolerance, 0)
        check_range(f"{where}.replay_buffer_size", self.replay_buffer_size, 1)
        if self.schedule_steps is not None:
            check_range(f"{where}.schedule_steps", self.schedule_steps, 1)


class AdaptiveSchedule:
    """DistiLLM's adaptive off-policy schedule, as in the public code (`finetune.py`).

    threshold: the probability that an optimiser step trains on student outputs. It starts at
    `initial` and rises by `increment` (capped at 1) when a validation loss is >= reference + tolerance;
    the reference is the validation loss at the last rise (initially the first one observed), so a slow
    drift upwards also raises it. Among student-output steps the share of FRESH generations is
    1 - (step + 1) / total_steps (the code's 1 - global_step / total_iters, global_step counted from 1):
    one coin u in [0, 1) per step gives fresh if u < threshold * share, or if u < threshold while the
    replay buffer is not yet full; replay if u < threshold; gold otherwise.
    """

    def __init__(self, initial: float = 0.0, increment: float = 0.1, tolerance: float = 0.1):
        self.threshold, self.increment, self.tolerance = initial, increment, tolerance
        self.reference: float | None = None

    def observe(self, validation_loss: float) -> None:
        if self.reference is None:
            self.reference = validation_loss
        elif validation_loss >= self.reference + self.tolerance:
            self.threshold = min(1.0, round(self.threshold + self.increment, 12))
            self.reference = validation_loss

    @staticmethod
    def fresh_share(step: int, total_steps: int) -> float:
        return min(1.0, max(0.0, 1.0 - (step + 1) / total_steps))

    def source(self, u: float, step: int, total_steps: int, buffer_full: bool) -> str:
        """'fresh', 'replay' or 'gold' for a step whose coin is u."""
        if u < self.threshold * self.fresh_share(step, total_steps) or (u < self.threshold and not buffer_full):
            return "fresh"
        return "replay" if u < self.threshold else "gold"

    def state_dict(self) -> dict:
        return {"threshold": self.threshold, "reference": self.reference}

    def load_state_dict(self, state: dict) -> None:
        self.threshold, self.reference = state["threshold"], state["reference"]


class ReplayBuffer:
    """The newest `capacity` student samples, each a (prompt tokens, target tokens) row without padding."""

    def __init__(self, capacity: int):
        self.rows: deque[tuple[list[int], list[int]]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def full(self) -> bool:
        return len(self.rows) == self.rows.maxlen

    def add(self, batch: Batch) -> None:
        for ids, mask, target, target_mask in zip(batch.prompt_ids.tolist(), batch.prompt_mask.tolist(),
                                                  batch.target_ids.tolist(), batch.target_mask.tolist(), strict=True):
            self.rows.append(([t for t, m in zip(ids, mask, strict=True) if m],
                              [t for t, m in zip(target, target_mask, strict=True) if m]))

    def sample(self, size: int, rng: random.Random, model: Seq2SeqLM) -> Batch:
        """`size` rows (fewer if the buffer holds fewer) drawn without replacement, collated by `model`."""
        picked = [self.rows[i] for i in rng.sample(range(len(self.rows)), min(size, len(self.rows)))]
        return model.collate([p for p, _ in picked], [t for _, t in picked])

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        self.rows.clear()
        self.rows.extend(state["rows"])


@register("distillm")
class DistiLLM(Method):
    """DistiLLM: the skew KL (SKL or SRKL, alpha 0.1) on gold, fresh student or replayed student outputs.

    One coin per optimiser step from the context's seeded generator (as GKD) picks the data of every
    micro-batch of the step through `AdaptiveSchedule`; every fresh generation (the experiment's sampling
    temperature, 1 by default as the code) fills the replay buffer; replayed batches are drawn from it
    with the same generator. The threshold moves only on validation: set `distill.validate_every` > 0.

    Deviations and reconstructed choices:
    - The code measures validation loss before training and uses it as the first reference; here the
      first validation the core reports (at step validate_every) is the reference.
    - The code's coin is per micro-batch; here per optimiser step (all micro-batches agree).
    - The code sometimes adds a language-model term on a pre-training corpus (`lm_data_dir`); not here.
    - A replayed micro-batch holds as many rows as the gold one, fewer if the buffer holds fewer.
    - The run length T is the run's step budget (`ctx.total_steps`) unless `schedule_steps` is given.
    """

    Config = DistiLLMConfig
    paper = Paper("DistiLLM: Towards Streamlined Distillation for Large Language Models", "2402.03898", "ICML 2024")

    @classmethod
    def teacher_sequences(cls, config):
        # the threshold starts at initial_threshold and only rises: at 1 no step is gold, and with no
        # increment from 0 every step is
        gold = config.initial_threshold < 1
        student = config.initial_threshold > 0 or config.threshold_increment > 0
        return frozenset({FIXED} if gold else set()) | frozenset({SAMPLED} if student else set())

    @classmethod
    def check_training(cls, config, training, where):
        if training.validate_every == 0:
            raise ConfigError(f"{where}.validate_every: 0 is not allowed for distillm; allowed: >= 1 (its "
                              "adaptive schedule moves only on validation losses)")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        if ctx.validate_every == 0:
            raise ConfigError("distill.validate_every: 0 is not allowed for distillm; allowed: >= 1 (its "
                              "adaptive schedule moves only on validation losses)")
        self.total_steps = config.schedule_steps or ctx.total_steps
        if not self.total_steps:
            raise ConfigError("schedule_steps: distillm needs the run's step count for its fresh-generation decay; "
                              "set schedule_steps to the run's distill.steps")
        self.schedule = AdaptiveSchedule(config.initial_threshold, config.threshold_increment, config.loss_tolerance)
        self.buffer = ReplayBuffer(config.replay_buffer_size)
        self._coin_step, self._source = -1, "gold"

    def source(self, step: int) -> str:
        if step != self._coin_step:
            self._coin_step = step
            self._source = self.schedule.source(self.ctx.rng.random(), step, self.total_steps, self.buffer.full)
        return self._source

    def sequences(self, examples, step):
        source = self.source(step)
        if source == "fresh":
            batch = self.ctx.sample_student(examples.gold)
            self.buffer.add(batch)
            return batch
        if source == "replay":
            return self.buffer.sample(examples.gold.size, self.ctx.rng, self.ctx.student).to(self.ctx.device)
        return examples.gold

    def loss(self, batch):
        return {self.config.divergence: divergence_on(self.ctx, batch, self.config)}

    def on_validation(self, step, validation_nll):
        self.schedule.observe(validation_nll)

    def state_dict(self):
        return {"schedule": self.schedule.state_dict(), "buffer": self.buffer.state_dict()}

    def load_state_dict(self, state):
        self.schedule.load_state_dict(state["schedule"])
        self.buffer.load_state_dict(state["buffer"])
