"""Metrics equal the field's libraries; GSM8K answer extraction equals lm-eval's gsm8k filters."""
from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu
import yaml
from rouge_score import rouge_scorer

from xkdbench.tasks import get_task, metrics

PREDICTIONS = ["The cat sat on the mat.", "Police closed the road after a crash on Monday.", "", "running dogs ran"]
REFERENCES = ["A cat was sitting on the mat.", "A crash closed the road for hours on Monday.", "Nothing here.",
              "the dog runs"]


def test_rouge_equals_rouge_score_with_stemming():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: 100 * sum(scorer.score(r, p)[k].fmeasure for p, r in zip(PREDICTIONS, REFERENCES, strict=True)) / 4
                for k in ("rouge1", "rouge2", "rougeL")}
    assert metrics.rouge(PREDICTIONS, REFERENCES) == pytest.approx(expected)
    # stemming is on: "running dogs ran" vs "the dog runs" shares the stems dog and run
    assert scorer.score("the dog runs", "running dogs ran")["rouge1"].fmeasure > 0.5
    assert metrics.sentence_rouge2(PREDICTIONS[0], REFERENCES[0]) == pytest.approx(
        100 * scorer.score(REFERENCES[0], PREDICTIONS[0])["rouge2"].fmeasure)
    assert metrics.rouge(["a b c"], ["a b c"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}


def test_summarization_score_uses_rouge():
    task = get_task("summarization")
    examples = [{"document": "d", "summary": r, "id": str(i)} for i, r in enumerate(REFERENCES)]
    hf = get_task("summarization", source="hf")
    assert hf.score(PREDICTIONS, examples) == pytest.approx(metrics.rouge(PREDICTIONS, REFERENCES))
    assert task.example_scores(PREDICTIONS, examples)[1] == pytest.approx(
        metrics.sentence_rouge2(PREDICTIONS[1], REFERENCES[1]))


def test_bleu_and_chrf_equal_sacrebleu():
    hyps = ["Der Mann hat den Hund gesehen.", "Die Frau liest ein Buch im Park.", "Gestern regnete es."]
    refs = ["Der Mann hat gestern den Hund gesehen.", "Die Frau liest ein Buch im Park.", "Heute scheint die Sonne."]
    scores = metrics.bleu_chrf(hyps, refs)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert 20 < scores["bleu"] < 90 and 30 < scores["chrf"] < 95
    assert metrics.sentence_chrf(hyps[0], refs[0]) == pytest.approx(sacrebleu.sentence_chrf(hyps[0], [refs[0]]).score)
    assert metrics.bleu_chrf(refs, refs)["bleu"] == pytest.approx(100.0)
    task = get_task("translation", source="hf")
    examples = [{"translation": {"de": r, "en": "x"}} for r in refs]
    assert task.score(hyps, examples) == pytest.approx(scores)
    assert task.example_scores(hyps, examples) == pytest.approx([metrics.sentence_chrf(h, r) for h, r in zip(hyps, refs, strict=True)])


# -- GSM8K: agreement with lm-eval's own filters and metric ----------------------------------------
def _lm_eval_gsm8k():
    import lm_eval

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())


def test_our_patterns_are_lm_evals():
    config = _lm_eval_gsm8k()
    filters = {f["name"]: f["filter"][0] for f in config["filter_list"]}
    assert filters["strict-match"]["regex_pattern"] == metrics.GSM8K_STRICT_PATTERN
    assert filters["flexible-extract"]["regex_pattern"] == metrics.GSM8K_FLEXIBLE_PATTERN
    assert filters["flexible-extract"]["group_select"] == -1
    metric = config["metric_list"][0]
    assert tuple(metric["regexes_to_ignore"]) == metrics.GSM8K_IGNORE_REGEXES
    assert metric["ignore_case"] is True and metric["ignore_punctuation"] is False


OUTPUTS = [
    "She pays 3*4 = $<<3*4=12>>12.\n#### 12",
    "#### 1,200",
    "The total is $1,200.",
    "#### -5",
    "The answer is -5.",
    "#### 12.",
    "She has 7 apples and 12 pears",
    "There is no number here",
    "",
    "#### $12",
    "#### 12\n#### 13",
    "It costs 12 dollars. So the answer is 12.00",
    "####12",
    "So 5 + 7 = 12.\n#### 12 apples",
    "Answer: 3.5",
]
REFERENCE_ANSWERS = ["2*6 = <<2*6=12>>12\n#### 12", "#### 1200", "#### 1200", "#### -5", "#### -5", "#### 12",
                     "#### 12", "#### 3", "#### 3", "#### 12", "#### 12", "#### 12", "#### 12", "#### 12", "#### 3.5"]


def test_extraction_and_accuracy_equal_lm_eval():
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    config = _lm_eval_gsm8k()
    metric_kwargs = {k: v for k, v in config["metric_list"][0].items() if k not in ("metric", "aggregation",
                                                                                   "higher_is_better")}
    docs = [{"question": "q", "answer": a} for a in REFERENCE_ANSWERS]
    for spec in config["filter_list"]:
        regex = spec["filter"][0]
        lm_filter = RegexFilter(regex_pattern=regex["regex_pattern"], group_select=regex.get("group_select", 0))
        extracted = list(TakeFirstFilter().apply(lm_filter.apply([[o] for o in OUTPUTS], docs), docs))
        ours = [metrics.gsm8k_extract_strict(o) if spec["name"] == "strict-match" else metrics.gsm8k_extract_flexible(o)
                for o in OUTPUTS]
        assert ours == extracted, spec["name"]
        lm_correct = [exact_match_hf_evaluate(predictions=[e], references=[r], **metric_kwargs)["exact_match"]
                      for e, r in zip(extracted, REFERENCE_ANSWERS, strict=True)]
        our_correct = [float(metrics.gsm8k_correct(e, r)) for e, r in zip(ours, REFERENCE_ANSWERS, strict=True)]
        assert our_correct == lm_correct, spec["name"]
    # known values, so this test fails if both sides change together
    strict = [metrics.gsm8k_correct(metrics.gsm8k_extract_strict(o), r) for o, r in zip(OUTPUTS, REFERENCE_ANSWERS, strict=True)]
    flexible = [metrics.gsm8k_correct(metrics.gsm8k_extract_flexible(o), r) for o, r in zip(OUTPUTS, REFERENCE_ANSWERS, strict=True)]
    assert strict == [True, True, False, True, False, True, False, False, False, False, True, False, False, True, False]
    assert flexible == [True, True, True, True, True, True, True, False, False, True, False, False, True, True, True]
    assert metrics.gsm8k_extract_strict("nothing") == "[invalid]" and metrics.gsm8k_extract_flexible("") == "[invalid]"


def test_reasoning_accuracy():
    task = get_task("reasoning", source="hf")
    examples = [{"question": "q", "answer": a} for a in REFERENCE_ANSWERS]
    scores = task.score(OUTPUTS, examples)
    assert scores == {"accuracy_strict": pytest.approx(6 / 15), "accuracy_flexible": pytest.approx(11 / 15)}
    assert task.example_scores(OUTPUTS[:3], examples[:3]) == [1.0, 1.0, 0.0]


def test_annotation_validity():
    assert metrics.annotation_validity("a <<3*4=12>> b <<12+10=23>> <<10/4=2.5>> <<2-7=-5>>") == (3, 4)
    assert metrics.annotation_validity("no annotations") == (0, 0)
    assert metrics.annotation_validity("<<__import__('os')=1>> <<1,000+1=1001>>") == (1, 2)
    assert metrics.safe_eval("2**10") is None and metrics.safe_eval("(1+2)*3") == 9.0
