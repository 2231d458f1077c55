"""Distillation methods, one per file, registered by name.

Importing this package imports every module in it, which registers every built-in method: a new
method is a new file here with a config dataclass and a `Method` subclass decorated with
`@register("key")`, and nothing else to edit.
"""
import importlib
import pkgutil

from xkdbench.config import EXTERNAL, register_study_check
from xkdbench.external import check_entry as check_external
from xkdbench.methods.base import FIXED, METHODS, SAMPLED, Method, Paper, method_config, register
from xkdbench.validation import ConfigError, check_choice

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


@register_study_check("methods")
def check_methods(config, where: str) -> None:
    """Each method entry names a registered method (or `external`, a rule: xkdbench.external), its settings
    are valid, and the method accepts the distillation budget of every task it runs on."""
    for i, entry in enumerate(config.methods):
        if entry.external:  # trained by a Snakemake rule: its settings are checked against the rule's declaration
            check_external(config, entry, f"{where}.methods[{i}]")
            continue
        check_choice(f"{where}.methods[{i}].method", entry.method, [*METHODS.names(), EXTERNAL])
        settings = method_config(entry.method, entry.settings, f"{where}.methods[{i}].settings")
        cls = METHODS.get(entry.method)
        for task in (t for t in config.tasks if entry.runs_on(t)):
            cls.check_training(settings, config.training("distill", task),
                               f"{where}.tasks.{task}.distill (or {where}.distill)")
            source = config.task(task).source
            if cls.needs_oracle(settings) and source != "embedded":
                raise ConfigError(
                    f"{where}.methods[{i}] ({entry.name}) scores its training texts with the task's oracle, which only "
                    f"embedded tasks have; {where}.tasks.{task}.source is {source!r}. Restrict the variant with "
                    f"`tasks:` to embedded tasks, or label its preference pairs by the teacher")

__all__ = ["FIXED", "METHODS", "SAMPLED", "Method", "Paper", "method_config", "register"]
