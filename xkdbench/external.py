"""Methods as Snakemake rules: a trainer from any codebase joins a study as one rule (README "Adding a method").

A method variant with `method: external` names the Snakemake rule that trains its cells:

    methods:
      - {name: trl_gkd, method: external, rule: trl_gkd, beta: 0.5, student_data_fraction: 1.0}

The rule lives in `workflows/rules/external/<rule>.smk` (every .smk there is included by the workflow) and
declares what a config entry may set in `<rule>.yaml` beside it:

    rule: trl_gkd
    description: TRL's GKDTrainer
    inputs: [teacher_outputs]            # optional: the cached teacher outputs as well (SeqKD data)
    settings:                            # each: type (float, int, str, bool), and optionally default
      beta: {type: float, min: 0, max: 1}            # (none: the setting is required), min, max, choices
      divergence: {type: str, choices: [jsd], default: jsd}

The config loader checks such an entry like any other, naming the field: an undeclared rule, an unknown
or missing setting, a value of the wrong type or out of range.

The contract of one cell (task, variant, fraction, seed), under results/<study>/cells/<task>/<variant>/
f<fraction>/seed<seed>/:

  in (written by `xkdbench cell-inputs`; cell.json is the rule's input):
    inputs/cell.json    the paths of the prepared data, tokenizer, teacher checkpoint, student
                        initialisation and (when declared) cached teacher outputs; the fraction, seed and
                        stream; the entry's settings with the declared defaults filled in; the study's
                        distillation budget for the task, sampling settings, token limits, device and
                        precision; the paths of the two files below
    inputs/train.jsonl  the cell's training examples (the first `fraction` of the task's pool, the same an
                        in-house cell trains on) as prompt and target texts (and teacher_output)
    inputs/order.json   the suite's example indices (into train.jsonl) of every optimiser step
  out (written by the rule):
    model/              a Hugging Face model directory (`save_pretrained` of the model and the tokenizer)
                        of the student's family and vocabulary
    train_summary.json  {"steps": the budget's steps, "seconds": training seconds} and, when known,
                        "tokens", "generated_tokens", "teacher_forward_sequences", "examples"

Everything after is the suite's: `xkdbench evaluate --method` checks the outputs against this contract
(`check_outputs`) and evaluates model/ into eval/ exactly as a distill job evaluates its student, so the
cell enters every table, figure, claim and the cost table.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xkdbench.config import ExperimentConfig, MethodEntry
from xkdbench.errors import ConfigError
from xkdbench.io import read_json
from xkdbench.validation import check_choice, check_range

RULES_DIR = Path("workflows") / "rules" / "external"
INPUTS = ("teacher_outputs",)  # what a rule may ask for beyond data, tokenizer, teacher and student
TYPES = {"float": float, "int": int, "str": str, "bool": bool}
SETTING_KEYS = ("type", "default", "min", "max", "choices", "help")
DECLARATION_KEYS = ("rule", "description", "inputs", "settings")
# train_summary.json: required keys, then the optional counts (the cost table's columns)
SUMMARY_REQUIRED = ("steps", "seconds")
SUMMARY_COUNTS = ("tokens", "generated_tokens", "teacher_forward_sequences", "teacher_cache_sequences", "examples")
CELL_FILE = Path("inputs") / "cell.json"


class ContractError(ConfigError):
    """An external rule's outputs break the contract (a file missing, a model that does not load, a summary
    without its keys); the message names the file, the rule and what it must write."""


_REQUIRED = object()


@dataclass(frozen=True)
class Setting:
    type: str
    default: Any = _REQUIRED
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, value: Any, where: str) -> Any:
        tp = TYPES[self.type]
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {self.type}, got {value!r}")
        if self.min is not None or self.max is not None:
            check_range(where, value, self.min, self.max)
        if self.choices is not None:
            check_choice(where, value, self.choices)
        return value


@dataclass(frozen=True)
class Declaration:
    """What `<rule>.yaml` declares: the rule's name, the extra inputs it reads and its settings."""

    rule: str
    path: Path
    description: str = ""
    inputs: tuple[str, ...] = ()
    settings: dict[str, Setting] = field(default_factory=dict)


