"""Translation (WMT14-like, English -> German): records {"translation": {"de", "en"}}; headline BLEU.

Embedded generator
------------------
The English source comes from a small grammar over a closed lexicon: a clause is
SUBJECT VERB OBJECT [PLACE] [TIME], where noun phrases have articles (the / a / none for plurals), up to
two adjectives and a noun or a first name; the verb is in the present, past or future; the place is a
prepositional phrase ("in the park", "next to the church"); the time is an adverb ("yesterday",
"every day", "next week") that agrees with the tense, before or after the clause. A sentence may add
a subordinate clause (because / while / although / when), before or after the main clause.

The German target is produced by a transducer that applies real German grammar to the same meaning:

- lexicon with synonyms chosen with fixed probabilities (Auto 0.6 / Wagen 0.4, kaufen 0.7 /
  erwerben 0.3, weil 0.6 / da 0.4, ...), some of different gender, so the article must agree with the
  chosen noun (das Auto / der Wagen);
- articles and adjective endings agree in gender, number and case (der alte Mann, einen alten Mann,
  dem alten Mann, alte Hunde); verbs govern accusative or dative objects (hilft dem Kind); in/an +
  dem contract to im/am;
- present tense; for the English past either Perfekt (hat ... gekauft, ist ... gefolgt; p = 0.6) or
  Präteritum (kaufte, folgte; p = 0.4); Futur I (wird ... kaufen): a verb bracket with the non-finite
  verb at the end;
- verb-second main clauses with a free first position (subject, time or place: "Gestern hat der Mann
  ..." and "Der Mann hat gestern ..." are both valid); verb-final subordinate clauses ("..., weil die
  Frau ein Buch liest."); a fronted subordinate clause makes the main clause verb-first
  ("Weil die Frau ein Buch liest, kauft der Mann ...").

A translation is a set of order variants, each a sequence of chunks (noun phrases, verb parts, time,
place, conjunction, punctuation); every chunk has its synonym alternatives. The reference is one
sampled valid translation; ``count_valid_translations`` gives the number of valid ones (median 4 at
level 0, where a short present-tense sentence without synonyms has only one, up to hundreds at level 3).

Difficulty levels (``difficulty`` option, 0..3):

- 0: SUBJECT VERB OBJECT [TIME]; singular nouns or names, no adjectives, present or past, accusative
  verbs only. (~6 English words)
- 1: adds adjectives (one at most), places, the future tense and dative verbs. (~9 words)
- 2: adds plurals, up to two adjectives and a subordinate clause in half of the sentences. (~13 words)
- 3: always a subordinate clause, more adjectives and places in both clauses. (~20 words)

Oracle
------
The English source is parsed back to its meaning (the grammar is unambiguous); the output is
tokenised (lower case, punctuation split off). An output that is one of the valid translations scores
1.0. Otherwise

    oracle = 0.7 * content + 0.3 * order

where ``content`` is the mean over content chunks (noun phrases, verb parts, time, place,
conjunction) of the best weighted share of a chunk alternative's tokens found in the output (nouns and
names weigh 3, other content words 2, articles, prepositions, auxiliaries and conjunctions 1; a word
with the right stem but a wrong ending counts half), and ``order`` is the best difflib similarity
between the output's tokens and a valid translation built from the alternatives closest to the
output, over every order variant. Both are 1 only for a valid translation. So a wrong noun costs more
than a wrong adjective ending, which costs more than a misplaced verb.
"""
from __future__ import annotations

import difflib
import functools
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass

from xkdbench.tasks import metrics
from xkdbench.tasks.base import Task

