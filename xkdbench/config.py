"""Run configuration: dataclasses loaded strictly from YAML.

One experiment file (the same YAML the Snakemake workflow reads) configures every command. Loading is
strict: an unknown key, a value of the wrong type or out of range, or an unknown task or method name
raises `ConfigError` naming the field (as a dotted path) and what is allowed, before any work starts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xkdbench.errors import ConfigError
from xkdbench.models.build import ModelSpec
from xkdbench.validation import _coerce, check_choice, check_range, from_dict

__all__ = ["EXTERNAL", "ConfigError", "ExperimentConfig", "check_choice", "check_range", "from_dict", "load_config",
           "register_study_check"]

# Checks of a whole study that need a higher layer (the task generators, the method registry, the
# report settings). Each layer registers its own when imported, and the package imports all of them
# (xkdbench/__init__.py), so this module imports none of them and the layers stay acyclic.
STUDY_CHECKS: dict[str, Callable[[Any, str], None]] = {}


def register_study_check(name: str):
    """Register `check(config, where)`, run by ExperimentConfig.validate in registration order."""
    def decorator(check):
        STUDY_CHECKS[name] = check
        return check

    return decorator


SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainingConfig:
    """Optimisation budget of one training run (the same for every method in a cell).

    batch_size is per micro-batch; one optimiser step sees batch_size * grad_accum examples, and its
    loss is the mean over all their target tokens (global token normalisation).
    """

    steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    validate_every: int = 0  # every N steps log the student's gold NLL on the validation split (0: never)
    # Train with dropout off (the model in eval mode), as TRL's GKD/GKDConfig `disable_dropout` does by
    # default: a distillation loss compares two distributions, and dropout noise on one side biases it.
    # Pretrained T5 has dropout 0.1; false keeps the checkpoint's dropout (the models built here have none).
    disable_dropout: bool = True

    def validate(self, where: str) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            check_range(f"{where}.{name}", getattr(self, name), 1)
        check_range(f"{where}.lr", self.lr, 0, low_open=True)
        check_range(f"{where}.warmup_steps", self.warmup_steps, 0)
        check_range(f"{where}.validate_every", self.validate_every, 0)
        check_range(f"{where}.weight_decay", self.weight_decay, 0)
        check_range(f"{where}.max_grad_norm", self.max_grad_norm, 0, low_open=True)
        check_choice(f"{where}.schedule", self.schedule, SCHEDULES)


@dataclass
class SamplingConfig:
    """How on-policy samples are drawn during distillation (sampling_temperature, not the loss's).
    Their length limit is the task's max_target_tokens."""

    sampling_temperature: float = 1.0
    top_p: float = 1.0

    def validate(self, where: str) -> None:
        check_range(f"{where}.sampling_temperature", self.sampling_temperature, 0, low_open=True)
        check_range(f"{where}.top_p", self.top_p, 0, 1, low_open=True)


@dataclass
class EvaluationConfig:
    batch_size: int = 64
    samples_per_input: int = 4
    sampling_temperatures: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25])
    split: str = "test"
    limit: int | None = None  # evaluate the first `limit` inputs only (None: all)
    # data fractions whose cells also get the sampled outputs (diversity study); None: every fraction
    sampled_fractions: list[float] | None = None
    # the diversity study samples the first `sampled_inputs` evaluated inputs (None: all of them); sampling
    # k outputs at every temperature costs many times the greedy pass, and a mean needs fewer inputs
    sampled_inputs: int | None = None

    def validate(self, where: str) -> None:
        check_range(f"{where}.batch_size", self.batch_size, 1)
        check_range(f"{where}.samples_per_input", self.samples_per_input, 0)
        if self.samples_per_input == 1:
            raise ConfigError(f"{where}.samples_per_input: diversity needs 0 (no sampling) or >= 2 samples, got 1")
        for i, t in enumerate(self.sampling_temperatures):
            check_range(f"{where}.sampling_temperatures[{i}]", t, 0, low_open=True)
        check_choice(f"{where}.split", self.split, ("validation", "test"))
        if self.limit is not None:
            check_range(f"{where}.limit", self.limit, 1)
        if self.sampled_inputs is not None:
            check_range(f"{where}.sampled_inputs", self.sampled_inputs, 1)


@dataclass
class SeqKDConfig:
    """How teacher outputs for SeqKD-style methods are produced, once per task."""

    decoding: str = "greedy"  # greedy | sample
    sampling_temperature: float = 1.0

    def validate(self, where: str) -> None:
        check_choice(f"{where}.decoding", self.decoding, ("greedy", "sample"))
        check_range(f"{where}.sampling_temperature", self.sampling_temperature, 0, low_open=True)


