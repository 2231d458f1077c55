"""The oracles: 1.0 for the gold target and for every other valid output, less for damaged ones, in [0, 1]."""
from __future__ import annotations

import random
import re

import pytest

from xkdbench.tasks import OracleUnavailableError, get_task
from xkdbench.tasks.reasoning import ReasoningGenerator, reasoning_oracle, render_answer
from xkdbench.tasks.summarization import (
    DAYS,
    NAMES,
    PLACES,
    Event,
    SummaryGenerator,
    all_summaries,
    parse_event,
    render_summary,
    summary_oracle,
)
from xkdbench.tasks.translation import (
    NOUNS,
    TranslationGenerator,
    all_translations,
    parse_english,
    render_english,
    render_german,
    translation_oracle,
)


def _records(name, difficulty, n=40):
    task = get_task(name, difficulty=difficulty, sizes={"train": 1, "warmup": 1, "validation": 1, "test": n})
    return task, task.load("test").to_list()


# -- summarization ---------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", range(4))
def test_summary_oracle_accepts_every_valid_summary(difficulty):
    task, records = _records("summarization", difficulty)
    for record in records:
        assert task.oracle_score(record, record["summary"]) == 1.0
        event = parse_event(record["summary"])
        for summary in all_summaries(event):
            assert task.oracle_score(record, summary) == 1.0
        # case and spacing do not matter
        assert task.oracle_score(record, "  " + record["summary"].upper().replace(".", " .")) == 1.0


def _replace(text: str, old: str, new: str) -> str:
    assert re.search(rf"\b{re.escape(old)}\b", text), (old, text)
    return re.sub(rf"\b{re.escape(old)}\b", new, text, count=1)


def test_summary_oracle_partial_credit_and_penalties():
    event = Event("Anna", "buy", 5, "apples", "school", "Upton", "Monday")
    gold = "Anna bought 5 apples for the school in Upton on Monday."
    details = summary_oracle(gold, gold)
    assert details == {"oracle": 1.0, "facts_correct": 1.0, "wrong_facts": 0.0, "well_formed": 1.0}
    assert summary_oracle(gold, "On Monday, 5 apples were purchased by Anna for the local school in Upton.")["oracle"] == 1.0
    # one wrong fact in a well-formed sentence: 6 right, 1 wrong -> 5/7
    for wrong in ("Anna bought 6 apples for the school in Upton on Monday.",
                  "Ben bought 5 apples for the school in Upton on Monday.",
                  "Anna sold 5 apples for the school in Upton on Monday.",
                  "Anna bought 5 cups for the school in Upton on Monday.",
                  "Anna bought 5 apples for the zoo in Upton on Monday.",
                  "Anna bought 5 apples for the school in Harlow on Monday.",
                  "Anna bought 5 apples for the school in Upton on Friday."):
        assert summary_oracle(gold, wrong)["oracle"] == pytest.approx(5 / 7), wrong
    # a missing fact: not a grammar sentence -> 6/7 * 0.9
    assert summary_oracle(gold, "Anna bought 5 apples for the school on Monday.")["oracle"] == pytest.approx(6 / 7 * 0.9)
    # an extra, distractor fact: 7 right, 1 wrong, not well formed -> 6/7 * 0.9
    extra = summary_oracle(gold, "Anna bought 5 apples for the school in Upton and Harlow on Monday.")
    assert extra["oracle"] == pytest.approx(6 / 7 * 0.9) and extra["wrong_facts"] == 1.0
    # two wrong facts are worse than one; nothing right is 0
    assert summary_oracle(gold, "Ben bought 6 apples for the school in Upton on Monday.")["oracle"] == pytest.approx(3 / 7)
    assert summary_oracle(gold, "Ben sold 7 cups for the zoo in Harlow on Friday.")["oracle"] == 0.0
    assert summary_oracle(gold, "")["oracle"] == 0.0
    assert summary_oracle(gold, "the the the")["oracle"] == 0.0
    assert len(all_summaries(event)) == 40


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_summary_oracle_penalises_distractor_facts_from_the_document(difficulty):
    task, records = _records("summarization", difficulty, n=30)
    for record in records:
        key = parse_event(record["summary"])
        doc_names = [n for n in NAMES if re.search(rf"\b{n}\b", record["document"]) and n != key.actor]
        doc_places = [p for p in PLACES if re.search(rf"\b{p}\b", record["document"]) and p != key.place]
        doc_days = [d for d in DAYS if re.search(rf"\b{d}\b", record["document"]) and d != key.day]
        assert doc_names  # the document does hold distractors
        for old, candidates in ((key.actor, doc_names), (key.place, doc_places), (key.day, doc_days)):
            if candidates:
                damaged = _replace(record["summary"], old, candidates[0])
                assert task.oracle_score(record, damaged) == pytest.approx(5 / 7)