# -- lexicon ----------------------------------------------------------------------------------------
# English singular, English plural, class, German alternatives (singular, plural, gender, probability)
NOUNS = {
    "man": ("men", "person", [("Mann", "Männer", "m", 1.0)]),
    "woman": ("women", "person", [("Frau", "Frauen", "f", 1.0)]),
    "child": ("children", "person", [("Kind", "Kinder", "n", 1.0)]),
    "girl": ("girls", "person", [("Mädchen", "Mädchen", "n", 1.0)]),
    "teacher": ("teachers", "person", [("Lehrer", "Lehrer", "m", 1.0)]),
    "doctor": ("doctors", "person", [("Arzt", "Ärzte", "m", 0.7), ("Doktor", "Doktoren", "m", 0.3)]),
    "friend": ("friends", "person", [("Freund", "Freunde", "m", 0.8), ("Kumpel", "Kumpel", "m", 0.2)]),
    "farmer": ("farmers", "person", [("Landwirt", "Landwirte", "m", 0.6), ("Bauer", "Bauern", "m", 0.4)]),
    "cook": ("cooks", "person", [("Koch", "Köche", "m", 1.0)]),
    "king": ("kings", "person", [("König", "Könige", "m", 1.0)]),
    "queen": ("queens", "person", [("Königin", "Königinnen", "f", 1.0)]),
    "dog": ("dogs", "animal", [("Hund", "Hunde", "m", 1.0)]),
    "cat": ("cats", "animal", [("Katze", "Katzen", "f", 1.0)]),
    "horse": ("horses", "animal", [("Pferd", "Pferde", "n", 1.0)]),
    "bird": ("birds", "animal", [("Vogel", "Vögel", "m", 1.0)]),
    "mouse": ("mice", "animal", [("Maus", "Mäuse", "f", 1.0)]),
    "cow": ("cows", "animal", [("Kuh", "Kühe", "f", 1.0)]),
    "car": ("cars", "thing", [("Auto", "Autos", "n", 0.6), ("Wagen", "Wagen", "m", 0.4)]),
    "book": ("books", "thing", [("Buch", "Bücher", "n", 1.0)]),
    "ball": ("balls", "thing", [("Ball", "Bälle", "m", 1.0)]),
    "bike": ("bikes", "thing", [("Fahrrad", "Fahrräder", "n", 0.7), ("Rad", "Räder", "n", 0.3)]),
    "letter": ("letters", "thing", [("Brief", "Briefe", "m", 0.8), ("Schreiben", "Schreiben", "n", 0.2)]),
    "table": ("tables", "thing", [("Tisch", "Tische", "m", 1.0)]),
    "chair": ("chairs", "thing", [("Stuhl", "Stühle", "m", 1.0)]),
    "apple": ("apples", "thing", [("Apfel", "Äpfel", "m", 1.0)]),
    "flower": ("flowers", "thing", [("Blume", "Blumen", "f", 1.0)]),
    "picture": ("pictures", "thing", [("Bild", "Bilder", "n", 1.0)]),
    "key": ("keys", "thing", [("Schlüssel", "Schlüssel", "m", 1.0)]),
    "bag": ("bags", "thing", [("Tasche", "Taschen", "f", 0.6), ("Beutel", "Beutel", "m", 0.4)]),
    "cup": ("cups", "thing", [("Tasse", "Tassen", "f", 0.6), ("Becher", "Becher", "m", 0.4)]),
    "door": ("doors", "thing", [("Tür", "Türen", "f", 1.0)]),
    "window": ("windows", "thing", [("Fenster", "Fenster", "n", 1.0)]),
    "lamp": ("lamps", "thing", [("Lampe", "Lampen", "f", 0.7), ("Leuchte", "Leuchten", "f", 0.3)]),
    "hat": ("hats", "thing", [("Hut", "Hüte", "m", 1.0)]),
    "box": ("boxes", "thing", [("Kiste", "Kisten", "f", 0.5), ("Schachtel", "Schachteln", "f", 0.5)]),
    "boat": ("boats", "thing", [("Boot", "Boote", "n", 1.0)]),
    "shoe": ("shoes", "thing", [("Schuh", "Schuhe", "m", 1.0)]),
    "cake": ("cakes", "thing", [("Kuchen", "Kuchen", "m", 0.7), ("Torte", "Torten", "f", 0.3)]),
    "bottle": ("bottles", "thing", [("Flasche", "Flaschen", "f", 1.0)]),
    "clock": ("clocks", "thing", [("Uhr", "Uhren", "f", 1.0)]),
    "coat": ("coats", "thing", [("Mantel", "Mäntel", "m", 1.0)]),
    "newspaper": ("newspapers", "thing", [("Zeitung", "Zeitungen", "f", 1.0)]),
    "phone": ("phones", "thing", [("Telefon", "Telefone", "n", 0.6), ("Handy", "Handys", "n", 0.4)]),
}
NAMES = ("Anna", "Paul", "Maria", "Peter", "Lisa", "Thomas", "Julia", "Michael")

# English, classes it fits, German alternatives (attributive stem, probability)
ADJECTIVES = {
    "old": (("person", "animal", "thing"), [("alt", 1.0)]),
    "young": (("person", "animal"), [("jung", 1.0)]),
    "happy": (("person", "animal"), [("froh", 0.5), ("glücklich", 0.5)]),
    "tired": (("person", "animal"), [("müd", 1.0)]),           # müde, müden (no double e)
    "clever": (("person", "animal"), [("klug", 0.6), ("schlau", 0.4)]),
    "friendly": (("person", "animal"), [("freundlich", 0.7), ("nett", 0.3)]),
    "hungry": (("person", "animal"), [("hungrig", 1.0)]),
    "lazy": (("person", "animal"), [("faul", 1.0)]),
    "strong": (("person", "animal"), [("stark", 1.0)]),
    "sad": (("person",), [("traurig", 1.0)]),
    "small": (("person", "animal", "thing"), [("klein", 1.0)]),
    "big": (("person", "animal", "thing"), [("groß", 1.0)]),
    "new": (("thing",), [("neu", 1.0)]),
    "red": (("thing",), [("rot", 1.0)]),
    "blue": (("thing",), [("blau", 1.0)]),
    "green": (("thing",), [("grün", 1.0)]),
    "black": (("animal", "thing"), [("schwarz", 1.0)]),
    "white": (("animal", "thing"), [("weiß", 1.0)]),
    "brown": (("animal", "thing"), [("braun", 1.0)]),
    "beautiful": (("animal", "thing"), [("schön", 0.6), ("hübsch", 0.4)]),
    "cheap": (("thing",), [("billig", 0.5), ("günstig", 0.5)]),
    "heavy": (("thing",), [("schwer", 1.0)]),
    "expensive": (("thing",), [("teur", 1.0)]),   # teuer -> teure, teuren (the e drops)
    "dark": (("thing",), [("dunkl", 1.0)]),       # dunkel -> dunkle
    "strange": (("person", "animal", "thing"), [("seltsam", 0.6), ("merkwürdig", 0.4)]),
}

