"""Tasks: summarization (XSum), translation (WMT14 en->de) and reasoning (GSM8K), each from two sources.

    from xkdbench.tasks import get_task, task_names, SPLITS
    task = get_task("translation", source="embedded", difficulty=1, seed=0)
    train = task.load("train", fraction=0.5)        # a datasets.Dataset in the real schema
    task.score(predictions, list(task.load("test")))  # {"bleu": ..., "chrf": ..., "oracle": ...}

``source="embedded"`` (default) generates the data deterministically in the package; ``source="hf"``
reads the real dataset with ``datasets.load_dataset``. See ``xkdbench.tasks.base`` for the interface,
the family modules for each generator and oracle, and ``xkdbench.tasks.hf`` for the real-data splits.
"""
from __future__ import annotations

from typing import Any

from xkdbench.config import register_study_check
from xkdbench.errors import ConfigError
from xkdbench.registry import Registry
from xkdbench.tasks.base import SOURCES, SPLITS, OracleUnavailableError, Task
from xkdbench.tasks.reasoning import ReasoningTask
from xkdbench.tasks.summarization import SummarizationTask
from xkdbench.tasks.translation import TranslationTask

TASKS: Registry[type[Task]] = Registry("task")
TASK_SOURCES: Registry[str] = Registry("source")

for _cls in (SummarizationTask, TranslationTask, ReasoningTask):
    TASKS.register(_cls.name)(_cls)
for _source in SOURCES:
    TASK_SOURCES.register(_source)(_source)


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, source: str = "embedded", **options: Any) -> Task:
    """Build task `name` from `source` ("embedded" or "hf") with `options`.

    Unknown names or sources raise ``UnknownNameError`` (a KeyError) listing the known ones; unknown
    options or bad values raise ``ValueError`` naming the option and what is allowed.
    """
    cls = TASKS.get(name, field="task")
    TASK_SOURCES.get(source, field="source")
    return cls(source, **options)


@register_study_check("tasks")
def check_tasks(config, where: str) -> None:
    """Every task of the study is known, and its generator or dataset accepts its options."""
    for name, task in config.tasks.items():
        if name not in TASKS.names():
            raise ConfigError(f"{where}.tasks: {name!r} is not allowed; allowed: {', '.join(task_names())}")
        try:  # the task checks its own options (sizes, difficulty, dataset ids)
            get_task(name, source=task.source, **task.options)
        except (ValueError, KeyError) as e:
            raise ConfigError(f"{where}.tasks.{name}.options: {e}") from None


__all__ = ["get_task", "task_names", "SPLITS", "SOURCES", "Task", "TASKS", "OracleUnavailableError",
           "SummarizationTask", "TranslationTask", "ReasoningTask"]
