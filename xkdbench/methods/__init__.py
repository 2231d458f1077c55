"""Distillation methods, one per file, registered by name.

Importing this package imports every module in it, which registers every built-in method: a new
method is a new file here with a config dataclass and a `Method` subclass decorated with
`@register("key")`, and nothing else to edit.
"""
import importlib
import pkgutil

from xkdbench.methods.base import METHODS, Method, Paper, method_config, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "Paper", "method_config", "register"]