# English verb: (3sg, past, subject classes, object classes, object case, auxiliary,
#                German alternatives (infinitive, 3sg, plural, participle, probability))
_PEOPLE = ("person",)
_ANIMATE = ("person", "animal")
_ALL = ("person", "animal", "thing")
VERBS = {
    "see": ("sees", "saw", _ANIMATE, _ALL, "acc", "haben",
            [("sehen", "sieht", "sehen", "gesehen", 0.7), ("erblicken", "erblickt", "erblicken", "erblickt", 0.3)]),
    "buy": ("buys", "bought", _PEOPLE, ("animal", "thing"), "acc", "haben",
            [("kaufen", "kauft", "kaufen", "gekauft", 0.7), ("erwerben", "erwirbt", "erwerben", "erworben", 0.3)]),
    "find": ("finds", "found", _ANIMATE, _ALL, "acc", "haben",
             [("finden", "findet", "finden", "gefunden", 0.7),
              ("entdecken", "entdeckt", "entdecken", "entdeckt", 0.3)]),
    "carry": ("carries", "carried", _PEOPLE, ("animal", "thing"), "acc", "haben",
              [("tragen", "trägt", "tragen", "getragen", 1.0)]),
    "paint": ("paints", "painted", _PEOPLE, _ALL, "acc", "haben", [("malen", "malt", "malen", "gemalt", 1.0)]),
    "visit": ("visits", "visited", _PEOPLE, _PEOPLE, "acc", "haben",
              [("besuchen", "besucht", "besuchen", "besucht", 1.0)]),
    "wash": ("washes", "washed", _PEOPLE, _ALL, "acc", "haben",
             [("waschen", "wäscht", "waschen", "gewaschen", 1.0)]),
    "sell": ("sells", "sold", _PEOPLE, ("animal", "thing"), "acc", "haben",
             [("verkaufen", "verkauft", "verkaufen", "verkauft", 1.0)]),
    "clean": ("cleans", "cleaned", _PEOPLE, ("thing",), "acc", "haben",
              [("putzen", "putzt", "putzen", "geputzt", 0.5), ("reinigen", "reinigt", "reinigen", "gereinigt", 0.5)]),
    "repair": ("repairs", "repaired", _PEOPLE, ("thing",), "acc", "haben",
               [("reparieren", "repariert", "reparieren", "repariert", 1.0)]),
    "need": ("needs", "needed", _ANIMATE, ("thing",), "acc", "haben",
             [("brauchen", "braucht", "brauchen", "gebraucht", 0.7),
              ("benötigen", "benötigt", "benötigen", "benötigt", 0.3)]),
    "hold": ("holds", "held", _PEOPLE, ("animal", "thing"), "acc", "haben",
             [("halten", "hält", "halten", "gehalten", 1.0)]),
    "love": ("loves", "loved", _ANIMATE, _ALL, "acc", "haben", [("lieben", "liebt", "lieben", "geliebt", 1.0)]),
    "feed": ("feeds", "fed", _PEOPLE, ("animal",), "acc", "haben",
             [("füttern", "füttert", "füttern", "gefüttert", 1.0)]),
    "bring": ("brings", "brought", _PEOPLE, ("animal", "thing"), "acc", "haben",
              [("bringen", "bringt", "bringen", "gebracht", 1.0)]),
    "take": ("takes", "took", _PEOPLE, ("thing",), "acc", "haben",
             [("nehmen", "nimmt", "nehmen", "genommen", 1.0)]),
    "meet": ("meets", "met", _PEOPLE, _PEOPLE, "acc", "haben",
             [("treffen", "trifft", "treffen", "getroffen", 1.0)]),
    "hear": ("hears", "heard", _ANIMATE, _ANIMATE, "acc", "haben", [("hören", "hört", "hören", "gehört", 1.0)]),
    "catch": ("catches", "caught", _ANIMATE, ("animal", "thing"), "acc", "haben",
              [("fangen", "fängt", "fangen", "gefangen", 1.0)]),
    "throw": ("throws", "threw", _PEOPLE, ("thing",), "acc", "haben",
              [("werfen", "wirft", "werfen", "geworfen", 0.8), ("schmeißen", "schmeißt", "schmeißen", "geschmissen", 0.2)]),
    "open": ("opens", "opened", _PEOPLE, ("thing",), "acc", "haben",
             [("öffnen", "öffnet", "öffnen", "geöffnet", 1.0)]),
    "help": ("helps", "helped", _PEOPLE, _ANIMATE, "dat", "haben", [("helfen", "hilft", "helfen", "geholfen", 1.0)]),
    "follow": ("follows", "followed", _ANIMATE, _ANIMATE, "dat", "sein",
               [("folgen", "folgt", "folgen", "gefolgt", 1.0)]),
    "thank": ("thanks", "thanked", _PEOPLE, _PEOPLE, "dat", "haben", [("danken", "dankt", "danken", "gedankt", 1.0)]),
}
AUX = {"haben": ("hat", "haben"), "sein": ("ist", "sind"), "werden": ("wird", "werden")}
# German simple past (Präteritum), 3rd person singular and plural, by infinitive
PRETERITE = {
    "sehen": ("sah", "sahen"), "erblicken": ("erblickte", "erblickten"), "kaufen": ("kaufte", "kauften"),
    "erwerben": ("erwarb", "erwarben"), "finden": ("fand", "fanden"), "entdecken": ("entdeckte", "entdeckten"),
    "tragen": ("trug", "trugen"), "malen": ("malte", "malten"), "besuchen": ("besuchte", "besuchten"),
    "waschen": ("wusch", "wuschen"), "verkaufen": ("verkaufte", "verkauften"), "putzen": ("putzte", "putzten"),
    "reinigen": ("reinigte", "reinigten"), "reparieren": ("reparierte", "reparierten"),
    "brauchen": ("brauchte", "brauchten"), "benötigen": ("benötigte", "benötigten"), "halten": ("hielt", "hielten"),
    "lieben": ("liebte", "liebten"), "füttern": ("fütterte", "fütterten"), "bringen": ("brachte", "brachten"),
    "nehmen": ("nahm", "nahmen"), "treffen": ("traf", "trafen"), "hören": ("hörte", "hörten"),
    "fangen": ("fing", "fingen"), "werfen": ("warf", "warfen"), "schmeißen": ("schmiss", "schmissen"),
    "öffnen": ("öffnete", "öffneten"), "helfen": ("half", "halfen"), "folgen": ("folgte", "folgten"),
    "danken": ("dankte", "dankten"),
}
P_PRETERITE = 0.4   # the English past as Präteritum ("kaufte") instead of Perfekt ("hat ... gekauft")
# objects that make no sense with a verb (open a cake ...) are allowed only where listed here
OPENABLE = {"door", "window", "box", "bag", "bottle", "book", "letter"}
REPAIRABLE = {"car", "bike", "clock", "lamp", "door", "window", "chair", "table", "phone", "boat", "shoe"}
THING_FILTER = {"open": OPENABLE, "repair": REPAIRABLE, "throw": {"ball", "apple", "key", "bag", "shoe", "hat"},
                "clean": REPAIRABLE | {"cup", "bottle", "hat", "coat"}}