TEACHER_CACHE_MODES = ("live", "top_k", "exact")


@dataclass
class TeacherCacheConfig:
    """The teacher's outputs on the fixed training sequences, computed once per task (README, "Teacher cache").

    mode: `live` (no cache: every cell runs the teacher, as without this section), `top_k` (per position
      the top_k log-probabilities in float16 and the remaining mass, spread uniformly over the other
      tokens when read) or `exact` (every log-probability in float32: the same losses as the live teacher).
      (Not `off`: YAML reads a bare off as false.)
    top_k: tokens kept per position in top_k mode; below the vocabulary size (all of it is `exact`).
    batch_size: sequences per teacher forward pass while the cache is built.
    """

    mode: str = "live"
    top_k: int = 64
    batch_size: int = 32

    def validate(self, where: str) -> None:
        check_choice(f"{where}.mode", self.mode, TEACHER_CACHE_MODES)
        check_range(f"{where}.top_k", self.top_k, 1)
        check_range(f"{where}.batch_size", self.batch_size, 1)

    @property
    def enabled(self) -> bool:
        return self.mode != "live"


@dataclass
class TaskConfig:
    """One task of the experiment: its source, generator/dataset options and sequence limits.

    Any training section given here replaces fields of the experiment-wide one for this task only.
    `fractions` runs the task at only some of the study's data fractions (default: all of them), so an
    expensive task can carry the main comparison while a cheaper one carries the data-efficiency curves.
    `seeds` gives the task its own training seeds (default: the study's), so a task whose claims the
    seed-to-seed spread decides can get more runs without paying for them on every task.
    """

    source: str = "embedded"
    options: dict[str, Any] = field(default_factory=dict)
    max_prompt_tokens: int = 128
    max_target_tokens: int = 64
    teacher_training: dict[str, Any] = field(default_factory=dict)
    student_init: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    fractions: list[float] | None = None  # None: every fraction of the study
    seeds: list[int] | None = None  # None: the study's seeds

    def validate(self, where: str) -> None:
        check_choice(f"{where}.source", self.source, ("embedded", "hf"))
        if self.fractions is not None and not self.fractions:
            raise ConfigError(f"{where}.fractions: an empty list runs the task at no fraction; omit the key to run "
                              "it at every fraction of the study")
        if self.seeds is not None:
            check_seeds(f"{where}.seeds", self.seeds)
        check_range(f"{where}.max_prompt_tokens", self.max_prompt_tokens, 2)
        check_range(f"{where}.max_target_tokens", self.max_target_tokens, 2)


def check_seeds(where: str, seeds: list[int]) -> None:
    """A seed list runs every cell once per seed: it must name at least one, each once."""
    if not seeds:
        raise ConfigError(f"{where}: an empty list runs no cell; allowed: one or more distinct integers >= 0")
    for i, seed in enumerate(seeds):
        check_range(f"{where}[{i}]", seed, 0)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{where}: seed {repeated[0]} is listed twice; allowed: distinct integers >= 0 "
                          "(a repeated seed would rerun the same cells)")


@dataclass
class TokenizerConfig:
    vocab_size: int = 1000
    pretrained: str | None = None  # a hub id or directory whose tokenizer to use instead of training one

    def validate(self, where: str) -> None:
        if not self.pretrained:
            check_range(f"{where}.vocab_size", self.vocab_size, 300)


@dataclass
class ModelsConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: ModelSpec = field(default_factory=ModelSpec)
    student: ModelSpec = field(default_factory=lambda: ModelSpec(d_model=64, n_layers=2, n_heads=2, d_ff=256))

    def validate(self, where: str) -> None:
        self.teacher.validate(f"{where}.teacher")
        self.student.validate(f"{where}.student")
        built = not self.teacher.pretrained and not self.student.pretrained
        if built and self.teacher.family != self.student.family:
            raise ConfigError(mixed_families(f"{where}.student.family", self.teacher.family, self.student.family))


def mixed_families(where: str, teacher: str, student: str) -> str:
    """Teacher and student of different families format a prompt differently (a decoder-only model
    separates prompt and target with a BOS token, an encoder-decoder feeds the prompt to its
    encoder), so token-level losses would compare distributions over different contexts."""
    return (f"{where}: the student is {student!r} but the teacher is {teacher!r}; distillation across model "
            "families is not supported (their prompt formats differ); use one family for both")


ENTRY_KEYS = ("name", "method", "tasks", "fractions", "stream", "rule")  # a method entry's keys beside its settings
# `method: external`: a Snakemake rule, named by the entry's `rule`, trains the variant (xkdbench.external)
EXTERNAL = "external"


