"""Summarization (XSum-like): records {"document", "summary", "id"}; headline metric ROUGE-2.

Embedded generator
------------------
Every document is about one *event* with seven key facts: the main actor (a first name), the action
(a verb), a quantity, an object, a recipient ("for the school"), a place (a town) and a day. The
document's first sentence (the lead) names the main actor and no one else; depending on the level it
states the whole event, all of it but the day and place, or only the name. The remaining key facts
come in sentences that each name the main actor, shuffled among distractor sentences about other
people (with their own actions, quantities, objects, recipients, places and days). The reference
summary is ONE sentence stating the seven key facts, drawn from a small grammar with paraphrase
choices:

- 6 sentence templates (4 active word orders, 2 passive), with fixed probabilities;
- an optional "a total of" before the quantity in active sentences (p = 0.2) and an optional "local"
  before the recipient (p = 0.25);
- verb synonyms with fixed probabilities (bought 0.6 / purchased 0.4, repaired 0.6 / fixed 0.4, ...),
  drawn independently for the document and the summary.

So an input has 20 or 40 valid summaries (``count_valid_summaries``).

Difficulty levels (``difficulty`` option, 0..3):

- 0: the lead states the whole event; two filler sentences without facts; no distractors;
  quantities 2-9. Summarising is paraphrasing the lead. (~24 words)
- 1: the lead states the whole event; two distractor events about other people; quantities 2-20.
  (~35 words)
- 2: the lead states all but the day and place, which come in a later sentence naming the actor;
  three distractor events, sometimes sharing a value with the main event; quantities 2-99. (~47 words)
- 3: the lead only names the actor; the facts come in three later sentences (day; place; action),
  among three distractors (full or partial events, often sharing a value with the main event) and one
  negated sentence about the main actor ("Anna did not go to Upton.") whose value must NOT be
  reported. (~60 words)

Oracle
------
The key facts are parsed back from the record's reference summary (the grammar is unambiguous). An
output is read the same way when it is a sentence of the summary grammar; otherwise every lexicon
word in it is collected (names, verbs, numbers, objects, recipients, towns, days). Then

    oracle = max(0, correct - wrong) / 7  x  (1 if the output is a grammar sentence else 0.9)

where ``correct`` counts key facts stated and ``wrong`` counts stated values that are not key facts
(a distractor's town, a wrong number, a second name, ...). Every valid summary scores 1.0; one wrong
fact in a well-formed sentence gives 5/7, a missing one 6/7 x 0.9.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

from xkdbench.tasks import metrics
from xkdbench.tasks.base import Task

# Small closed lexicons: a tiny model learns to copy each value in a few thousand steps.
NAMES = ("Anna", "Ben", "Carl", "Dana", "Eric", "Fiona", "Greg", "Hana", "Ivan", "Jane", "Kurt", "Lisa", "Mark",
         "Nora", "Omar", "Paul")
PLACES = ("Ashford", "Brookside", "Dunmore", "Fairview", "Harlow", "Kingsley", "Lakeside", "Millbrook", "Oakridge",
          "Riverton", "Upton", "Westfield")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
RECIPIENTS = ("school", "library", "hospital", "church", "museum", "zoo", "hotel", "farm")

GOODS = ("apples", "books", "lamps", "chairs", "bikes", "boxes", "candles", "hats", "cups")
BAKED = ("cakes", "pies", "cookies")
WOODEN = ("chairs", "tables", "boxes", "fences", "boats")
FIXABLE = ("lamps", "chairs", "bikes", "clocks", "boats", "fences")
PLANTS = ("trees", "roses")
OBJECTS = tuple(sorted(set(GOODS + BAKED + WOODEN + FIXABLE + PLANTS)))
# singular forms, so that an output with "apple" is still read as the object "apples"
SINGULAR = {o: o[:-1] for o in OBJECTS}
SINGULAR["boxes"] = "box"


@dataclass(frozen=True)
class Action:
    base: str                                   # "buy" (for negated sentences: "did not buy")
    active: tuple[tuple[str, float], ...]       # past-tense synonyms and their probabilities
    passive: dict[str, str]                     # active form -> passive participle
    objects: tuple[str, ...]


def _action(base, active, objects, passive=None):
    return Action(base, tuple(active), passive or {form: form for form, _ in active}, objects)


ACTIONS = {
    "buy": _action("buy", [("bought", 0.6), ("purchased", 0.4)], GOODS + BAKED),
    "sell": _action("sell", [("sold", 1.0)], GOODS + BAKED),
    "deliver": _action("deliver", [("delivered", 0.6), ("brought", 0.4)], GOODS + BAKED),
    "collect": _action("collect", [("collected", 0.6), ("gathered", 0.4)], GOODS),
    "repair": _action("repair", [("repaired", 0.6), ("fixed", 0.4)], FIXABLE),
    "donate": _action("donate", [("donated", 0.6), ("gave away", 0.4)], GOODS + BAKED,
                      {"donated": "donated", "gave away": "given away"}),
    "order": _action("order", [("ordered", 1.0)], GOODS + BAKED),
    "paint": _action("paint", [("painted", 1.0)], WOODEN),
    "build": _action("build", [("built", 0.7), ("made", 0.3)], WOODEN),
    "bake": _action("bake", [("baked", 1.0)], BAKED),
    "plant": _action("plant", [("planted", 1.0)], PLANTS),
}
# every verb token -> action ("gave"/"given" stand for donate; no token belongs to two actions)
VERB_TOKENS = {}
for _key, _act in ACTIONS.items():
    for _form, _ in _act.active:
        VERB_TOKENS[_form.split()[0]] = _key
        VERB_TOKENS[_act.passive[_form].split()[0]] = _key
    VERB_TOKENS[_act.base] = _key

# (template, probability); {A} actor, {V} verb (VP passive), {N} quantity, {O} object, {R} recipient,
# {P} place, {D} day; {Q} is the optional "a total of ", {L} the optional "local "
SUMMARY_TEMPLATES = (
    ("{A} {V} {Q}{N} {O} for the {L}{R} in {P} on {D}.", 0.30),
    ("On {D}, {A} {V} {Q}{N} {O} for the {L}{R} in {P}.", 0.20),
    ("In {P}, {A} {V} {Q}{N} {O} for the {L}{R} on {D}.", 0.15),
    ("{A} {V} {Q}{N} {O} for the {L}{R} on {D} in {P}.", 0.15),
    ("{N} {O} were {VP} by {A} for the {L}{R} in {P} on {D}.", 0.10),
    ("On {D}, {N} {O} were {VP} by {A} for the {L}{R} in {P}.", 0.10),
)
TOTAL_OF = "a total of "
P_TOTAL_OF = 0.2
LOCAL = "local "
P_LOCAL = 0.25

LEADS = ("{A} had a busy week.", "This is the story of {A}.", "People are talking about {A}.",
         "{A} was in the news this week.")
FULL_EVENT = ("On {D}, {A} {V} {N} {O} for the {R} in {P}.", "{A} {V} {N} {O} for the {R} in {P} on {D}.",
              "In {P}, {A} {V} {N} {O} for the {R} on {D}.")
DAY_PLACE = ("On {D}, {A} went to {P}.", "{A} visited {P} on {D}.", "{A} spent {D} in {P}.")
ACTION_ONLY = ("{A} {V} {N} {O} for the {R}.", "During the trip, {A} {V} {N} {O} for the {R}.",
               "In the end, {A} {V} {N} {O} for the {R}.")
DAY_ONLY = ("On {D}, {A} left home early.", "{A} got up early on {D}.", "{D} was a long day for {A}.")
PLACE_ONLY = ("{A} went to {P}.", "{A} traveled to {P}.", "{A} arrived in {P}.")
NEGATED = {
    "P": ("{A} did not go to {P}.", "{A} never got to {P}."),
    "O": ("{A} did not {B} any {O}.",),
    "D": ("{A} stayed at home on {D}.",),
    "R": ("{A} did nothing for the {R}.",),
}

PARTIAL_LEADS = ("{A} {V} {N} {O} for the {R}.", "This week, {A} {V} {N} {O} for the {R}.")

FILLERS = ("The weather was warm.", "Many people came to watch.", "It was a good week for the town.",
           "Everyone was in a good mood.", "The streets were busy.", "Nobody had expected it.",
           "The town paper wrote about it.", "It rained a little in the morning.")

LEVELS = {
    # lead: what the first sentence states (the whole event / all but day and place / only the name);
    # distractors: sentences about other people; fillers: sentences without facts; share: chance that a
    # distractor shares one value with the main event; negated: a main-actor sentence with a value that
    # is NOT a key fact
    0: dict(lead="event", distractors=0, fillers=2, max_qty=9, share=0.0, negated=False),
    1: dict(lead="event", distractors=2, fillers=0, max_qty=20, share=0.0, negated=False),
    2: dict(lead="partial", distractors=3, fillers=0, max_qty=99, share=0.3, negated=False),
    3: dict(lead="name", distractors=3, fillers=0, max_qty=99, share=0.6, negated=True),
}
SLOTS = ("A", "V", "N", "O", "R", "P", "D")


@dataclass(frozen=True)
class Event:
    actor: str
    action: str
    quantity: int
    obj: str
    recipient: str
    place: str
    day: str

    def facts(self) -> dict[str, str]:
        """The seven key facts, as the oracle reads them."""
        return {"A": self.actor.lower(), "V": self.action, "N": str(self.quantity), "O": self.obj,
                "R": self.recipient, "P": self.place.lower(), "D": self.day.lower()}


def _weighted(rng: random.Random, options):
    """Pick from [(value, probability), ...]; one rng.random() call, so streams stay stable."""
    x = rng.random()
    acc = 0.0
    for value, p in options:
        acc += p
        if x < acc:
            return value
    return options[-1][0]


def _verb(rng: random.Random, action: str) -> str:
    return _weighted(rng, ACTIONS[action].active)


def render_summary(event: Event, rng: random.Random) -> str:
    """One valid reference summary of `event` (template, synonym and 'a total of' sampled)."""
    template = _weighted(rng, SUMMARY_TEMPLATES)
    verb = _verb(rng, event.action)
    total = TOTAL_OF if rng.random() < P_TOTAL_OF else ""
    local = LOCAL if rng.random() < P_LOCAL else ""
    text = template.format(A=event.actor, V=verb, VP=ACTIONS[event.action].passive[verb], Q=total, L=local,
                           N=event.quantity, O=event.obj, R=event.recipient, P=event.place, D=event.day)
    return text[0].upper() + text[1:]


def all_summaries(event: Event) -> list[str]:
    """Every valid summary of `event` (the support of render_summary)."""
    out = []
    for (template, _), (verb, _), total, local in itertools.product(
            SUMMARY_TEMPLATES, ACTIONS[event.action].active, ("", TOTAL_OF), ("", LOCAL)):
        if total and "{Q}" not in template:
            continue
        text = template.format(A=event.actor, V=verb, VP=ACTIONS[event.action].passive[verb], Q=total, L=local,
                               N=event.quantity, O=event.obj, R=event.recipient, P=event.place, D=event.day)
        out.append(text[0].upper() + text[1:])
    return out


def count_valid_summaries(event: Event) -> int:
    return len(all_summaries(event))


# -- the document ---------------------------------------------------------------------------------
class SummaryGenerator:
    def __init__(self, difficulty: int):
        self.difficulty = difficulty
        self.level = LEVELS[difficulty]

    def _event(self, rng: random.Random, actor: str, like: Event | None = None) -> Event:
        action = rng.choice(sorted(ACTIONS))
        event = Event(actor, action, rng.randint(2, self.level["max_qty"]), rng.choice(ACTIONS[action].objects),
                      rng.choice(RECIPIENTS), rng.choice(PLACES), rng.choice(DAYS))
        if like is not None:
            # distractors always differ in every value, except one shared value at higher levels
            shared = rng.choice(("P", "D", "O", "R")) if rng.random() < self.level["share"] else None
            recipient = like.recipient if shared == "R" else rng.choice([r for r in RECIPIENTS if r != like.recipient])
            place = like.place if shared == "P" else rng.choice([p for p in PLACES if p != like.place])
            day = like.day if shared == "D" else rng.choice([d for d in DAYS if d != like.day])
            if shared == "O" and like.obj in ACTIONS[action].objects:
                obj = like.obj
            else:
                obj = rng.choice([o for o in ACTIONS[action].objects if o != like.obj])
            qty = rng.choice([q for q in range(2, self.level["max_qty"] + 1) if q != like.quantity])
            event = Event(actor, action, qty, obj, recipient, place, day)
        return event

    @staticmethod
    def _fill(template: str, event: Event, verb: str) -> str:
        text = template.format(A=event.actor, V=verb, N=event.quantity, O=event.obj, R=event.recipient,
                               P=event.place, D=event.day, B=ACTIONS[event.action].base)
        return text[0].upper() + text[1:]

    def _fact_sentences(self, rng: random.Random, event: Event, split: int) -> list[str]:
        verb = _verb(rng, event.action)
        if split == 1:
            return [self._fill(rng.choice(FULL_EVENT), event, verb)]
        if split == 2:
            return [self._fill(rng.choice(DAY_PLACE), event, verb), self._fill(rng.choice(ACTION_ONLY), event, verb)]
        return [self._fill(rng.choice(DAY_ONLY), event, verb), self._fill(rng.choice(PLACE_ONLY), event, verb),
                self._fill(rng.choice(ACTION_ONLY), event, verb)]

    def sample(self, rng: random.Random) -> tuple[Event, str]:
        """(the main event, the document)."""
        names = rng.sample(NAMES, 1 + self.level["distractors"])
        main = self._event(rng, names[0])
        verb = _verb(rng, main.action)
        if self.level["lead"] == "event":      # the lead is the whole event
            lead, body = self._fill(rng.choice(FULL_EVENT), main, verb), []
        elif self.level["lead"] == "partial":  # day and place come later, in a sentence naming the actor
            lead = self._fill(rng.choice(PARTIAL_LEADS), main, verb)
            body = [self._fill(rng.choice(DAY_PLACE), main, verb)]
        else:                                  # the lead only names the actor; three fact sentences follow
            lead = LEADS[rng.randrange(len(LEADS))].format(A=main.actor)
            body = self._fact_sentences(rng, main, 3)
        for name in names[1:]:
            other = self._event(rng, name, like=main)
            if self.level["lead"] != "name" or rng.random() < 0.5:
                body.append(self._fill(rng.choice(FULL_EVENT), other, _verb(rng, other.action)))
            else:  # a partial event: one or two of its facts
                body.extend(rng.sample(self._fact_sentences(rng, other, 3), rng.choice((1, 2))))
        if self.level["negated"]:  # a main-actor sentence whose value is NOT a key fact
            slot = rng.choice(sorted(NEGATED))
            place = rng.choice([p for p in PLACES if p != main.place])
            day = rng.choice([d for d in DAYS if d != main.day])
            obj = rng.choice([o for o in ACTIONS[main.action].objects if o != main.obj])
            recipient = rng.choice([r for r in RECIPIENTS if r != main.recipient])
            wrong = Event(main.actor, main.action, main.quantity, obj, recipient, place, day)
            body.append(self._fill(rng.choice(NEGATED[slot]), wrong, ""))
        body.extend(rng.sample(FILLERS, self.level["fillers"]))
        rng.shuffle(body)
        return main, " ".join([lead] + body)

    def record(self, rng: random.Random, *, split: str, index: int) -> dict:
        event, document = self.sample(rng)
        summary = render_summary(event, rng)
        return {"document": document, "summary": summary, "id": f"{SPLIT_ID[split]}{index:07d}"}


SPLIT_ID = {"train": 1, "warmup": 2, "validation": 3, "test": 4}


# -- reading summaries back ----------------------------------------------------------------------
def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


_SLOT_PATTERNS = {
    "A": _alternation(n.lower() for n in NAMES),
    "V": _alternation(f for a in ACTIONS.values() for f, _ in a.active),
    "VP": _alternation(p for a in ACTIONS.values() for p in a.passive.values()),
    "N": r"\d+",
    "O": _alternation(OBJECTS),
    "P": _alternation(p.lower() for p in PLACES),
    "D": _alternation(d.lower() for d in DAYS),
    "R": _alternation(RECIPIENTS),
    "Q": f"(?:{re.escape(TOTAL_OF)})?",
    "L": f"(?:{re.escape(LOCAL)})?",
}


def _template_regex(template: str) -> re.Pattern:
    out = []
    for part in re.split(r"(\{[A-Z]+\})", template):
        if part.startswith("{"):
            slot = part[1:-1]
            optional = slot in ("Q", "L")
            out.append(_SLOT_PATTERNS[slot] if optional else f"(?P<{slot}>{_SLOT_PATTERNS[slot]})")
        else:
            out.append(re.escape(part.lower()))
    return re.compile("^" + "".join(out) + "$")


_TEMPLATE_REGEXES = tuple(_template_regex(t) for t, _ in SUMMARY_TEMPLATES)


def _normalize(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip().lower())
    return re.sub(r"\s+([.,])", r"\1", text)


def parse_summary(text: str) -> dict[str, str] | None:
    """The six facts of a sentence of the summary grammar, or None if it is not one."""
    norm = _normalize(text)
    for regex in _TEMPLATE_REGEXES:
        m = regex.match(norm)
        if m:
            groups = m.groupdict()
            verb = groups.get("V") or groups.get("VP")
            return {"A": groups["A"], "V": VERB_TOKENS[verb.split()[0]], "N": str(int(groups["N"])),
                    "O": groups["O"], "R": groups["R"], "P": groups["P"], "D": groups["D"]}
    return None


def parse_event(summary: str) -> Event:
    """The event a summary of the grammar states (names and towns in their written form)."""
    facts = parse_summary(summary)
    if facts is None:
        raise ValueError(f"{summary!r} is not a sentence of the summary grammar")
    name = {n.lower(): n for n in NAMES}[facts["A"]]
    place = {p.lower(): p for p in PLACES}[facts["P"]]
    return Event(name, facts["V"], int(facts["N"]), facts["O"], facts["R"], place, facts["D"].title())


_NAME_SET = {n.lower() for n in NAMES}
_PLACE_SET = {p.lower() for p in PLACES}
_DAY_SET = {d.lower() for d in DAYS}
_RECIPIENT_SET = set(RECIPIENTS)
_OBJECT_OF = {**{o: o for o in OBJECTS}, **{s: o for o, s in SINGULAR.items()}}


def extract_facts(text: str) -> dict[str, set[str]]:
    """Every lexicon value stated anywhere in `text`, by slot."""
    found: dict[str, set[str]] = {slot: set() for slot in SLOTS}
    for token in re.findall(r"[a-z]+|\d+", text.lower()):
        if token.isdigit():
            found["N"].add(str(int(token)))
        elif token in _NAME_SET:
            found["A"].add(token)
        elif token in VERB_TOKENS:
            found["V"].add(VERB_TOKENS[token])
        elif token in _OBJECT_OF:
            found["O"].add(_OBJECT_OF[token])
        elif token in _PLACE_SET:
            found["P"].add(token)
        elif token in _DAY_SET:
            found["D"].add(token)
        elif token in _RECIPIENT_SET:
            found["R"].add(token)
    return found


def summary_oracle(reference_summary: str, output: str) -> dict[str, float]:
    key = parse_summary(reference_summary)
    if key is None:
        raise ValueError(f"the reference summary {reference_summary!r} is not from the embedded grammar")
    parsed = parse_summary(output)
    stated = {slot: {value} for slot, value in parsed.items()} if parsed else extract_facts(output)
    correct = sum(key[slot] in stated[slot] for slot in SLOTS)
    wrong = sum(len(stated[slot] - {key[slot]}) for slot in SLOTS)
    form = 1.0 if parsed else 0.9
    score = max(0, correct - wrong) / len(SLOTS) * form
    return {"oracle": score, "facts_correct": correct / len(SLOTS), "wrong_facts": float(wrong),
            "well_formed": 1.0 if parsed else 0.0}


class SummarizationTask(Task):
    """XSum-like summarization; the hf source is EdinburghNLP/xsum."""

    name = "summarization"
    headline_metric = "rouge2"
    fields = {"document": str, "summary": str, "id": str}
    hf_path = "EdinburghNLP/xsum"
    hf_name = None
    hf_has_validation = True
    default_difficulty = 0  # a 1M-parameter teacher reaches oracle 1.0 in ~1000 steps; level 1 needs ~3x more

    def prompt(self, example: dict) -> str:
        return "summarize: " + example["document"]

    def target(self, example: dict) -> str:
        return example["summary"]

    def _input_text(self, record: dict) -> str:
        return record["document"]

    def _generator(self):
        return SummaryGenerator(self._options["difficulty"])

    def _corpus_metrics(self, predictions, references):
        return metrics.rouge(predictions, references)

    def _example_metric(self, prediction, reference):
        return metrics.sentence_rouge2(prediction, reference)

    def _oracle_details(self, example, output):
        return summary_oracle(example["summary"], output)