# location: German alternatives (noun, gender, probability), English prepositions it takes
LOCATIONS = {
    "park": ([("Park", "m", 1.0)], ("in", "behind", "next to", "in front of")),
    "garden": ([("Garten", "m", 1.0)], ("in", "behind")),
    "kitchen": ([("Küche", "f", 1.0)], ("in",)),
    "station": ([("Bahnhof", "m", 1.0)], ("at", "in front of", "behind")),
    "school": ([("Schule", "f", 1.0)], ("in front of", "behind", "next to")),
    "market": ([("Markt", "m", 1.0)], ("at",)),
    "river": ([("Fluss", "m", 1.0)], ("at",)),
    "lake": ([("See", "m", 1.0)], ("at",)),
    "church": ([("Kirche", "f", 1.0)], ("in", "behind", "next to", "in front of")),
    "office": ([("Büro", "n", 1.0)], ("in",)),
    "shop": ([("Laden", "m", 0.6), ("Geschäft", "n", 0.4)], ("in", "in front of")),
    "street": ([("Straße", "f", 1.0)], ("on",)),
    "city": ([("Stadt", "f", 1.0)], ("in",)),
    "library": ([("Bibliothek", "f", 0.6), ("Bücherei", "f", 0.4)], ("in", "in front of")),
    "forest": ([("Wald", "m", 1.0)], ("in",)),
    "beach": ([("Strand", "m", 1.0)], ("on",)),
    "bridge": ([("Brücke", "f", 1.0)], ("on", "under")),
    "village": ([("Dorf", "n", 1.0)], ("in",)),
    "hotel": ([("Hotel", "n", 1.0)], ("in", "in front of", "behind")),
}
PREPOSITIONS = {"in": "in", "behind": "hinter", "next to": "neben", "in front of": "vor", "at": "an",
                "on": "auf", "under": "unter"}
# "at the market" is "auf dem Markt", "on the beach" is "am Strand"
PREPOSITION_OVERRIDES = {("at", "market"): "auf", ("on", "beach"): "an"}
CONTRACTIONS = {("in", "dem"): "im", ("an", "dem"): "am"}

# English time adverb: tenses it fits, German alternatives
TIMES = {
    "yesterday": (("past",), [("gestern", 1.0)]),
    "last week": (("past",), [("letzte Woche", 0.6), ("vorige Woche", 0.4)]),
    "today": (("past", "present", "future"), [("heute", 1.0)]),
    "now": (("present",), [("jetzt", 0.7), ("nun", 0.3)]),
    "every day": (("present",), [("jeden Tag", 0.6), ("täglich", 0.4)]),
    "tomorrow": (("future",), [("morgen", 1.0)]),
    "next week": (("future",), [("nächste Woche", 0.7), ("kommende Woche", 0.3)]),
}
CONJUNCTIONS = {
    "because": [("weil", 0.6), ("da", 0.4)],
    "while": [("während", 1.0)],
    "although": [("obwohl", 1.0)],
    "when": None,  # als for a past clause, wenn otherwise
}

DEF_ARTICLE = {"nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
               "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
               "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"}}
INDEF_ARTICLE = {"nom": {"m": "ein", "f": "eine", "n": "ein"},
                 "acc": {"m": "einen", "f": "eine", "n": "ein"},
                 "dat": {"m": "einem", "f": "einer", "n": "einem"}}

LEVELS = {
    0: dict(adj=0.0, adj2=0.0, loc=0.0, time=0.5, tenses=("present", "past"), plural=0.0, sub=0.0, name=0.2,
            dative=False),
    1: dict(adj=0.4, adj2=0.0, loc=0.4, time=0.5, tenses=("present", "past", "future"), plural=0.0, sub=0.0,
            name=0.15, dative=True),
    2: dict(adj=0.5, adj2=0.3, loc=0.4, time=0.5, tenses=("present", "past", "future"), plural=0.3, sub=0.5,
            name=0.15, dative=True),
    3: dict(adj=0.6, adj2=0.4, loc=0.5, time=0.6, tenses=("present", "past", "future"), plural=0.3, sub=1.0,
            name=0.15, dative=True),
}
VORFELD_WEIGHTS = {"S": 0.5, "T": 0.3, "P": 0.2}
P_SCRAMBLE = 0.3            # a definite object (or a name) before the time adverb: "hat den Hund gestern gesehen"
P_SUB_FIRST_DE = 0.4        # German: the subordinate clause before the main clause
P_SUB_FIRST_EN = 0.4        # English source: the same choice, drawn independently
P_TIME_FRONT_EN = 0.4


# -- meaning ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NP:
    noun: str | None = None        # English singular noun, or None for a name
    name: str | None = None
    number: str = "sg"
    definite: bool = True
    adjs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: str
    tense: str                     # present | past | future
    obj: NP
    loc: tuple[str, str] | None = None   # (English preposition, location)
    time: str | None = None


@dataclass(frozen=True)
class Sentence:
    main: Clause
    conj: str | None = None
    sub: Clause | None = None


