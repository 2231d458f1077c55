"""Self-BLEU and distinct-n against hand computations."""
from __future__ import annotations

import math

import pytest
import sacrebleu

from xkdbench.evaluation.diversity import distinct_n, distinct_n_per_input, self_bleu


def test_identical_samples_give_100():
    assert self_bleu([["the cat sat on the mat"] * 3, ["a b c d e f", "a b c d e f"]]) == pytest.approx(100.0)


def test_disjoint_samples_give_about_0():
    assert self_bleu([["a b c d e", "f g h i j", "k l m n o"]]) == pytest.approx(0.0, abs=1e-6)


def test_one_pair_matches_bleu_by_hand():
    # hypothesis vs reference "the cat is on the mat": 1..4-gram matches 5/6, 3/5, 1/4, 0/3; sacrebleu's
    # default exp smoothing turns the zero 4-gram precision into 1 / (2 * 3); equal lengths -> BP = 1.
    by_hand = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert sacrebleu.sentence_bleu("the cat sat on the mat", ["the cat is on the mat"]).score == pytest.approx(by_hand)
    # with two samples, each is scored against the other; BLEU is not symmetric in general, here it is
    assert self_bleu([["the cat sat on the mat", "the cat is on the mat"]]) == pytest.approx(by_hand)


def test_matches_sacrebleu_leave_one_out_averaged_per_input_then_over_inputs():
    first = ["the cat sat on the mat", "the cat is on the mat", "a dog sat on a mat"]
    second = ["one two three four", "one two three five"]

    def bleu(hypothesis, references):
        return sacrebleu.sentence_bleu(hypothesis, references).score

    first_mean = (bleu(first[0], [first[1], first[2]]) + bleu(first[1], [first[0], first[2]])
                  + bleu(first[2], [first[0], first[1]])) / 3
    second_mean = (bleu(second[0], [second[1]]) + bleu(second[1], [second[0]])) / 2
    assert self_bleu([first, second]) == pytest.approx((first_mean + second_mean) / 2)
    assert self_bleu([first]) == pytest.approx(first_mean)


@pytest.mark.parametrize("samples", [[["only one"]], [["a b", "a b"], []], [], ["a b c", "d e f"]])
def test_self_bleu_needs_two_samples_per_input(samples):
    with pytest.raises(ValueError, match="self_bleu needs"):
        self_bleu(samples)


def test_distinct_n_by_hand():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)  # a b a b a b c: 7 tokens, {a, b, c}
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc (no n-gram across texts)
    assert distinct_n(texts, 3) == pytest.approx(1.0)  # aba bab | abc
    assert distinct_n(texts, 5) == 0.0  # no 5-grams
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["  spaced\tout \n words  "], 1) == 1.0  # any whitespace separates tokens


def test_distinct_n_per_input_is_the_mean_over_inputs():
    samples = [["a a", "a a"], ["x y", "z w"], ["p q r", "p q s"]]
    # unigrams: 1/4, 4/4, {p, q, r, s} = 4/6
    assert distinct_n_per_input(samples, 1) == pytest.approx((1 / 4 + 1 + 4 / 6) / 3)
    assert not math.isclose(distinct_n_per_input(samples, 1), distinct_n([t for g in samples for t in g], 1))


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_distinct_n_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        distinct_n(["a b"], n)


def test_distinct_n_errors():
    with pytest.raises(ValueError, match="list of texts"):
        distinct_n("a b c", 1)
    with pytest.raises(ValueError, match="at least one input"):
        distinct_n_per_input([], 1)