def test_summary_oracle_stays_in_range_on_random_text():
    task, records = _records("summarization", 3, n=20)
    rng = random.Random(0)
    for record in records:
        words = record["document"].split()
        for _ in range(20):
            output = " ".join(rng.sample(words, rng.randint(0, min(25, len(words)))))
            score = task.oracle_score(record, output)
            assert 0.0 <= score <= 1.0
            assert score < 1.0 or output == record["summary"]


def test_summary_grammar_round_trip():
    generator = SummaryGenerator(2)
    for i in range(100):
        event, _ = generator.sample(random.Random(i))
        assert parse_event(render_summary(event, random.Random(-i))) == event


# -- translation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", range(4))
def test_translation_oracle_accepts_every_valid_translation(difficulty):
    task, records = _records("translation", difficulty)
    for record in records:
        assert task.oracle_score(record, record["translation"]["de"]) == 1.0
        sentence = parse_english(record["translation"]["en"])
        alternatives = all_translations(sentence, limit=2000)
        for german in random.Random(0).sample(alternatives, min(30, len(alternatives))):
            assert task.oracle_score(record, german) == 1.0, german
        assert task.oracle_score(record, record["translation"]["de"].lower().replace(".", " .")) == 1.0


def test_translation_oracle_known_cases():
    en = "Yesterday the old man bought a red car."
    valid = ["Gestern hat der alte Mann ein rotes Auto gekauft.", "Der alte Mann hat gestern einen roten Wagen gekauft.",
             "Gestern hat der alte Mann einen roten Wagen erworben.", "Der alte Mann hat gestern ein rotes Auto erworben.",
             "Gestern kaufte der alte Mann ein rotes Auto.", "Der alte Mann erwarb gestern einen roten Wagen."]
    for german in valid:
        assert translation_oracle(en, german)["oracle"] == 1.0, german
    invalid = {
        "Gestern hat der alte Mann ein roter Auto gekauft.": "adjective ending",
        "Gestern hat der alte Mann einen rotes Auto gekauft.": "article case/gender",
        "Gestern hat der alte Mann ein rotes Auto kauft.": "verb form",
        "Gestern hat der alte Mann ein rotes Auto kaufte.": "tense mix",
        "Gestern der alte Mann hat ein rotes Auto gekauft.": "verb second",
        "Der alte Mann hat gestern gekauft ein rotes Auto.": "verb final",
        "Gestern hat der alte Mann ein rotes Buch gekauft.": "wrong noun",
        "Gestern hat der junge Mann ein rotes Auto gekauft.": "wrong adjective",
        "Gestern hat der alte Mann ein Auto gekauft.": "missing adjective",
        "Heute hat der alte Mann ein rotes Auto gekauft.": "wrong time",
    }
    scores = {}
    for german, what in invalid.items():
        scores[what] = translation_oracle(en, german)["oracle"]
        assert 0.7 < scores[what] < 1.0, (what, scores[what])
    # meaning errors cost more than form errors
    assert scores["wrong noun"] < scores["adjective ending"] < scores["verb second"]
    assert scores["wrong time"] < scores["missing adjective"] < scores["verb second"]
    assert scores["verb second"] == pytest.approx(0.7 + 0.3 * 0.9)  # all content, one token out of place
    worse = translation_oracle(en, "Gestern hat die Frau ein Buch gesehen.")["oracle"]
    assert worse < min(scores.values())
    assert translation_oracle(en, en)["oracle"] < 0.3
    assert translation_oracle(en, "")["oracle"] == 0.0


@pytest.mark.parametrize("difficulty", [1, 3])
def test_translation_oracle_decreases_with_damage(difficulty):
    task, records = _records("translation", difficulty, n=30)
    rng = random.Random(1)
    german_nouns = {sg for _, _, alts in NOUNS.values() for sg, _, _, _ in alts}
    for record in records:
        words = record["translation"]["de"].rstrip(".").split()
        one = words[:]
        del one[rng.randrange(len(one))]
        three = one[:]
        for _ in range(2):
            if len(three) > 1:
                del three[rng.randrange(len(three))]
        s1 = task.oracle_score(record, " ".join(one) + ".")
        s3 = task.oracle_score(record, " ".join(three) + ".")
        assert 0.0 <= s3 <= s1 < 1.0
        nouns = [i for i, w in enumerate(words) if w in german_nouns]
        if nouns:
            swapped = words[:]
            swapped[nouns[0]] = "Elefant"
            assert task.oracle_score(record, " ".join(swapped) + ".") < 1.0
        shuffled = words[:]
        rng.shuffle(shuffled)
        shuffled_text = " ".join(shuffled) + "."
        # full credit for a reordering only if that order is itself a valid translation
        assert (task.oracle_score(record, shuffled_text) < 1.0
                or shuffled_text in all_translations(parse_english(record["translation"]["en"])))