@dataclass
class MethodEntry:
    """A method variant: a display name, a registry key and that method's settings.

    In YAML the settings sit beside the two keys: `{name: gkd_rkl_on, method: gkd, divergence: reverse_kl}`.
    Two more keys limit where the variant runs (default: every task and fraction of the study), so a
    side study such as the GKD grid costs only its own cells: `tasks: [reasoning], fractions: [1.0]`.
    `stream` (default 0) offsets the variant's random streams (on-policy sampling, per-step decisions,
    its modules' initialisation; not the data order or the student initialisation, which every
    variant of a seed shares). Two entries that differ only in `stream` are an A/A control.
    `method: external` with `rule: <name>`: the variant is trained by that Snakemake rule, whose declaration
    says which settings the entry may give (xkdbench.external; README "Adding a method").
    """

    name: str
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    tasks: list[str] | None = None  # None: every task of the study
    fractions: list[float] | None = None  # None: every fraction of the study
    stream: int = 0
    rule: str | None = None  # the Snakemake rule of an external variant (method: external)

    @classmethod
    def from_config(cls, data: Any, where: str) -> MethodEntry:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with keys 'name' and 'method', got {data!r}")
        for key in ("name", "method"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"{where}.{key}: required (a non-empty string)")
        tasks = None if data.get("tasks") is None else _coerce(data["tasks"], list[str], f"{where}.tasks")
        fractions = (None if data.get("fractions") is None
                     else _coerce(data["fractions"], list[float], f"{where}.fractions"))
        for key, value in (("tasks", tasks), ("fractions", fractions)):
            if value is not None and not value:
                raise ConfigError(f"{where}.{key}: an empty list runs the variant nowhere; omit the key to run it "
                                  "everywhere")
        stream = _coerce(data.get("stream", 0), int, f"{where}.stream")
        check_range(f"{where}.stream", stream, 0)
        rule = data.get("rule")
        if data["method"] == EXTERNAL:
            if not isinstance(rule, str) or not rule.isidentifier():
                raise ConfigError(f"{where}.rule: required for method: external (the name of the Snakemake rule "
                                  f"that trains the variant), got {rule!r}")
        elif "rule" in data:
            raise ConfigError(f"{where}.rule: only an external method (method: external) names a rule; "
                              f"{data['method']!r} is trained by the suite")
        settings = {k: v for k, v in data.items() if k not in ENTRY_KEYS}
        return cls(name=data["name"], method=data["method"], settings=settings, tasks=tasks, fractions=fractions,
                   stream=stream, rule=rule)

    @property
    def external(self) -> bool:
        """Whether a Snakemake rule of its own trains the variant (method: external)."""
        return self.method == EXTERNAL

    @property
    def limited(self) -> bool:
        """Whether the variant runs on only part of the study's grid (a side study)."""
        return self.tasks is not None or self.fractions is not None

    def runs_on(self, task: str, fraction: float | None = None) -> bool:
        """Whether the study has cells of this variant on `task` (at `fraction`, when given)."""
        if self.tasks is not None and task not in self.tasks:
            return False
        return fraction is None or self.fractions is None or float(fraction) in self.fractions


