"""xkdbench: a benchmark for knowledge distillation of language models."""

__version__ = "0.1.0"

# The layers that check a study beyond its own sections register those checks when imported
# (xkdbench.config.register_study_check); importing them here makes every load of a config complete.
from xkdbench import methods as _methods  # noqa: E402,F401
from xkdbench import tasks as _tasks  # noqa: E402,F401  (first: a study's tasks are checked first)
from xkdbench.reporting import settings as _report_settings  # noqa: E402,F401
