"""Evaluation: decoding, task metrics, oracle scores, diversity."""
from xkdbench.evaluation.diversity import distinct_n, distinct_n_per_input, self_bleu
from xkdbench.evaluation.evaluate import decode_all, evaluate

__all__ = ["decode_all", "distinct_n", "distinct_n_per_input", "evaluate", "self_bleu"]
