"""The evaluator's temperature sweep on a model whose next-token distribution is known by hand.

The model's output layer is replaced (a forward hook) by one fixed logit vector v: 40 whole-word
tokens with logits 0, -0.4, -0.8, ..., everything else (EOS included) far below. Its samples at
temperature T are then i.i.d. words from softmax(v / T), computed here with numpy, so that:
- at T near 0 every sample is the greedy output (the top word repeated);
- at each temperature the frequency of the top word passes a binomial test against softmax(v / T);
- diversity rises with T (distinct-n up, Self-BLEU down);
- each temperature's diversity numbers are those of its own samples (whitespace n-grams and
  sacrebleu's sentence_bleu called directly).
"""
from __future__ import annotations

import re
from statistics import fmean

import numpy as np
import pytest
import sacrebleu
import torch
from scipy.stats import binomtest

from xkdbench.config import EvaluationConfig
from xkdbench.evaluation import evaluate
from xkdbench.models import ModelSpec, build_model, train_tokenizer
from xkdbench.tasks import get_task

TEMPERATURES = [1e-4, 0.5, 1.0, 2.0, 8.0]
N_WORDS, GAP, SAMPLES, LENGTH = 40, 0.4, 4, 10


@pytest.fixture(scope="module")
def sweep():
    task = get_task("translation", difficulty=0, sizes={"train": 50, "warmup": 5, "validation": 5, "test": 6})
    tokenizer = train_tokenizer(task.training_texts(), 600)
    words = {}  # token id -> its word, for tokens that decode to " word"
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if re.fullmatch(r" [A-Za-z]{2,}", text) and text.strip() not in words.values():
            words[i] = text.strip()
    ids = list(words)[:N_WORDS]
    assert len(ids) == N_WORDS
    model = build_model(ModelSpec(family="llama", d_model=32, n_layers=1, n_heads=2, d_ff=64), tokenizer, seed=0)
    fixed = torch.full((len(tokenizer),), -1e4)
    fixed[ids] = -GAP * torch.arange(N_WORDS, dtype=torch.float32)

    def constant_logits(module, inputs, output):
        return fixed.expand_as(output).clone()

    model.model.lm_head.register_forward_hook(constant_logits)
    examples = list(task.load("test"))
    config = EvaluationConfig(batch_size=8, samples_per_input=SAMPLES, sampling_temperatures=TEMPERATURES)
    metrics, records = evaluate(model, task, examples, config, max_prompt_tokens=48, max_new_tokens=LENGTH, seed=0)
    return metrics, records, [words[i] for i in ids]


def by_hand_distinct(texts, n):
    grams = [tuple(t.split()[i:i + n]) for t in texts for i in range(len(t.split()) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def by_hand_self_bleu(groups):
    return fmean(fmean(sacrebleu.sentence_bleu(h, g[:j] + g[j + 1:]).score for j, h in enumerate(g)) for g in groups)


def test_samples_near_temperature_zero_are_the_greedy_output(sweep):
    _, records, words = sweep
    assert all(r["greedy"] == " ".join([words[0]] * LENGTH) for r in records)
    assert all(r["samples"][f"{TEMPERATURES[0]:g}"] == [r["greedy"]] * SAMPLES for r in records)


@pytest.mark.parametrize("temperature", TEMPERATURES[1:])
def test_words_follow_the_softmax_at_each_temperature(sweep, temperature):
    """240 words per temperature; the top word's count passes a binomial test against softmax(v / T)[0],
    and the count of the 5 most likely words against their total probability."""
    _, records, words = sweep
    drawn = [w for r in records for s in r["samples"][f"{temperature:g}"] for w in s.split()]
    assert len(drawn) == len(records) * SAMPLES * LENGTH and set(drawn) <= set(words)
    logits = -GAP * np.arange(N_WORDS) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    for top in (1, 5):
        count = sum(w in words[:top] for w in drawn)
        assert binomtest(count, len(drawn), probs[:top].sum()).pvalue > 1e-3, (top, count, probs[:top].sum())


def test_diversity_rises_with_the_temperature(sweep):
    metrics, _, _ = sweep
    sampling = [metrics["sampling"][f"{t:g}"] for t in TEMPERATURES]
    for measure in ("distinct_1", "distinct_2"):
        values = [s[measure] for s in sampling]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (measure, values)
    self_bleu = [s["self_bleu"] for s in sampling]
    assert all(a > b for a, b in zip(self_bleu, self_bleu[1:], strict=False)), self_bleu


def test_each_temperatures_numbers_are_those_of_its_own_samples(sweep):
    metrics, records, _ = sweep
    for t in TEMPERATURES:
        key = f"{t:g}"
        groups = [r["samples"][key] for r in records]
        quality = metrics["sampling"][key]
        assert quality["distinct_1"] == pytest.approx(fmean(by_hand_distinct(g, 1) for g in groups))
        assert quality["distinct_2"] == pytest.approx(fmean(by_hand_distinct(g, 2) for g in groups))
        assert quality["self_bleu"] == pytest.approx(by_hand_self_bleu(groups))
