"""Diversity of sampled outputs: self-BLEU and distinct-n.

Both read lists of decoded strings, so they apply to any task. Self-BLEU is on sacrebleu's 0-100 scale
and lower means more diverse; distinct-n is a fraction in [0, 1] and higher means more diverse.
"""
from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

import sacrebleu


def self_bleu(samples: Sequence[Sequence[str]]) -> float:
    """Mean self-BLEU over inputs, 0-100 (lower = more diverse).

    ``samples[i]`` holds the k >= 2 samples drawn for input i. Each sample is scored with
    ``sacrebleu.sentence_bleu`` (default settings: 13a tokenizer, exp smoothing) against the other k - 1
    samples of the same input as references; scores are averaged over the samples of an input, then
    over inputs (every input weighs the same, whatever its k).
    """
    if not samples:
        raise ValueError("self_bleu needs at least one input, got none")
    per_input = []
    for index, group in enumerate(samples):
        if isinstance(group, str) or len(group) < 2:
            raise ValueError(f"self_bleu needs >= 2 samples per input (a list of strings); input {index} has "
                             f"{1 if isinstance(group, str) else len(group)}")
        scores = [
            sacrebleu.sentence_bleu(hypothesis, [*group[:j], *group[j + 1:]]).score
            for j, hypothesis in enumerate(group)
        ]
        per_input.append(fmean(scores))
    return fmean(per_input)


def _ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    tokens = text.split()
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over the whitespace tokens of all ``texts``.

    n-grams are taken within each text (never across two texts) and pooled; 0.0 if there are none.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(texts, str):
        raise ValueError("distinct_n takes a list of texts, got a single string")
    grams = [gram for text in texts for gram in _ngrams(text, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_n_per_input(samples: Sequence[Sequence[str]], n: int) -> float:
    """Mean over inputs of ``distinct_n`` of that input's samples (diversity among samples of one input)."""
    if not samples:
        raise ValueError("distinct_n_per_input needs at least one input, got none")
    return fmean(distinct_n(group, n) for group in samples)