def test_translation_oracle_in_range_on_random_text():
    task, records = _records("translation", 2, n=20)
    rng = random.Random(2)
    for record in records:
        pool = record["translation"]["de"].split() + record["translation"]["en"].split()
        for _ in range(20):
            score = task.oracle_score(record, " ".join(rng.choices(pool, k=rng.randint(0, 20))))
            assert 0.0 <= score <= 1.0


def test_generated_targets_are_valid_translations_of_their_source():
    generator = TranslationGenerator(3)
    for i in range(100):
        rng = random.Random(i)
        sentence = generator.sample(rng)
        english = render_english(sentence, rng)
        assert translation_oracle(english, render_german(sentence, random.Random(i + 1000)))["oracle"] == 1.0


# -- reasoning -------------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", range(4))
def test_reasoning_oracle_accepts_every_valid_solution(difficulty):
    generator = ReasoningGenerator(difficulty)
    for i in range(40):
        rng = random.Random(f"r{i}")
        problem = generator.sample(rng)
        gold = render_answer(problem, rng)
        for k in range(10):
            other = render_answer(problem, random.Random(f"o{i}-{k}"))
            details = reasoning_oracle(gold, other)
            assert details == {"oracle": 1.0, "answer_correct": 1.0, "valid_step_fraction": 1.0}


def test_reasoning_oracle_known_cases():
    gold = "The apples cost 3*4 = $<<3*4=12>>12.\nThe pears cost 2*5 = $<<2*5=10>>10.\nTogether they cost 12+10 = $<<12+10=22>>22.\n#### 22"
    swapped = "The pears cost 5*2 = $<<5*2=10>>10.\nThe apples cost 4*3 = $<<4*3=12>>12.\nIn total Anna spends 10+12 = $<<10+12=22>>22.\n#### 22"
    assert reasoning_oracle(gold, swapped) == {"oracle": 1.0, "answer_correct": 1.0, "valid_step_fraction": 1.0}
    wrong_step = gold.replace("<<2*5=10>>", "<<2*5=11>>")
    assert reasoning_oracle(gold, wrong_step) == {"oracle": 1.0, "answer_correct": 1.0, "valid_step_fraction": 2 / 3}
    wrong_answer = gold.replace("#### 22", "#### 23")
    assert reasoning_oracle(gold, wrong_answer)["oracle"] == 0.0
    assert reasoning_oracle(gold, gold.replace("#### 22", "The answer is 22."))["oracle"] == 0.0  # no "#### N"
    assert reasoning_oracle(gold, "#### 22") == {"oracle": 1.0, "answer_correct": 1.0, "valid_step_fraction": 0.0}
    assert reasoning_oracle(gold, "#### 22.0")["oracle"] == 1.0  # compared as numbers
    assert reasoning_oracle(gold, "")["oracle"] == 0.0
    with pytest.raises(ValueError, match="no '#### N' line"):
        reasoning_oracle("no answer here", "#### 1")


def test_reasoning_score_reports_valid_steps():
    task, records = _records("reasoning", 1, n=4)
    outputs = [records[0]["answer"], "#### 1", records[2]["answer"].replace(">>", "1>>", 1), ""]
    scores = task.score(outputs, records)
    # outputs 0 and 2 end in the right "#### N" (2 with a broken step), 1 and 3 do not
    assert scores["oracle"] == pytest.approx(2 / 4) and scores["accuracy_strict"] == pytest.approx(2 / 4)
    assert records[1]["answer"].rsplit("#### ", 1)[1] != "1"
    first_steps = records[2]["answer"].count("<<")
    assert scores["valid_steps"] == pytest.approx((1 + 0 + (first_steps - 1) / first_steps + 0) / 4)


def test_hf_tasks_have_no_oracle():
    task = get_task("reasoning", source="hf")
    assert not task.has_oracle
    with pytest.raises(OracleUnavailableError, match="only the embedded source"):
        task.oracle_score({"question": "q", "answer": "#### 1"}, "#### 1")
    with pytest.raises(NotImplementedError):
        task.oracle_details({"question": "q", "answer": "#### 1"}, "#### 1")
