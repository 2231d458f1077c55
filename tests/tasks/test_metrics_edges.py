"""Edges of the task metrics, against hand values and the libraries' own scorers: stemming in ROUGE,
mismatched lengths, answers that are not text, and the calculator-annotation checks (unary minus, the
length limit, currency and thousands separators, the relative tolerance)."""
from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from xkdbench.tasks.metrics import (
    INVALID,
    annotation_validity,
    bleu_chrf,
    gsm8k_accuracy,
    gsm8k_extract_flexible,
    gsm8k_extract_strict,
    parse_number,
    rouge,
    safe_eval,
)


def test_rouge_stems_words_as_rouge_score_does():
    prediction, reference = "the cats were running quickly", "a cat runs quick"
    reference_scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: 100 * v.fmeasure for k, v in reference_scorer.score(reference, prediction).items()}
    assert rouge([prediction], [reference]) == pytest.approx(expected)
    # stemmed, "cat" and "run" match (Porter leaves "quickli" and "quick" apart): P 2/5, R 2/4, F 4/9;
    # unstemmed, no word matches
    assert expected["rouge1"] == pytest.approx(400 / 9)
    assert rouge_scorer.RougeScorer(["rouge1"]).score(reference, prediction)["rouge1"].fmeasure == 0


@pytest.mark.parametrize("metric", [rouge, bleu_chrf, gsm8k_accuracy])
def test_predictions_and_references_must_pair_up(metric):
    with pytest.raises(ValueError, match=r"got 2 predictions for 1 references|zip\(\) argument 2 is shorter"):
        metric(["a b", "c d"], ["a b"])


def test_an_answer_that_is_not_text_is_invalid():
    assert gsm8k_extract_strict(None) == INVALID and gsm8k_extract_flexible(None) == INVALID


@pytest.mark.parametrize("expression,value", [
    ("-3 + 5", 2.0), ("2 * -(1 + 2)", -6.0), ("$1,200 / 4", 300.0), ("(7 - 2) * 3", 15.0),
    ("1 / 0", None), ("2 ** 3", None), ("x + 1", None), ("", None), ("True + 1", None),
])
def test_safe_eval_is_arithmetic_only(expression, value):
    assert safe_eval(expression) == value


def test_safe_eval_refuses_expressions_over_100_characters():
    at_limit = "1+" * 49 + "10"  # 100 characters
    assert len(at_limit) == 100 and safe_eval(at_limit) == 59.0
    assert safe_eval(at_limit + "0") is None


@pytest.mark.parametrize("text,value", [
    ("1,200", 1200.0), ("$5", 5.0), ("3.", 3.0), ("3...", 3.0), (".5", 0.5), (" -2.25 ", -2.25), ("five", None),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_annotations_are_valid_within_a_relative_tolerance_of_one_millionth():
    # large values: 1e-6 relative (3.33 here), so a result rounded to cents is valid
    assert annotation_validity("so <<10000000/3=3333333.33>> each") == (1, 1)
    # small values: 1e-6 absolute, so 1.5e-6 off is not valid
    assert annotation_validity("<<1/2=0.5000015>> and <<1/2=0.5000005>>") == (1, 2)
    assert annotation_validity("<<-4+1=-3>> <<2*3=7>> <<a=1>>") == (1, 3)
