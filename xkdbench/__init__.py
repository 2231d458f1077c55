"""xkdbench: a benchmark for knowledge distillation of language models."""

__version__ = "0.1.0"