# the workflow's stages (workflows/rules/common.smk) and what a job of each may ask for
RESOURCE_STAGES = ("data", "teacher", "student", "evaluate")
RESOURCE_KEYS = ("gpus", "threads", "mem_mb", "runtime", "processes")


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    teacher_training: TrainingConfig = field(default_factory=TrainingConfig)
    student_init: TrainingConfig = field(default_factory=TrainingConfig)
    distill: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seqkd: SeqKDConfig = field(default_factory=SeqKDConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    methods: list[MethodEntry] = field(default_factory=list)
    fractions: list[float] = field(default_factory=lambda: [1.0])
    seeds: list[int] = field(default_factory=lambda: [0])
    report: dict[str, Any] = field(default_factory=dict)  # read by xkdbench.reporting
    resources: dict[str, Any] = field(default_factory=dict)  # read by the workflow (jobs' threads, GPUs)

    def validate(self, where: str) -> None:
        check_choice(f"{where}.device", self.device, ("auto", "cpu", "cuda"))
        check_choice(f"{where}.precision", self.precision, ("auto", "fp32", "bf16"))
        if not self.tasks:
            raise ConfigError(f"{where}.tasks: at least one task is required")
        cache, vocab = self.teacher_cache, self.models.tokenizer.vocab_size
        if cache.mode == "top_k" and not self.models.tokenizer.pretrained and cache.top_k >= vocab:
            raise ConfigError(f"{where}.teacher_cache.top_k: {cache.top_k} keeps the whole vocabulary ({vocab} "
                              f"tokens); allowed: 1..{vocab - 1}, or mode: exact")
        missing = sorted({"tasks", "methods", "report"} - set(STUDY_CHECKS))
        if missing:  # never validate a study only in part
            raise RuntimeError(f"the study checks of {missing} are not registered; import xkdbench first")
        STUDY_CHECKS["tasks"](self, where)  # names of tasks first: everything below refers to them
        for name in self.tasks:
            for section in ("teacher_training", "student_init", "distill"):
                self.training(section, name)  # validates the per-task override now
        self._validate_resources(f"{where}.resources")
        for i, f in enumerate(self.fractions):
            check_range(f"{where}.fractions[{i}]", f, 0, 1, low_open=True)
        check_seeds(f"{where}.seeds", self.seeds)
        for name, task in self.tasks.items():
            for f in task.fractions or []:
                check_choice(f"{where}.tasks.{name}.fractions", f, [float(x) for x in self.fractions])
        seen = set()
        for i, entry in enumerate(self.methods):
            if entry.name in seen:
                raise ConfigError(f"{where}.methods[{i}].name: {entry.name!r} is used twice; names must be unique")
            seen.add(entry.name)
            for task in entry.tasks or []:
                check_choice(f"{where}.methods[{i}].tasks", task, self.tasks)
            for f in entry.fractions or []:
                check_choice(f"{where}.methods[{i}].fractions", f, [float(x) for x in self.fractions])
        for name, check in STUDY_CHECKS.items():
            if name != "tasks":
                check(self, where)

    def _validate_resources(self, where: str) -> None:
        """What the workflow asks the scheduler for, per stage; `processes` (torchrun ranks) only where
        the core trains, and it must split every distillation batch evenly."""
        if not isinstance(self.resources, dict):
            raise ConfigError(f"{where}: expected a mapping of stage -> settings, got {self.resources!r}")
        for stage, spec in self.resources.items():
            check_choice(f"{where}", stage, RESOURCE_STAGES)
            if not isinstance(spec, dict):
                raise ConfigError(f"{where}.{stage}: expected a mapping, got {spec!r}")
            for key, value in spec.items():
                check_choice(f"{where}.{stage}", key, RESOURCE_KEYS)
                check_range(f"{where}.{stage}.{key}", value, 0 if key == "gpus" else 1)
        for stage, spec in self.resources.items():
            if stage != "student" and spec.get("processes", 1) != 1:
                raise ConfigError(f"{where}.{stage}.processes: only the student's jobs (distillation) run as "
                                  "several processes; allowed here: 1")
        processes = self.resources.get("student", {}).get("processes", 1)
        gpus = self.resources.get("student", {}).get("gpus", 0)
        if gpus and processes > 1 and gpus != processes:
            raise ConfigError(f"{where}.student.gpus: {gpus} for {processes} processes; allowed: {processes} "
                              "(one GPU per rank)")
        for task in self.tasks:
            batch = self.training("distill", task).batch_size
            if batch % processes:
                raise ConfigError(f"{where}.student.processes: {processes} does not divide the distill batch_size "
                                  f"{batch} of {task}; allowed: a divisor of it (each rank takes an equal share)")

    def cells(self) -> list[tuple[str, str, float, int]]:
        """Every (task, method variant, fraction, seed) of the study, in config order."""
        return [(task, m.name, float(f), s) for task in self.tasks for m in self.methods
                for f in self.task_fractions(task) if m.runs_on(task, f) for s in self.task_seeds(task)]

    def task_seeds(self, task: str) -> list[int]:
        """The training seeds of `task`: its own `seeds`, else the study's."""
        own = self.tasks[task].seeds
        return [int(s) for s in (self.seeds if own is None else own)]

    def task_fractions(self, task: str) -> list[float]:
        """The data fractions `task` runs at: its own `fractions`, else the study's."""
        own = self.tasks[task].fractions
        return [float(f) for f in (self.fractions if own is None else own)]

    def training(self, section: str, task: str) -> TrainingConfig:
        """The training config of `section` for `task`, with the task's overrides applied."""
        base = dataclasses.asdict(getattr(self, section))
        override = getattr(self.tasks[task], section)
        return from_dict(TrainingConfig, {**base, **override}, f"config.tasks.{task}.{section}")

    def task(self, name: str) -> TaskConfig:
        if name not in self.tasks:
            raise ConfigError(f"--task: {name!r} is not in this config; configured tasks: {', '.join(self.tasks)}")
        return self.tasks[name]

    def method(self, name: str) -> MethodEntry:
        for entry in self.methods:
            if entry.name == name:
                return entry
        raise ConfigError(f"--method: {name!r} is not a method variant of this config; "
                          f"configured: {', '.join(e.name for e in self.methods)}")


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return from_dict(ExperimentConfig, data, "config")


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