# -- English ----------------------------------------------------------------------------------------
def _en_np(np: NP) -> str:
    if np.name:
        return np.name
    words = list(np.adjs) + [np.noun if np.number == "sg" else NOUNS[np.noun][0]]
    if np.definite:
        words.insert(0, "the")
    elif np.number == "sg":
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
    return " ".join(words)


def _en_verb(clause: Clause) -> str:
    third, past = VERBS[clause.verb][:2]
    if clause.tense == "future":
        return "will " + clause.verb
    if clause.tense == "past":
        return past
    return third if clause.subj.number == "sg" else clause.verb


def _en_clause(clause: Clause, time_front: bool) -> str:
    words = [clause.time] if clause.time and time_front else []
    words += [_en_np(clause.subj), _en_verb(clause), _en_np(clause.obj)]
    if clause.loc:
        words.append(f"{clause.loc[0]} the {clause.loc[1]}")
    if clause.time and not time_front:
        words.append(clause.time)
    return " ".join(words)


def render_english(sentence: Sentence, rng: random.Random) -> str:
    if sentence.sub is None:
        text = _en_clause(sentence.main, rng.random() < P_TIME_FRONT_EN) + "."
    elif rng.random() < P_SUB_FIRST_EN:
        text = f"{sentence.conj} {_en_clause(sentence.sub, False)}, {_en_clause(sentence.main, False)}."
    else:
        text = f"{_en_clause(sentence.main, rng.random() < P_TIME_FRONT_EN)} {sentence.conj} " \
               f"{_en_clause(sentence.sub, False)}."
    return text[0].upper() + text[1:]


# -- German -----------------------------------------------------------------------------------------
Chunk = tuple  # tuple of (text, probability) alternatives


def _adj_ending(definite: bool, gender: str, case: str, number: str) -> str:
    if number == "pl":
        return "en" if definite or case == "dat" else "e"
    if definite:
        return "e" if case == "nom" or (case == "acc" and gender != "m") else "en"
    if case == "dat":
        return "en"
    if gender == "m":
        return "er" if case == "nom" else "en"
    return "e" if gender == "f" else "es"


def _merge(alternatives) -> Chunk:
    merged: dict[str, float] = {}
    for text, p in alternatives:
        merged[text] = merged.get(text, 0.0) + p
    return tuple(merged.items())


def de_np(np: NP, case: str) -> Chunk:
    if np.name:
        return ((np.name, 1.0),)
    out = []
    adj_alts = [ADJECTIVES[a][1] for a in np.adjs]
    for sg, pl, gender, p_noun in NOUNS[np.noun][2]:
        key = gender if np.number == "sg" else "pl"
        if np.definite:
            article = DEF_ARTICLE[case][key]
        else:
            article = INDEF_ARTICLE[case][gender] if np.number == "sg" else None
        ending = _adj_ending(np.definite, gender, case, np.number)
        noun = sg if np.number == "sg" else pl + ("n" if case == "dat" and not pl.endswith(("n", "s")) else "")
        for combo in itertools.product(*adj_alts):
            p = p_noun
            for _, p_adj in combo:
                p *= p_adj
            words = ([article] if article else []) + [stem + ending for stem, _ in combo] + [noun]
            out.append((" ".join(words), p))
    return _merge(out)


def de_place(loc: tuple[str, str]) -> Chunk:
    prep_en, place = loc
    prep = PREPOSITION_OVERRIDES.get((prep_en, place), PREPOSITIONS[prep_en])
    out = []
    for noun, gender, p in LOCATIONS[place][0]:
        article = DEF_ARTICLE["dat"][gender]
        words = [CONTRACTIONS[(prep, article)]] if (prep, article) in CONTRACTIONS else [prep, article]
        out.append((" ".join(words + [noun]), p))
    return _merge(out)


def _verb_parts(clause: Clause, preterite: bool = False) -> tuple[Chunk, Chunk | None]:
    """(finite part, non-finite part or None)."""
    third_pl = 1 if clause.subj.number == "sg" else 2
    _, _, _, _, _, aux, alts = VERBS[clause.verb]
    if clause.tense == "present":
        return _merge((alt[third_pl], alt[4]) for alt in alts), None
    if clause.tense == "past" and preterite:
        return _merge((PRETERITE[alt[0]][third_pl - 1], alt[4]) for alt in alts), None
    if clause.tense == "past":
        return ((AUX[aux][third_pl - 1], 1.0),), _merge((alt[3], alt[4]) for alt in alts)
    return ((AUX["werden"][third_pl - 1], 1.0),), _merge((alt[0], alt[4]) for alt in alts)


def _conjunction(conj: str, sub: Clause) -> Chunk:
    if conj == "when":
        return (("als" if sub.tense == "past" else "wenn", 1.0),)
    return tuple(CONJUNCTIONS[conj])


@dataclass(frozen=True)
class Variant:
    probability: float
    chunks: tuple[Chunk, ...]


def _clause_chunks(clause: Clause, preterite: bool = False):
    subj = de_np(clause.subj, "nom")
    obj = de_np(clause.obj, VERBS[clause.verb][4])
    time = tuple(TIMES[clause.time][1]) if clause.time else None
    place = de_place(clause.loc) if clause.loc else None
    finite, nonfinite = _verb_parts(clause, preterite)
    return subj, finite, time, obj, place, nonfinite


def _past_forms(clause: Clause) -> list[tuple[bool, float]]:
    """(preterite?, probability): a past clause may be Perfekt or Präteritum."""
    return [(False, 1 - P_PRETERITE), (True, P_PRETERITE)] if clause.tense == "past" else [(False, 1.0)]


Orders = list[tuple[float, list[Chunk]]]


def _time_object(clause: Clause, time: Chunk | None, obj: Chunk) -> Orders:
    """The middle field's time and object: time first; a definite object may also come first."""
    if time is None:
        return [(1.0, [obj])]
    if clause.obj.name or clause.obj.definite:
        return [(1 - P_SCRAMBLE, [time, obj]), (P_SCRAMBLE, [obj, time])]
    return [(1.0, [time, obj])]


