"""Self-BLEU and distinct-n against hand computations and against sacrebleu called the plain way."""
from __future__ import annotations

import math
import random
from statistics import fmean

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


# -- self-BLEU equals sacrebleu's sentence_bleu called the plain way, to the last bit ----------------
def _plain_self_bleu(samples):
    """The definition: every sample against the others with sacrebleu.sentence_bleu, mean per input, mean."""
    per_input = []
    for group in samples:
        scores = [sacrebleu.sentence_bleu(h, [*group[:j], *group[j + 1:]]).score for j, h in enumerate(group)]
        per_input.append(fmean(scores))
    return fmean(per_input)


EDGE_GROUPS = [
    ["", "", ""],                                                   # empty samples
    ["", "der Hund", "der Hund bellt"],                             # an empty hypothesis and reference
    ["   ", "der Hund bellt ", "der Hund bellt\t"],                  # whitespace only, trailing whitespace
    ["der Hund bellt.", "der Hund bellt.", "der Hund bellt."],      # repeated texts
    ["a a a a a a", "a a a", "a"],                                  # clipped counts, lengths differ
    ["one two", "one two three four", "one two three four five six"],  # closest reference length, ties
    ["Die Straße ist schön, oder?", "Die Strasse ist schön!", "Über die Brücke — schnell."],
    ["日本語のテキスト です", "日本語 の テキスト", "テキスト です"],       # unicode without word spaces
    ["emoji 🙂 here 🙂", "emoji 🙂 there", "😀😀😀"],
    ["3.5 apples, 1,200 pears - 4-5 days", "3.5 apples 1,200 pears", "3 . 5 apples"],  # 13a numbers and dashes
    ["Tom &amp; Jerry &lt;3", "Tom & Jerry <3", "line-\nbreak <skipped> here"],        # 13a entity rules
    ["He said \"hi\" (twice) [ok] {x}", "He said hi twice ok x", "said: hi; twice/ok"],
    ["x", "y"],                                                      # k = 2
    ["a b c d e f g h", "a b c d e f g h i", "h g f e d c b a", "a b c d", "a c e g", "b d f h"],  # k = 6
]


def test_self_bleu_equals_plain_sentence_bleu_on_edge_cases():
    for group in EDGE_GROUPS:
        assert self_bleu([group]) == _plain_self_bleu([group]), group
    assert self_bleu(EDGE_GROUPS) == _plain_self_bleu(EDGE_GROUPS)


def test_self_bleu_equals_plain_sentence_bleu_on_random_texts():
    rng = random.Random(0)
    vocabulary = ["der", "die", "Hund", "Katze", "sieht", "hat", "gesehen", ".", ",", "5", "3.5", "#", "<<", "ä"]
    groups = []
    for _ in range(150):
        k = rng.randint(2, 5)
        base = [rng.choice(vocabulary) for _ in range(rng.randint(0, 25))]
        group = []
        for _ in range(k):  # samples of one input share much of their text, as real ones do
            words = [w if rng.random() < 0.7 else rng.choice(vocabulary) for w in base][:rng.randint(0, len(base))]
            group.append(rng.choice(["", " "]).join(words))
        groups.append(group)
    assert [self_bleu([g]) for g in groups] == [_plain_self_bleu([g]) for g in groups]
    assert self_bleu(groups) == _plain_self_bleu(groups)