def rules_folder() -> Path:
    """Where external rules are declared: workflows/rules/external of the working directory (the workflow's
    root, where Snakemake runs every job), else of the checkout the package was installed from."""
    here = Path.cwd() / RULES_DIR
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / RULES_DIR


def load_declaration(path: str | os.PathLike) -> Declaration:
    """Read one `<rule>.yaml` strictly: an unknown key or a bad value raises ConfigError naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(DECLARATION_KEYS)}")
    unknown = sorted(set(data) - set(DECLARATION_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(DECLARATION_KEYS)}")
    rule = data.get("rule")
    if rule != path.stem:
        raise ConfigError(f"{path}: rule: expected {path.stem!r} (the file's name), got {rule!r}")
    inputs = data.get("inputs") or []
    if not isinstance(inputs, list):
        raise ConfigError(f"{path}: inputs: expected a list, got {inputs!r}")
    for i, name in enumerate(inputs):
        check_choice(f"{path}: inputs[{i}]", name, INPUTS)
    settings = {}
    raw = data.get("settings") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: settings: expected a mapping of name -> {{type, default, ...}}, got {raw!r}")
    reserved = {"name", "method", "rule", "tasks", "fractions", "stream"}
    for name, spec in raw.items():
        where = f"{path}: settings.{name}"
        if name in reserved:
            raise ConfigError(f"{where}: {name!r} is a key of every method entry; choose another name")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(SETTING_KEYS)}, got {spec!r}")
        unknown = sorted(set(spec) - set(SETTING_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SETTING_KEYS)}")
        check_choice(f"{where}.type", spec.get("type"), TYPES)
        choices = spec.get("choices")
        setting = Setting(type=spec["type"], min=spec.get("min"), max=spec.get("max"),
                          choices=tuple(choices) if choices is not None else None, help=str(spec.get("help", "")))
        if "default" in spec:
            setting = dataclasses.replace(setting, default=setting.check(spec["default"], f"{where}.default"))
        settings[name] = setting
    return Declaration(rule=rule, path=path, description=str(data.get("description") or ""), inputs=tuple(inputs),
                       settings=settings)


def declarations(folder: str | os.PathLike | None = None) -> dict[str, Declaration]:
    """Every declared external rule: {rule name: Declaration}, from the `*.yaml` files of `folder`."""
    folder = Path(folder) if folder is not None else rules_folder()
    if not folder.is_dir():
        return {}
    return {d.rule: d for d in (load_declaration(p) for p in sorted(folder.glob("*.yaml")))}


def declaration(entry: MethodEntry, where: str, folder: str | os.PathLike | None = None) -> Declaration:
    """The declaration of the rule an external entry names (ConfigError naming `where`.rule if none)."""
    found = declarations(folder)
    if entry.rule not in found:
        place = folder if folder is not None else rules_folder()
        declared = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"{where}.rule: {entry.rule!r} is not a declared external rule; declared in {place}: "
                          f"{declared} (a rule is declared by <rule>.yaml beside its <rule>.smk)")
    return found[entry.rule]


def resolve_settings(entry: MethodEntry, where: str = "method", folder: str | os.PathLike | None = None) -> dict:
    """The entry's settings checked against its rule's declaration, with the declared defaults filled in;
    errors name `where`.rule or `where`.settings.<name> (`where`: the entry, e.g. config.methods[6])."""
    spec = declaration(entry, where, folder)
    where = f"{where}.settings"
    unknown = sorted(set(entry.settings) - set(spec.settings))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))} for rule {entry.rule!r}; "
                          f"allowed: {', '.join(spec.settings) or 'none'} (declared in {spec.path})")
    resolved = {}
    for name, setting in spec.settings.items():
        if name in entry.settings:
            resolved[name] = setting.check(entry.settings[name], f"{where}.{name}")
        elif setting.required:
            raise ConfigError(f"{where}.{name}: required by rule {entry.rule!r} ({setting.type}"
                              f"{'; ' + setting.help if setting.help else ''}; declared in {spec.path})")
        else:
            resolved[name] = setting.default
    return resolved


def check_entry(config: ExperimentConfig, entry: MethodEntry, where: str) -> None:
    """The study check of one external entry (called by the methods' study check)."""
    resolve_settings(entry, where)


def uses_teacher_outputs(entry: MethodEntry) -> bool:
    return "teacher_outputs" in declaration(entry, f"method {entry.name!r}").inputs


# -- the outputs ---------------------------------------------------------------------------------
def _contract(rule: str) -> str:
    return (f"rule {rule!r} must write <cell>/model (a Hugging Face model directory: save_pretrained of the model "
            "and of the tokenizer) and <cell>/train_summary.json (steps, seconds); README, \"Adding a method\"")


def check_summary(path: Path, rule: str, steps: int) -> dict:
    """The rule's train_summary.json: a mapping with the budget's `steps` and `seconds`, numeric counts."""
    if not path.is_file():
        raise ContractError(f"{path}: missing; {_contract(rule)}")
    try:
        summary = read_json(path)
    except ValueError as e:
        raise ContractError(f"{path}: does not parse as JSON ({e}); {_contract(rule)}") from None
    if not isinstance(summary, dict):
        raise ContractError(f"{path}: expected a JSON object, got {type(summary).__name__}; {_contract(rule)}")
    for key in SUMMARY_REQUIRED:
        if key not in summary:
            raise ContractError(f"{path}: {key!r} is missing; {_contract(rule)}")
    for key in (*SUMMARY_REQUIRED, *SUMMARY_COUNTS):
        value = summary.get(key)
        if key in summary and (isinstance(value, bool) or not isinstance(value, int | float)
                               or not math.isfinite(value) or value < 0):
            raise ContractError(f"{path}: {key}: expected a number >= 0, got {value!r}")
    if summary["steps"] != steps:
        raise ContractError(f"{path}: steps: {summary['steps']!r}, but the study's distillation budget for this "
                            f"task is {steps} optimiser steps (config distill.steps); every method of a cell trains "
                            "for the same budget")
    return summary


def check_model(path: Path, rule: str, student: Path | None):
    """The rule's model directory loads as the suite loads a student, and is of the student's family and
    vocabulary (the student initialisation it started from); returns the loaded Seq2SeqLM."""
    from transformers import AutoConfig

    from xkdbench.models import load_model

    if not path.is_dir():
        raise ContractError(f"{path}: missing (no model directory); {_contract(rule)}")
    try:
        model = load_model(path)
    except Exception as e:  # whatever a broken directory raises: weights, config or tokenizer
        raise ContractError(f"{path}: not a loadable model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            f"{_contract(rule)}") from None
    if student is not None and Path(student).is_dir():
        reference = AutoConfig.from_pretrained(str(student))
        got = model.model.config
        if bool(got.is_encoder_decoder) != bool(reference.is_encoder_decoder) or got.model_type != reference.model_type:
            raise ContractError(f"{path}: a {got.model_type} model, but the student initialisation {student} is "
                                f"{reference.model_type}; {_contract(rule)}")
        vocab = getattr(reference, "vocab_size", None)
        if vocab is not None and got.vocab_size != vocab:
            raise ContractError(f"{path}: vocabulary of {got.vocab_size} tokens, the student initialisation's has "
                                f"{vocab}; the evaluation tokenises with the model's own tokenizer, so it must be "
                                "the student's")
    return model


def check_outputs(model: Path, entry: MethodEntry, steps: int) -> dict:
    """Check a finished external cell's outputs against the contract: its model directory (`model`) and the
    train_summary.json beside it; the student initialisation to compare with is read from the cell's
    inputs/cell.json. Returns the training summary."""
    cell = Path(model).parent
    inputs = cell / CELL_FILE
    student = Path(read_json(inputs)["paths"]["student"]) if inputs.is_file() else None
    check_model(Path(model), entry.rule, student)
    return check_summary(cell / "train_summary.json", entry.rule, steps)
