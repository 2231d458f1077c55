"""The `report:` section of an experiment config, loaded strictly.

Keys (all optional):

- ``headline_fraction`` (default 1.0, or the largest configured fraction when 1.0 is not among
  ``fractions``): the data fraction of the main table, win rates, GKD grid and performance/diversity figure.
- ``win_rate_pairs`` (default: every method variant whose registry key starts with ``xkd`` against every
  other variant; none when there is no such variant): a list of ``[A, B]`` name pairs. A and B are method
  variant names, or ``teacher`` / ``student_init``.
- ``gkd_grid_task`` (default ``reasoning``): the task of the GKD grid (skipped when it is not configured).
- ``claims`` (default none): the source papers' claims to test, each ``{claim: text, a: A, b: B}`` with
  optional ``tasks`` (default: every task where both ran), ``fraction`` (default the headline fraction)
  ``measure`` (``score``: the per-example task metric; ``oracle``; ``time_to_target``: the training
  seconds until the validation NLL first reaches the level both runs of a seed reach, one value per
  training run, lower is better; or a list of these; default ``[score, oracle]``: every claim is decided
  by the task's metric and by the oracle, which tasks without an oracle skip) and ``control`` (default
  false). A per-example measure is
  checked as "A scores higher than B" with an interval over the (seed, test input) matrix that covers
  both training runs and inputs (``xkdbench.reporting.stats``); ``time_to_target`` as "A takes less
  time than B" with a t-interval over the seeds' paired differences.
  ``control: true`` marks the A/A control: A and B must be the same method with the same settings,
  differing only in their ``stream`` offset, and the claim text must say "A/A control".
- ``validation_curves`` (default none): method variant names whose validation NLL is drawn against
  training seconds (figures/validation_curves), at the headline fraction, one line per seed.
- ``reference_method`` (default ``sft`` when configured, else the first variant): the method the paired
  data-efficiency figure subtracts, seed by seed (figures/data_efficiency_paired).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xkdbench.config import register_study_check
from xkdbench.validation import ConfigError

if TYPE_CHECKING:
    from xkdbench.config import ExperimentConfig

REFERENCES = ("teacher", "student_init")
KEYS = ("headline_fraction", "win_rate_pairs", "gkd_grid_task", "claims", "validation_curves", "reference_method")
CLAIM_KEYS = ("claim", "a", "b", "tasks", "fraction", "measure", "control")
# claim measure -> column: per-example (higher is better) or, for the time measure, per cell (lower is better)
MEASURES = {"score": "greedy_score", "oracle": "greedy_oracle", "time_to_target": "time_to_target"}
DEFAULT_MEASURES = ("score", "oracle")  # a claim is decided by the task's metric and by the oracle
PER_CELL_MEASURES = ("time_to_target",)


@dataclass(frozen=True)
class Claim:
    """'A scores higher than B' on `tasks` at data `fraction`, by `measure` (a per-example column)."""

    text: str
    a: str
    b: str
    tasks: tuple[str, ...]
    fraction: float
    measure: str
    control: bool = False  # the A/A control: must come out inconclusive


@dataclass(frozen=True)
class ReportSettings:
    headline_fraction: float
    win_rate_pairs: tuple[tuple[str, str], ...]
    gkd_grid_task: str
    claims: tuple[Claim, ...] = ()
    validation_curves: tuple[str, ...] = ()
    reference_method: str | None = None


@register_study_check("report")
def check_report(config: ExperimentConfig, where: str) -> None:
    """The report section names methods, tasks and fractions of the study: check them at load time."""
    report_settings(config)


def report_settings(config: ExperimentConfig) -> ReportSettings:
    """Resolve `config.report` against the study; a bad key or value raises ConfigError naming it."""
    report = dict(config.report or {})
    where = "config.report"
    _no_unknown_keys(report, KEYS, where)
    names = [m.name for m in config.methods]
    clash = sorted(set(names) & set(REFERENCES))
    if clash:
        raise ConfigError(f"config.methods: variant name(s) {clash} are reserved for the reference models")

    fractions = [float(f) for f in config.fractions]
    if "headline_fraction" in report:
        fraction = _configured_fraction(report["headline_fraction"], fractions, f"{where}.headline_fraction")
    else:
        fraction = 1.0 if 1.0 in fractions or not fractions else max(fractions)
    for task in config.tasks:  # the main table, win rates and grid read every task at this fraction
        if fraction not in config.task_fractions(task):
            raise ConfigError(f"config.tasks.{task}.fractions: the report's headline fraction {fraction:g} is missing "
                              f"(the main table reads every task there); add it, or set {where}.headline_fraction")

    if "win_rate_pairs" in report:
        raw = report["win_rate_pairs"] or []
        if not isinstance(raw, list):
            raise ConfigError(f"{where}.win_rate_pairs: expected a list of [A, B] pairs, got {raw!r}")
        pairs = []
        allowed = names + list(REFERENCES)
        for i, pair in enumerate(raw):
            if not isinstance(pair, list | tuple) or len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(f"{where}.win_rate_pairs[{i}]: expected two different names [A, B], got {pair!r}")
            for name in pair:
                if name not in allowed:
                    raise ConfigError(f"{where}.win_rate_pairs[{i}]: {name!r} is not a method variant; "
                                      f"allowed: {', '.join(allowed)}")
            pairs.append((str(pair[0]), str(pair[1])))
    else:
        xkd = [m.name for m in config.methods if m.method.startswith("xkd")]
        pairs = [(a, b) for a in xkd for b in names if b != a]

    task = report.get("gkd_grid_task", "reasoning")
    if not isinstance(task, str):
        raise ConfigError(f"{where}.gkd_grid_task: expected a task name, got {task!r}")
    claims = tuple(claim for i, item in enumerate(_list(report.get("claims"), f"{where}.claims"))
                   for claim in _claim(config, item, f"{where}.claims[{i}]", fraction, names + list(REFERENCES)))
    curves = _list(report.get("validation_curves"), f"{where}.validation_curves")
    for i, name in enumerate(curves):
        if name not in names:
            raise ConfigError(f"{where}.validation_curves[{i}]: {name!r} is not a method variant; "
                              f"allowed: {', '.join(names)}")
    reference = report.get("reference_method", "sft" if "sft" in names else (names[0] if names else None))
    if reference is not None and reference not in names:
        raise ConfigError(f"{where}.reference_method: {reference!r} is not a method variant; "
                          f"allowed: {', '.join(names)}")
    return ReportSettings(fraction, tuple(pairs), task, claims, tuple(curves), reference)


def _no_unknown_keys(mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")


def _configured_fraction(value, fractions: list[float], where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) not in fractions:
        raise ConfigError(f"{where}: {value!r} is not a configured fraction; "
                          f"allowed: {', '.join(f'{f:g}' for f in fractions)}")
    return float(value)


def _list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return value


def _claim(config: ExperimentConfig, item, where: str, headline_fraction: float,
           allowed: list[str]) -> tuple[Claim, ...]:
    """One Claim per measure of the entry (default: by score and by oracle)."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with keys claim, a, b, got {item!r}")
    _no_unknown_keys(item, CLAIM_KEYS, where)
    for key in ("claim", "a", "b"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ConfigError(f"{where}.{key}: required (a non-empty string)")
    for key in ("a", "b"):
        if item[key] not in allowed:
            raise ConfigError(f"{where}.{key}: {item[key]!r} is not a method variant; allowed: {', '.join(allowed)}")
    if item["a"] == item["b"]:
        raise ConfigError(f"{where}: a and b must differ, both are {item['a']!r}")
    fraction = _configured_fraction(item.get("fraction", headline_fraction), [float(f) for f in config.fractions],
                                    f"{where}.fraction")
    # without `tasks`, the claim is checked on every task that runs at its fraction
    tasks = (_list(item.get("tasks"), f"{where}.tasks")
             or [t for t in config.tasks if fraction in config.task_fractions(t)])
    if not tasks:
        raise ConfigError(f"{where}.fraction: no task of the study runs at {fraction:g} (tasks.<task>.fractions)")
    for task in tasks:
        if task not in config.tasks:
            raise ConfigError(f"{where}.tasks: {task!r} is not a task of the study; allowed: {', '.join(config.tasks)}")
        if fraction not in config.task_fractions(task):
            raise ConfigError(f"{where}.fraction: {task} does not run at {fraction:g} (tasks.{task}.fractions); "
                              f"allowed there: {', '.join(f'{f:g}' for f in config.task_fractions(task))}")
    measures = item.get("measure", list(DEFAULT_MEASURES))
    measures = [measures] if isinstance(measures, str) else measures
    if not isinstance(measures, list) or not measures:
        raise ConfigError(f"{where}.measure: expected one of {', '.join(MEASURES)} or a non-empty list of them, "
                          f"got {measures!r}")
    for measure in measures:
        if measure not in MEASURES:
            raise ConfigError(f"{where}.measure: {measure!r} is not allowed; allowed: {', '.join(MEASURES)}")
    if len(set(measures)) != len(measures):
        raise ConfigError(f"{where}.measure: {measures!r} lists a measure twice")
    control = item.get("control", False)
    if not isinstance(control, bool):
        raise ConfigError(f"{where}.control: expected true or false, got {control!r}")
    if control:
        _check_control(config, item, where)
    return tuple(Claim(item["claim"], item["a"], item["b"], tuple(tasks), fraction, MEASURES[measure], control)
                 for measure in measures)


def _check_control(config: ExperimentConfig, item: dict, where: str) -> None:
    """An A/A control compares one method with itself: same key and settings, another stream."""
    if "A/A control" not in item["claim"]:
        raise ConfigError(f"{where}.claim: a control's text must say 'A/A control', got {item['claim']!r}")
    names = {m.name: m for m in config.methods}
    if item["a"] not in names or item["b"] not in names:
        raise ConfigError(f"{where}: a control compares two method variants, not a reference model")
    a, b = names[item["a"]], names[item["b"]]
    if (a.method, a.settings) != (b.method, b.settings):  # either may run on part of the grid only
        raise ConfigError(f"{where}: a control's variants {a.name!r} and {b.name!r} must have the same method "
                          "and settings")
    if a.stream == b.stream:
        raise ConfigError(f"{where}: a control's variants {a.name!r} and {b.name!r} have the same stream "
                          f"({a.stream}); give one of them another `stream` so their samples are independent")
