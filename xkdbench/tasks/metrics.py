"""Task metrics, computed with the field's own libraries.

Scales: ROUGE, BLEU and chrF are on the 0-100 scale (as lm-eval and sacrebleu report them);
accuracies are fractions in [0, 1].

- Summarization: ROUGE-1/2/L F-measure from ``rouge_score`` with stemming (``rouge1``, ``rouge2``,
  ``rougeL``), the mean over examples x 100.
- Translation: corpus BLEU and chrF from ``sacrebleu`` (``bleu``, ``chrf``), default settings (13a
  tokenisation), as lm-eval's ``bleu``/``chrf`` metrics use them.
- Reasoning: answer accuracy parsed exactly as lm-eval's ``gsm8k`` task does it:
  ``accuracy_strict`` reads the number after ``#### `` (regex ``#### (\\-?[0-9\\.\\,]+)``, first match);
  ``accuracy_flexible`` takes the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)``. Both are compared to
  the reference answer by exact match after removing ``,``, ``$``, everything up to ``#### `` and a
  trailing ``.``, ignoring case. An output with no match is ``[invalid]`` and counts as wrong.
"""
from __future__ import annotations

import ast
import functools
import operator
import re

# -- ROUGE ----------------------------------------------------------------------------------------
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _MemoStemmer:
    """nltk's Porter stemmer, which rouge-score's default tokenizer uses, remembering every word's stem:
    stemming is most of ROUGE's time, and outputs and references repeat a small vocabulary."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)


class _StemmingTokenizer:
    """rouge-score's tokenisation with ``use_stemmer=True`` (its ``tokenize.tokenize`` and the Porter
    stemmer), with the stems remembered."""

    def __init__(self):
        from rouge_score import tokenize

        self._tokenize = tokenize.tokenize
        self._stemmer = _MemoStemmer()

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize(text, self._stemmer)


@functools.cache
def _rouge_scorers():
    """(ROUGE-1/2/L scorer, ROUGE-2 scorer), built once and sharing one tokenizer."""
    from rouge_score import rouge_scorer

    tokenizer = _StemmingTokenizer()
    # The ROUGE-2 scorer serves per-example scores: it skips the LCS table that ROUGE-L needs.
    return (rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer),
            rouge_scorer.RougeScorer(["rouge2"], tokenizer=tokenizer))


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure x 100 (keys rouge1, rouge2, rougeL)."""
    scorer = _rouge_scorers()[0]
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = len(predictions)
    return {key: 100.0 * value / n for key, value in totals.items()}


def sentence_rouge2(prediction: str, reference: str) -> float:
    """ROUGE-2 F-measure of one prediction x 100."""
    return 100.0 * _rouge_scorers()[1].score(reference, prediction)["rouge2"].fmeasure


# -- BLEU / chrF ----------------------------------------------------------------------------------
@functools.cache
def _bleu_chrf_metrics():
    """sacrebleu's BLEU and chrF with the settings of corpus_bleu, corpus_chrf and sentence_chrf, built
    once: sacrebleu's tokenizer caches tokenised lines per metric object, and a reference is scored once
    per greedy output and once per sample."""
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF()


def bleu_chrf(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults, one reference per segment)."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    bleu, chrf = _bleu_chrf_metrics()
    return {
        "bleu": float(bleu.corpus_score(predictions, [references]).score),
        "chrf": float(chrf.corpus_score(predictions, [references]).score),
    }


def sentence_chrf(prediction: str, reference: str) -> float:
    return float(_bleu_chrf_metrics()[1].sentence_score(prediction, [reference]).score)


# -- GSM8K answer extraction (lm-eval's gsm8k task) -----------------------------------------------
GSM8K_STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE_REGEXES = (",", "\\$", "(?s).*#### ", "\\.$")
INVALID = "[invalid]"
_STRICT = re.compile(GSM8K_STRICT_PATTERN)
_FLEXIBLE = re.compile(GSM8K_FLEXIBLE_PATTERN)
_IGNORE = tuple(re.compile(pattern) for pattern in GSM8K_IGNORE_REGEXES)


def _regex_extract(text: str, regex: re.Pattern, group_select: int) -> str:
    """lm_eval.filters.extraction.RegexFilter for one response."""
    matches = regex.findall(text if isinstance(text, str) else "")
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        found = [m for m in match if m]
        match = found[0] if found else INVALID
    return match.strip()


def gsm8k_extract_strict(text: str) -> str:
    """The number after the first ``#### `` (lm-eval's strict-match filter), or ``[invalid]``."""
    return _regex_extract(text, _STRICT, 0)


def gsm8k_extract_flexible(text: str) -> str:
    """The last number-like match (lm-eval's flexible-extract filter), or ``[invalid]``."""
    return _regex_extract(text, _FLEXIBLE, -1)


def gsm8k_normalize(text: str) -> str:
    """lm-eval's exact_match preprocessing for gsm8k (regexes_to_ignore, then ignore_case)."""
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def gsm8k_correct(extracted: str, reference_answer: str) -> bool:
    """Exact match of an extracted answer with a reference (a full GSM8K answer or a number)."""
    return gsm8k_normalize(extracted) == gsm8k_normalize(reference_answer)


def gsm8k_accuracy(predictions: list[str], references: list[str]) -> dict[str, float]:
    """accuracy_strict and accuracy_flexible as fractions in [0, 1]."""
    n = len(predictions)
    if n != len(references):
        raise ValueError(f"got {n} predictions for {len(references)} references")
    strict = sum(gsm8k_correct(gsm8k_extract_strict(p), r) for p, r in zip(predictions, references, strict=True))
    flexible = sum(gsm8k_correct(gsm8k_extract_flexible(p), r) for p, r in zip(predictions, references, strict=True))
    return {"accuracy_strict": strict / n, "accuracy_flexible": flexible / n}


# -- calculator annotations <<a op b=c>> -----------------------------------------------------------
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>=]*)>>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expression: str) -> float | None:
    """Evaluate an arithmetic expression of numbers, + - * / and parentheses; None if it is not one."""
    expression = expression.replace(",", "").replace("$", "").strip()
    if not expression or len(expression) > 100:
        return None
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError("not arithmetic")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def parse_number(text: str) -> float | None:
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return float(text)
    except ValueError:
        return None


def annotation_validity(text: str) -> tuple[int, int]:
    """(number of arithmetically valid ``<<expr=result>>`` annotations, number of annotations)."""
    found = ANNOTATION.findall(text)
    valid = 0
    for expression, result in found:
        value, claimed = safe_eval(expression), parse_number(result)
        if value is not None and claimed is not None and abs(value - claimed) <= 1e-6 * max(1.0, abs(value)):
            valid += 1
    return valid, len(found)
