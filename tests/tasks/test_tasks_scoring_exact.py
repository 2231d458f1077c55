"""Scoring gives bit-identical numbers to the plain formulations: the libraries called the documented way
(a new sacrebleu metric per call, rouge-score's own stemming tokenizer) and the translation oracle written
without any precomputation. Equality is ``==`` on floats, never approx."""
from __future__ import annotations

import difflib
import random
import re
from collections import Counter

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from xkdbench.tasks import get_task, metrics
from xkdbench.tasks.translation import (
    COMMA,
    CONTENT_WEIGHT,
    FUNCTION_WORDS,
    PERIOD,
    all_translations,
    german_variants,
    parse_english,
    translation_oracle,
)

TEXTS = [
    "", " ", "The cat sat on the mat.", "A cat was sitting on the mat.", "running dogs ran quickly",
    "the dog runs", "Anna bought 5 apples for the school in Upton on Monday.",
    "On Monday, 5 apples were purchased by Anna for the local school in Upton.",
    "Der Mann hat den Hund gesehen.", "Die Straße ist schön, oder?", "studies studying studied",
    "generously generalization organizations", "3.5 apples, 1,200 pears - 4-5 days", "日本語 テキスト 🙂",
    "the the the the", "Tom &amp; Jerry <3", "line-\nbreak <skipped> here", "ÜBER die Brücke",
]


def _pairs():
    return [(p, r) for p in TEXTS for r in TEXTS]


# -- ROUGE -----------------------------------------------------------------------------------------
def test_rouge_equals_rouge_score_called_plainly():
    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    ours, ours_rouge2 = metrics._rouge_scorers()
    for prediction, reference in _pairs():
        expected = plain.score(reference, prediction)
        assert ours.score(reference, prediction) == expected, (prediction, reference)
        assert ours_rouge2.score(reference, prediction)["rouge2"] == expected["rouge2"]
        assert metrics.sentence_rouge2(prediction, reference) == 100.0 * expected["rouge2"].fmeasure
    predictions, references = zip(*_pairs(), strict=True)
    n = len(predictions)
    expected = {key: 100.0 * sum(plain.score(r, p)[key].fmeasure for p, r in _pairs()) / n
                for key in metrics.ROUGE_TYPES}
    assert metrics.rouge(list(predictions), list(references)) == expected


