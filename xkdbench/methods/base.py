"""The method interface: the one extension point of the suite.

A method is one file: a config dataclass (every field documented with the paper symbol it stands for)
and a class registered by name that says where its training sequences come from (`sequences`) and
what per-token loss it puts on them (`loss`). Everything else (models, devices, optimiser, schedule,
accumulation, normalisation, clipping, seeding, logging, checkpoints, resume) belongs to the core.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from xkdbench.models.batch import Batch
from xkdbench.registry import Registry
from xkdbench.validation import from_dict

if TYPE_CHECKING:
    from xkdbench.core.context import TrainContext, TrainExamples
    from xkdbench.models.seq2seq import Seq2SeqLM


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str | None = None
    venue: str | None = None
    # the method's objective is filled in here where neither the full text nor code was available (the
    # method's docstring lists what); the report marks such variants with a dagger
    reconstructed: bool = False


METHODS: Registry[type[Method]] = Registry("method")

# The sequences a method asks the teacher about (Method.teacher_sequences).
FIXED = "fixed"  # the fixed training sequences: gold targets and the cached teacher outputs
SAMPLED = "sampled"  # sequences generated during training (student or teacher-mixed samples)


class Method:
    """Base class. Subclasses set `Config`, `paper`, and override `sequences` and/or `loss`.

    Three class methods tell the core what to load before training starts:
      needs_teacher(config): load the teacher and offer `ctx.teacher_logits` / `ctx.sample_teacher`.
      uses_teacher_outputs(config): load the teacher's cached outputs for the training inputs
        (SeqKD data, decoded once per task) and pass them with every batch as `examples.teacher_output`.
      teacher_sequences(config): which sequences `ctx.teacher_logits` may be asked about, FIXED and/or
        SAMPLED. With the teacher cache on, a method that asks about FIXED sequences only never needs
        the live teacher, and the core does not load it.
    """

    Config: ClassVar[type] = type(None)
    paper: ClassVar[Paper | None] = None
    key: ClassVar[str] = ""

    @classmethod
    def needs_teacher(cls, config: Any) -> bool:
        return True

    @classmethod
    def uses_teacher_outputs(cls, config: Any) -> bool:
        return False

    @classmethod
    def needs_oracle(cls, config: Any) -> bool:
        """Whether training scores texts with the task's oracle (`TrainContext.oracle_scores`): only on
        embedded tasks, which have one; the config check refuses the variant on any other task."""
        return False

    @classmethod
    def teacher_sequences(cls, config: Any) -> frozenset[str]:
        """FIXED: the method asks the teacher about fixed training sequences (served by the teacher cache);
        SAMPLED: about sequences generated during training (the live teacher). Default: both, when the
        method needs the teacher at all; a method that declares FIXED alone and then asks about another
        sequence gets an error, never a silent wrong answer."""
        return frozenset({FIXED, SAMPLED}) if cls.needs_teacher(config) else frozenset()

    def __init__(self, config: Any, ctx: TrainContext):
        self.config = config
        self.ctx = ctx

    def sequences(self, examples: TrainExamples, step: int) -> Batch:
        """Data-source hook: the batch to train on this micro-step (default: the gold one).

        The core builds every micro-batch of an optimiser step before computing any loss of that
        step, so a method may count tokens across the step here (X-KD's gold-sequence option does)."""
        return examples.gold

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss hook: named per-token loss terms, each (B, T) aligned with batch.target_ids.

        The core sums the terms, masks them with batch.target_mask and divides by the number of
        target tokens of the whole optimiser step; a method never reduces.
        """
        raise NotImplementedError

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """Extra modules trained together with the student (saved beside it, dropped at inference)."""
        return {}

    @classmethod
    def check_training(cls, config: Any, training: Any, where: str) -> None:
        """Reject a training budget the method cannot run with (ConfigError naming the field), at
        config load time, before any work starts. Default: every budget is fine."""

    @classmethod
    def learned_reward(cls, model_dir: Path, config: Any, student: Seq2SeqLM) -> Callable[[Batch], torch.Tensor] | None:
        """For methods that learn a reward (X-KD, PbKD): a function scoring each sequence of a batch
        (B,) from the modules saved beside the checkpoint. The evaluator correlates it with the
        oracle score on embedded tasks. None (the default): the method learns no reward."""
        return None

    def on_validation(self, step: int, validation_nll: float) -> None:
        """Called after the core measured the student's validation NLL (training.validate_every)."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond its modules (buffers, schedules), saved in checkpoints for resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def register(name: str):
    """Register a Method subclass under its registry key (the `method:` of a config entry)."""
    def decorator(cls: type[Method]) -> type[Method]:
        cls.key = name
        return METHODS.register(name)(cls)

    return decorator


def method_config(method: str, settings: dict[str, Any], where: str = "settings") -> Any:
    """Build the config dataclass of `method` from `settings`, strictly."""

    cls = METHODS.get(method, field=where.rsplit(".settings", 1)[0] + ".method")
    return from_dict(cls.Config, settings, where)