def _compact(orders) -> Orders:
    return [(p, [c for c in chunks if c]) for p, chunks in orders]


def _main_orders(clause: Clause) -> Orders:
    """Verb-second orders of a main clause: (probability, chunks) for each verb form, first position and
    middle field."""
    orders = []
    for preterite, p_form in _past_forms(clause):
        subj, fin, time, obj, place, nonfin = _clause_chunks(clause, preterite)
        weights = {k: w for k, w in VORFELD_WEIGHTS.items()
                   if k == "S" or (k == "T" and time) or (k == "P" and place)}
        total = sum(weights.values())
        for p_to, time_object in _time_object(clause, time, obj):
            orders.append((p_form * weights["S"] / total * p_to, [subj, fin, *time_object, place, nonfin]))
        if time:
            orders.append((p_form * weights["T"] / total, [time, fin, subj, obj, place, nonfin]))
        if place:
            for p_to, time_object in _time_object(clause, time, obj):
                orders.append((p_form * weights["P"] / total * p_to, [place, fin, subj, *time_object, nonfin]))
    return _compact(orders)


def _verb_first(clause: Clause) -> Orders:
    orders = []
    for preterite, p_form in _past_forms(clause):
        subj, fin, time, obj, place, nonfin = _clause_chunks(clause, preterite)
        orders += [(p_form * p, [fin, subj, *to, place, nonfin]) for p, to in _time_object(clause, time, obj)]
    return _compact(orders)


def _subordinate(conj: str, clause: Clause) -> Orders:
    orders = []
    for preterite, p_form in _past_forms(clause):
        subj, fin, time, obj, place, nonfin = _clause_chunks(clause, preterite)
        orders += [(p_form * p, [_conjunction(conj, clause), subj, *to, place, nonfin, fin])
                   for p, to in _time_object(clause, time, obj)]
    return _compact(orders)


COMMA: Chunk = ((",", 1.0),)
PERIOD: Chunk = ((".", 1.0),)


def german_variants(sentence: Sentence) -> list[Variant]:
    """Every valid German word order of `sentence`, each a sequence of chunks of alternatives."""
    if sentence.sub is None:
        return [Variant(p, tuple(chunks + [PERIOD])) for p, chunks in _main_orders(sentence.main)]
    subs = _subordinate(sentence.conj, sentence.sub)
    variants = [Variant((1 - P_SUB_FIRST_DE) * p * q, tuple(main + [COMMA] + sub + [PERIOD]))
                for p, main in _main_orders(sentence.main) for q, sub in subs]
    variants += [Variant(P_SUB_FIRST_DE * q * p, tuple(sub + [COMMA] + main + [PERIOD]))
                 for q, sub in subs for p, main in _verb_first(sentence.main)]
    return variants


def _pick(rng: random.Random, alternatives):
    x = rng.random()
    acc = 0.0
    for value, p in alternatives:
        acc += p
        if x < acc:
            return value
    return alternatives[-1][0]


def _join(words: list[str]) -> str:
    text = re.sub(r" ([,.])", r"\1", " ".join(words))
    return text[0].upper() + text[1:]


def render_german(sentence: Sentence, rng: random.Random) -> str:
    """One valid German translation (word order and synonyms sampled with their probabilities)."""
    variants = german_variants(sentence)
    variant = _pick(rng, [(v, v.probability) for v in variants])
    return _join([_pick(rng, chunk) for chunk in variant.chunks])


def all_translations(sentence: Sentence, limit: int = 100_000) -> list[str]:
    out = []
    for variant in german_variants(sentence):
        for words in itertools.product(*[[text for text, _ in chunk] for chunk in variant.chunks]):
            out.append(_join(list(words)))
            if len(out) >= limit:
                return out
    return out


def count_valid_translations(sentence: Sentence) -> int:
    total = 0
    for variant in german_variants(sentence):
        n = 1
        for chunk in variant.chunks:
            n *= len(chunk)
        total += n
    return total