# -- BLEU / chrF -----------------------------------------------------------------------------------
def test_bleu_chrf_equal_sacrebleu_called_plainly():
    predictions, references = (list(x) for x in zip(*_pairs(), strict=True))
    for _ in range(2):  # the second call reads sacrebleu's tokenizer cache
        scores = metrics.bleu_chrf(predictions, references)
        assert scores["bleu"] == sacrebleu.corpus_bleu(predictions, [references]).score
        assert scores["chrf"] == sacrebleu.corpus_chrf(predictions, [references]).score
    for start in range(0, len(predictions), 37):  # smaller corpora, with references repeated as in sampling
        hyps, refs = predictions[start:start + 37], references[start:start + 37]
        assert metrics.bleu_chrf(hyps, refs) == {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
                                                 "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}
    for prediction, reference in _pairs():
        assert metrics.sentence_chrf(prediction, reference) == sacrebleu.sentence_chrf(prediction, [reference]).score


def test_gsm8k_normalize_equals_plain_re_sub():
    for text in ["#### 1,200.", "$12", "So $5 + 7 = 12.\n#### 12 apples.", "", "A.B.", "line\n#### 3\n#### 4"]:
        plain = text
        for pattern in metrics.GSM8K_IGNORE_REGEXES:
            plain = re.sub(pattern, "", plain)
        assert metrics.gsm8k_normalize(text) == plain.lower()


# -- the translation oracle ------------------------------------------------------------------------
def _plain_translation_oracle(english: str, output: str) -> dict[str, float]:
    """The oracle's definition, computed from scratch on every call."""
    def tokens(text):
        return re.findall(r"\w+|[^\w\s]", text.lower())

    def weighted_tokens(text):
        return [(t.lower(), 1.0 if t.lower() in FUNCTION_WORDS else 3.0 if t[0].isupper() else 2.0)
                for t in re.findall(r"\w+|[^\w\s]", text)]

    def chunk_credit(alternative, output_counts):
        available = Counter(output_counts)
        got = total = 0.0
        for token, weight in alternative:
            total += weight
            if available[token] > 0:
                available[token] -= 1
                got += weight
            elif weight > 1:
                k = max(3, len(token) - 2)
                stem = next((u for u, n in available.items() if n > 0 and len(u) >= k and u[:k] == token[:k]), None)
                if stem is not None:
                    available[stem] -= 1
                    got += weight / 2
        return got / total

    variants = german_variants(parse_english(english))
    out_tokens = tokens(output)
    out_text = " ".join(out_tokens)
    for variant in variants:
        pattern = " ".join("(?:" + "|".join(re.escape(" ".join(tokens(t))) for t, _ in chunk) + ")"
                           for chunk in variant.chunks)
        if re.fullmatch(pattern, out_text):
            return {"oracle": 1.0, "exact": 1.0, "content": 1.0, "order": 1.0}
    counts = Counter(out_tokens)
    best = {}
    for variant in variants:
        for chunk in variant.chunks:
            if chunk not in best:
                scored = []
                for text, p in chunk:
                    weighted = weighted_tokens(text)
                    scored.append((chunk_credit(weighted, counts), p, [t for t, _ in weighted]))
                c, _, toks = max(scored, key=lambda s: (s[0], s[1]))
                best[chunk] = (c, toks)
    result = {"oracle": 0.0, "exact": 0.0, "content": 0.0, "order": 0.0}
    for variant in variants:
        content_chunks = [c for c in variant.chunks if c not in (COMMA, PERIOD)]
        content = sum(best[c][0] for c in content_chunks) / len(content_chunks)
        candidate = [tok for chunk in variant.chunks for tok in best[chunk][1]]
        order = difflib.SequenceMatcher(None, out_tokens, candidate, autojunk=False).ratio()
        score = CONTENT_WEIGHT * content + (1 - CONTENT_WEIGHT) * order
        if score > result["oracle"]:
            result = {"oracle": score, "exact": 0.0, "content": content, "order": order}
    return result


def _damaged(german: str, other: str, english: str, rng: random.Random) -> list[str]:
    """Outputs a student might write: exact, re-cased, with a word dropped, swapped, re-ended or replaced,
    truncated, shuffled, another input's translation, the source itself, nothing."""
    words = german.rstrip(".").split()
    i = rng.randrange(len(words))
    j = min(i + 1, len(words) - 1)
    swapped = list(words)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    shuffled = list(words)
    rng.shuffle(shuffled)
    re_ended = [w[:-1] + ("n" if w[-1] != "n" else "s") if len(w) > 3 else w for w in words]
    return [german, german.lower().replace(".", " ."), " ".join(words[:i] + words[i + 1:]) + ".",
            " ".join(swapped) + ".", " ".join(re_ended) + ".", " ".join(words[:len(words) // 2]),
            " ".join(shuffled), " ".join(words[:i] + other.split()[:2] + words[i:]), other, english, "",
            german + " " + german, german.rstrip("."), german.replace(" ", "  \t"), german.replace(" ", ", ", 1)]


@pytest.mark.parametrize("difficulty", range(4))
def test_translation_oracle_equals_plain_formulation(difficulty):
    task = get_task("translation", difficulty=difficulty, sizes={"train": 1, "warmup": 1, "validation": 1, "test": 12})
    records = task.records("test")
    rng = random.Random(difficulty)
    for index, record in enumerate(records):
        english, german = record["translation"]["en"], record["translation"]["de"]
        other = records[(index + 1) % len(records)]["translation"]["de"]
        outputs = _damaged(german, other, english, rng) + all_translations(parse_english(english), limit=3)
        for output in outputs:
            assert translation_oracle(english, output) == _plain_translation_oracle(english, output), output
            assert task.oracle_details(record, output) == _plain_translation_oracle(english, output), output
