"""Diversity of sampled outputs: self-BLEU and distinct-n.

Both read lists of decoded strings, so they apply to any task. Self-BLEU is on sacrebleu's 0-100 scale
and lower means more diverse; distinct-n is a fraction in [0, 1] and higher means more diverse.
"""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from sacrebleu.metrics import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams


@functools.cache
def _sentence_bleu() -> BLEU:
    """The metric ``sacrebleu.sentence_bleu`` builds on every call (default arguments), built once, so that
    its tokenizer's cache of tokenised lines is kept across calls."""
    return BLEU(lowercase=False, force=False, tokenize=BLEU.TOKENIZER_DEFAULT, smooth_method="exp",
                smooth_value=None, effective_order=True)


def _ngram_counts(text: str) -> tuple[Counter, int]:
    """A segment's n-gram counts and length, preprocessed as BLEU does it (trailing whitespace stripped,
    then its tokenizer)."""
    metric = _sentence_bleu()
    return extract_all_word_ngrams(metric.tokenizer(text.rstrip()), 1, metric.max_ngram_order)


def _bleu_from_counts(hypothesis: tuple[Counter, int], references: list[tuple[Counter, int]]) -> float:
    """``sacrebleu.sentence_bleu(hypothesis, references).score`` from n-gram counts computed beforehand.

    Self-BLEU scores each of k samples against the k - 1 others, so every sample is a reference k - 1
    times; sentence_bleu would tokenise it and count its n-grams each time. The statistics are those of
    sacrebleu's BLEU (an n-gram's match count is clipped at the most any one reference has; the reference
    length is the one closest to the hypothesis length, the shorter on a tie); the score is the library's
    ``BLEU.compute_bleu``.
    """
    metric = _sentence_bleu()
    hyp_ngrams, hyp_len = hypothesis
    ref_max: dict[tuple[str, ...], int] = {}
    for ngrams, _ in references:
        for ngram, count in ngrams.items():
            if count > ref_max.get(ngram, 0):
                ref_max[ngram] = count
    ref_len = min((length for _, length in references), key=lambda length: (abs(hyp_len - length), length))
    correct = [0] * metric.max_ngram_order
    total = [0] * metric.max_ngram_order
    for ngram, count in hyp_ngrams.items():
        total[len(ngram) - 1] += count
        correct[len(ngram) - 1] += min(count, ref_max.get(ngram, 0))
    return metric.compute_bleu(correct, total, hyp_len, ref_len, smooth_method=metric.smooth_method,
                               smooth_value=metric.smooth_value, effective_order=metric.effective_order,
                               max_ngram_order=metric.max_ngram_order).score


def self_bleu(samples: Sequence[Sequence[str]]) -> float:
    """Mean self-BLEU over inputs, 0-100 (lower = more diverse).

    ``samples[i]`` holds the k >= 2 samples drawn for input i. Each sample is scored with
    ``sacrebleu.sentence_bleu`` (default settings: 13a tokenizer, exp smoothing) against the other k - 1
    samples of the same input as references; scores are averaged over the samples of an input, then
    over inputs (every input weighs the same, whatever its k). The scores equal sentence_bleu's to the
    last bit; each sample's n-grams are counted once rather than once per pairing.
    """
    if not samples:
        raise ValueError("self_bleu needs at least one input, got none")
    per_input = []
    for index, group in enumerate(samples):
        if isinstance(group, str) or len(group) < 2:
            raise ValueError(f"self_bleu needs >= 2 samples per input (a list of strings); input {index} has "
                             f"{1 if isinstance(group, str) else len(group)}")
        counts = [_ngram_counts(text) for text in group]
        scores = [_bleu_from_counts(hypothesis, [*counts[:j], *counts[j + 1:]])
                  for j, hypothesis in enumerate(counts)]
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