# -- sampling a meaning -----------------------------------------------------------------------------
class TranslationGenerator:
    def __init__(self, difficulty: int):
        self.difficulty = difficulty
        self.level = LEVELS[difficulty]
        self.verbs = sorted(v for v in VERBS if self.level["dative"] or VERBS[v][4] == "acc")

    def _np(self, rng: random.Random, classes, exclude: str | None = None, adj_scale: float = 1.0) -> NP:
        lv = self.level
        if "person" in classes and rng.random() < lv["name"]:
            return NP(name=rng.choice([n for n in NAMES if n != exclude]))
        nouns = [n for n, (_, cls, _) in NOUNS.items() if cls in classes and n != exclude]
        noun = rng.choice(nouns)
        number = "pl" if rng.random() < lv["plural"] else "sg"
        definite = rng.random() < 0.6
        adjs: list[str] = []
        if rng.random() < lv["adj"] * adj_scale:
            fitting = sorted(a for a, (cls, _) in ADJECTIVES.items() if NOUNS[noun][1] in cls)
            adjs.append(rng.choice(fitting))
            if rng.random() < lv["adj2"]:
                adjs.append(rng.choice([a for a in fitting if a != adjs[0]]))
        return NP(noun=noun, number=number, definite=definite, adjs=tuple(adjs))

    def _clause(self, rng: random.Random, adj_scale: float = 1.0, loc_scale: float = 1.0,
                tenses: tuple[str, ...] | None = None) -> Clause:
        lv = self.level
        verb = rng.choice(self.verbs)
        _, _, subj_cls, obj_cls, _, _, _ = VERBS[verb]
        subj = self._np(rng, subj_cls, adj_scale=adj_scale)
        obj = self._np(rng, obj_cls, exclude=subj.noun or subj.name, adj_scale=adj_scale)
        if obj.noun and verb in THING_FILTER and obj.noun not in THING_FILTER[verb] and NOUNS[obj.noun][1] == "thing":
            obj = NP(noun=rng.choice(sorted(THING_FILTER[verb])), number=obj.number, definite=obj.definite,
                     adjs=tuple(a for a in obj.adjs))
        tense = rng.choice(tenses or lv["tenses"])
        loc = None
        if rng.random() < lv["loc"] * loc_scale:
            place = rng.choice(sorted(LOCATIONS))
            loc = (rng.choice(LOCATIONS[place][1]), place)
        time = None
        if rng.random() < lv["time"]:
            time = rng.choice(sorted(t for t, (tenses, _) in TIMES.items() if tense in tenses))
        return Clause(subj, verb, tense, obj, loc, time)

    def sample(self, rng: random.Random) -> Sentence:
        main = self._clause(rng)
        if rng.random() < self.level["sub"]:
            conj = rng.choice(sorted(CONJUNCTIONS))
            tenses = None
            if conj in ("when", "while"):  # same time as the main clause; English uses the present for the future
                tenses = ("present",) if main.tense == "future" else (main.tense,)
            sub = self._clause(rng, adj_scale=0.6, loc_scale=0.5 if self.difficulty < 3 else 1.0, tenses=tenses)
            return Sentence(main, conj, sub)
        return Sentence(main)

    def record(self, rng: random.Random, *, split: str, index: int) -> dict:
        sentence = self.sample(rng)
        english = render_english(sentence, rng)
        return {"translation": {"de": render_german(sentence, rng), "en": english}}


# -- reading English back ---------------------------------------------------------------------------
_NOUN_FORMS = {**{sg: (sg, "sg") for sg in NOUNS}, **{pl: (sg, "pl") for sg, (pl, _, _) in NOUNS.items()}}
_VERB_FORMS = {}
for _verb, (_third, _past, *_rest) in VERBS.items():
    _VERB_FORMS.setdefault(_verb, []).append("base")
    _VERB_FORMS.setdefault(_third, []).append("3sg")
    _VERB_FORMS.setdefault(_past, []).append("past")
_VERB_OF = {**{v: v for v in VERBS}, **{VERBS[v][0]: v for v in VERBS}, **{VERBS[v][1]: v for v in VERBS}}
_NAME_OF = {n.lower(): n for n in NAMES}
_TIME_PHRASES = sorted((tuple(t.split()) for t in TIMES), key=len, reverse=True)
_PREP_PHRASES = sorted((tuple(p.split()) for p in PREPOSITIONS), key=len, reverse=True)
_all_words = [set(NOUNS) | {v[0] for v in NOUNS.values()}, set(ADJECTIVES), set(_VERB_OF), set(_NAME_OF),
              set(LOCATIONS)]
assert sum(map(len, _all_words[:4])) == len(set().union(*_all_words[:4])), "English lexicon categories overlap"


class ParseError(ValueError):
    pass


class _Reader:
    def __init__(self, text: str):
        self.toks = re.findall(r"[a-z]+|[,.]", text.lower())
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise ParseError(f"expected {expected or 'a word'} at token {self.i} of {self.toks}")
        self.i += 1
        return tok

    def phrase(self, phrases) -> str | None:
        for phrase in phrases:
            if tuple(self.toks[self.i:self.i + len(phrase)]) == phrase:
                self.i += len(phrase)
                return " ".join(phrase)
        return None

    def np(self) -> NP:
        tok = self.peek()
        if tok in _NAME_OF:
            self.i += 1
            return NP(name=_NAME_OF[tok])
        definite = tok == "the"
        if tok in ("the", "a", "an"):
            self.i += 1
        adjs = []
        while self.peek() in ADJECTIVES:
            adjs.append(self.take())
        noun = self.take()
        if noun not in _NOUN_FORMS:
            raise ParseError(f"unknown noun {noun!r}")
        noun, number = _NOUN_FORMS[noun]
        if number == "sg" and not definite and tok not in ("a", "an"):
            raise ParseError("a singular noun without an article")
        return NP(noun=noun, number=number, definite=definite, adjs=tuple(adjs))

    def clause(self) -> Clause:
        time = self.phrase(_TIME_PHRASES)
        subj = self.np()
        tok = self.take()
        if tok == "will":
            tense, verb = "future", self.take()
            if verb not in VERBS:
                raise ParseError(f"expected a verb after 'will', got {verb!r}")
        elif tok in _VERB_OF:
            verb = _VERB_OF[tok]
            tense = "past" if "past" in _VERB_FORMS[tok] else "present"
        else:
            raise ParseError(f"expected a verb, got {tok!r}")
        obj = self.np()
        loc = None
        prep = self.phrase(_PREP_PHRASES)
        if prep:
            self.take("the")
            place = self.take()
            if place not in LOCATIONS:
                raise ParseError(f"unknown place {place!r}")
            loc = (prep, place)
        late = self.phrase(_TIME_PHRASES)
        if late:
            if time:
                raise ParseError("two time adverbs")
            time = late
        return Clause(subj, verb, tense, obj, loc, time)


def parse_english(text: str) -> Sentence:
    """The meaning of an English source sentence of the embedded grammar."""
    reader = _Reader(text)
    if reader.peek() in CONJUNCTIONS:
        conj = reader.take()
        sub = reader.clause()
        reader.take(",")
        main = reader.clause()
        sentence = Sentence(main, conj, sub)
    else:
        main = reader.clause()
        if reader.peek() in CONJUNCTIONS:
            conj = reader.take()
            sentence = Sentence(main, conj, reader.clause())
        else:
            sentence = Sentence(main)
    reader.take(".")
    if reader.peek() is not None:
        raise ParseError(f"trailing tokens {reader.toks[reader.i:]}")
    return sentence


# -- oracle -----------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


FUNCTION_WORDS = {"der", "die", "das", "den", "dem", "ein", "eine", "einen", "einem", "einer", "im", "am", "in", "an",
                  "auf", "hinter", "neben", "vor", "unter", "hat", "haben", "ist", "sind", "wird", "werden", "weil",
                  "da", "während", "obwohl", "als", "wenn", ",", "."}
CONTENT_WEIGHT = 0.7   # oracle = CONTENT_WEIGHT * content + (1 - CONTENT_WEIGHT) * order


def _weighted_tokens(text: str) -> list[tuple[str, float]]:
    """Tokens of a chunk alternative with weights: nouns and names 3, other content words 2, function words 1."""
    out = []
    for token in _TOKEN.findall(text):
        low = token.lower()
        weight = 1.0 if low in FUNCTION_WORDS else 3.0 if token[0].isupper() else 2.0
        out.append((low, weight))
    return out


def _chunk_credit(alternative: list[tuple[str, float]], output: Counter) -> float:
    """Weighted share of the alternative's tokens found in the output; a word with the right stem and a
    wrong ending (rotes/roter, Hund/Hunde) counts half."""
    available = Counter(output)
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


@dataclass(frozen=True)
class _OracleReference:
    """What the oracle derives from the English source alone, whatever the output."""

    exact: tuple[tuple[tuple[tuple[str, ...], ...], ...], ...]  # per variant, per chunk: alternatives' tokens
    alternatives: dict[Chunk, tuple]   # chunk -> (weighted tokens, probability, tokens) per alternative
    variants: tuple[tuple[tuple[Chunk, ...], tuple[Chunk, ...]], ...]  # (all chunks, content chunks) per variant


@functools.lru_cache(maxsize=1024)  # an evaluation scores the outputs of 200 test inputs
def _oracle_reference(english: str) -> _OracleReference:
    """Computed once per source and reused for every output scored against it (the greedy output and every
    sample): parsing the source and building its variants cost more than scoring one output."""
    variants = german_variants(parse_english(english))
    exact = tuple(tuple(tuple(tuple(_tokens(text)) for text, _ in chunk) for chunk in variant.chunks)
                  for variant in variants)
    alternatives: dict[Chunk, tuple] = {}
    for variant in variants:
        for chunk in variant.chunks:
            if chunk not in alternatives:
                weighted = [(_weighted_tokens(text), p) for text, p in chunk]
                alternatives[chunk] = tuple((w, p, [t for t, _ in w]) for w, p in weighted)
    chunks = tuple((variant.chunks, tuple(c for c in variant.chunks if c not in (COMMA, PERIOD)))
                   for variant in variants)
    return _OracleReference(exact, alternatives, chunks)


def _spells(tokens: tuple[str, ...], chunks: tuple[tuple[tuple[str, ...], ...], ...]) -> bool:
    """Whether `tokens` are one alternative of each chunk, in order (a valid translation of this variant)."""
    ends = {0}  # where the chunks read so far can end in `tokens`
    for alternatives in chunks:
        ends = {end + len(alt) for end in ends for alt in alternatives if tokens[end:end + len(alt)] == alt}
    return len(tokens) in ends


def translation_oracle(english: str, output: str) -> dict[str, float]:
    reference = _oracle_reference(english)
    out_tokens = _tokens(output)
    if any(_spells(tuple(out_tokens), chunks) for chunks in reference.exact):
        return {"oracle": 1.0, "exact": 1.0, "content": 1.0, "order": 1.0}
    counts = Counter(out_tokens)
    best: dict[Chunk, tuple[float, list[str]]] = {}  # chunk -> (credit, its alternative closest to the output)
    for chunk, alternatives in reference.alternatives.items():
        scored = [(_chunk_credit(weighted, counts), p, toks) for weighted, p, toks in alternatives]
        c, _, toks = max(scored, key=lambda s: (s[0], s[1]))
        best[chunk] = (c, toks)
    result = {"oracle": 0.0, "exact": 0.0, "content": 0.0, "order": 0.0}
    for chunks, content_chunks in reference.variants:  # the valid translation closest to the output
        content = sum(best[c][0] for c in content_chunks) / len(content_chunks)
        candidate = [tok for chunk in chunks for tok in best[chunk][1]]
        order = difflib.SequenceMatcher(None, out_tokens, candidate, autojunk=False).ratio()
        score = CONTENT_WEIGHT * content + (1 - CONTENT_WEIGHT) * order
        if score > result["oracle"]:
            result = {"oracle": score, "exact": 0.0, "content": content, "order": order}
    return result


class TranslationTask(Task):
    """WMT14-like English -> German translation; the hf source is wmt/wmt14 (de-en)."""

    name = "translation"
    headline_metric = "bleu"
    fields = {"translation": dict}
    hf_path = "wmt/wmt14"
    hf_name = "de-en"
    hf_has_validation = True
    default_difficulty = 1

    def prompt(self, example: dict) -> str:
        return "translate English to German: " + example["translation"]["en"]

    def target(self, example: dict) -> str:
        return example["translation"]["de"]

    def _input_text(self, record: dict) -> str:
        return record["translation"]["en"]

    def _generator(self):
        return TranslationGenerator(self._options["difficulty"])

    def _corpus_metrics(self, predictions, references):
        return metrics.bleu_chrf(predictions, references)

    def _example_metric(self, prediction, reference):
        return metrics.sentence_chrf(prediction, reference)

    def _oracle_details(self, example, output):
        return translation_oracle(example["translation"]["en"], output)
