"""Reasoning (GSM8K-like): records {"question", "answer"}; headline metric accuracy_strict.

Embedded generator
------------------
Word problems from six template families (shopping with change, sharing equally, ages, pay per hour,
collecting over days, reading more each day). Each problem is a small computation graph of 2 to 4
arithmetic steps; the answer is GSM8K-formatted worked lines, one per step, each with a calculator
annotation (``The apples cost 3*4 = $<<3*4=12>>12.``) and a last line ``#### 12``.

Several answers are valid for one question:

- independent steps may come in any order (the cost of apples and of pears, ...);
- some problems have two solution graphs (pay: (3+4)*8 or 3*8 + 4*8; collecting: add the new
  stickers first or take away the gift first; sharing: add the gift or subtract what was eaten first);
- + and * operands may be written in either order (p = 0.3 for the swapped order);
- a line shows ``3*4 = <<3*4=12>>12`` or only ``<<3*4=12>>12`` (p = 0.4), as GSM8K lines do;
- every line has 1-2 phrasings.

``count_valid_answers`` counts them (median 64 at level 0, several thousand at level 3).

Difficulty levels (``difficulty`` option, 0..3):

- 0: 2 steps; counts 2-5 and prices 2-9 (single-digit multipliers); every number <= 60.
  Answers ~43 tokens (under a digit-splitting BPE), 98% within 64.
- 1: 2 steps; multipliers up to 9; every number <= 100. ~44 tokens, 97% within 64.
- 2: 3 steps; two-digit operands; every number <= 200. ~66 tokens, up to ~90.
- 3: 4 steps (3-5 lines), every number <= 500, plus one irrelevant sentence with a number (a
  distractor) in the question. ~92 tokens, up to ~150: give the model max_target_tokens >= 160.

Between two levels: the option ``longer_share`` (0..1, default 0; difficulty 0..2) makes that share of
the problems one step longer than the level's, at the level's numbers. At level 1 with 0.5, half the
problems take 3 steps (answers ~67 tokens, up to ~85; questions up to ~53). With 0 no extra random draw
is made, so the data are exactly the level's. (Measured at level 1 with 0.5, README "Calibration": the
default teacher, 2500 steps on 4000 examples, scores 0.96 on the 2-step half and 0.68 on the 3-step half,
which it overfits; on 20000, as in the default study, 1.00 and 0.93.)

Oracle
------
``oracle`` = 1 if the output's final answer (the number after ``#### ``, compared as a number) equals
the reference answer's, else 0 (the brief's definition: the final answer is the score).
``valid_step_fraction`` = the fraction of the output's ``<<a op b=c>>`` annotations whose arithmetic is
right (0 when it has none); ``score()`` reports its mean as ``valid_steps``.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from xkdbench.tasks import metrics
from xkdbench.tasks.base import Task

NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Henry", "Ines", "Jonas", "Kara", "Liam",
         "Maya", "Noah", "Olivia", "Pablo", "Rosa", "Sami", "Tara", "Umar", "Vera", "Will", "Yuki", "Zoe")
RELATIVES = ("sister", "brother", "cousin", "friend")
ITEMS = (("apples", "pears"), ("pens", "pencils"), ("books", "magazines"), ("cups", "plates"),
         ("shirts", "hats"), ("balls", "kites"), ("candles", "lamps"), ("cookies", "muffins"))
COLLECTIBLES = ("stickers", "stamps", "marbles", "shells", "cards", "coins")
SHARED = ("cookies", "candies", "grapes", "crayons", "beads", "nuts")
CONTAINERS = ("boxes", "bags", "jars", "packs")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
DISTRACTORS = ("{P}'s {rel} has {x} toy cars.", "The shop is {x} minutes away from home.",
               "It rained for {x} minutes that day.", "{P} lives {x} miles from the school.")

LEVELS = {
    0: dict(steps=(2,), max_mul=5, max_price=9, limit=60, distractor=False),
    1: dict(steps=(2,), max_mul=9, max_price=9, limit=100, distractor=False),
    2: dict(steps=(3,), max_mul=12, max_price=19, limit=200, distractor=False),
    3: dict(steps=(4,), max_mul=15, max_price=25, limit=500, distractor=True),
}
P_SWAP = 0.3
P_SHORT_CALC = 0.4   # "<<3*4=12>>12" instead of "3*4 = <<3*4=12>>12" (both occur in GSM8K)


@dataclass
class Step:
    """One worked line: value = args[0] op args[1] (op + may take more args).

    args are numbers or names of earlier steps; lines are phrasings with {calc} for
    "3*4 = <<3*4=12>>12" (money lines put "$" before "<<").
    """

    name: str
    op: str
    args: tuple
    lines: tuple[str, ...]
    money: bool = False


@dataclass
class Solution:
    steps: list[Step]
    probability: float = 1.0
    values: dict[str, int] = field(default_factory=dict)   # step name -> value, filled by evaluate()


@dataclass
class Problem:
    question: str
    solutions: list[Solution]
    answer: int = 0


class Retry(Exception):
    """The sampled numbers break a limit; draw again."""


def _apply(op: str, values: list[int]) -> int:
    if op == "+":
        return sum(values)
    if op == "-":
        return values[0] - values[1]
    if op == "*":
        out = 1
        for v in values:
            out *= v
        return out
    if values[1] == 0 or values[0] % values[1]:
        raise Retry
    return values[0] // values[1]


def evaluate(solution: Solution, limit: int) -> int:
    """Fill solution.values; returns the final value. Raises Retry if a value is not in 1..limit."""
    values: dict[str, int] = {}
    for step in solution.steps:
        args = [values[a] if isinstance(a, str) else a for a in step.args]
        value = _apply(step.op, args)
        if not 0 < value <= limit:
            raise Retry
        values[step.name] = value
    solution.values = values
    return values[solution.steps[-1].name]


def _arg_values(step: Step, values: dict[str, int]) -> list[int]:
    return [values[a] if isinstance(a, str) else a for a in step.args]


# -- problem families ---------------------------------------------------------------------------------
def shopping(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p = rng.choice(NAMES)
    a, b = rng.choice(ITEMS)
    c1, c2 = rng.randint(2, lv["max_mul"]), rng.randint(2, lv["max_mul"])
    p1, p2 = rng.randint(2, lv["max_price"]), rng.randint(2, lv["max_price"])
    cost1 = Step("cost1", "*", (c1, p1), (f"The {a} cost {{calc}}.", f"{p} pays {{calc}} for {a}."), True)
    cost2 = Step("cost2", "*", (c2, p2), (f"The {b} cost {{calc}}.", f"{p} pays {{calc}} for {b}."), True)
    total = Step("total", "+", ("cost1", "cost2"), (f"In total {p} spends {{calc}}.", "Together they cost {calc}."),
                 True)
    if n_steps == 3:
        question = (f"{p} buys {c1} {a} for ${p1} each and {c2} {b} for ${p2} each. "
                    f"How much money does {p} spend?")
        return Problem(question, [Solution([cost1, cost2, total])])
    one_item = n_steps == 2
    spent = c1 * p1 if one_item else c1 * p1 + c2 * p2
    bills = [x for x in (10, 20, 50, 100, 200, 500) if spent < x <= lv["limit"]][:2]
    if not bills:
        raise Retry
    bill = rng.choice(bills)
    change_of = "cost1" if one_item else "total"
    change = Step("change", "-", (bill, change_of), (f"{p} gets {{calc}} back.", "The change is {calc}."), True)
    if one_item:
        question = f"{p} buys {c1} {a} for ${p1} each and pays with a ${bill} bill. How much change does {p} get?"
        return Problem(question, [Solution([cost1, change])])
    question = (f"{p} buys {c1} {a} for ${p1} each and {c2} {b} for ${p2} each. {p} pays with a ${bill} bill. "
                f"How much change does {p} get?")
    return Problem(question, [Solution([cost1, cost2, total, change])])


def sharing(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p = rng.choice(NAMES)
    thing, box = rng.choice(SHARED), rng.choice(CONTAINERS)
    boxes, per_box = rng.randint(2, lv["max_mul"]), rng.randint(2, lv["max_mul"])
    friends = rng.randint(2, 9)
    total = boxes * per_box
    have = Step("have", "*", (boxes, per_box), (f"{p} has {{calc}} {thing}.", f"There are {{calc}} {thing}."))
    intro = f"{p} has {boxes} {box} of {thing} with {per_box} {thing} in each."
    ask = f"{p} shares {{what}} equally among {friends} friends. How many {thing} does each friend get?"
    if n_steps == 2:
        if total % friends:
            raise Retry
        each = Step("each", "/", ("have", friends), (f"Each friend gets {{calc}} {thing}.",
                                                      "Each gets {calc}."))
        return Problem(f"{intro} {ask.format(what='them')}", [Solution([have, each])])
    eaten = (total % friends) or friends
    eaten += friends * rng.randint(0, 2)
    if eaten >= total:
        raise Retry
    eat = Step("left", "-", ("have", eaten), (f"{{calc}} {thing} are left.",
                                             f"{p} has {{calc}} {thing} left."))
    if n_steps == 3:
        each = Step("each", "/", ("left", friends), (f"Each friend gets {{calc}} {thing}.",
                                                      "Each gets {calc}."))
        question = f"{intro} {p} eats {eaten} of them. {ask.format(what='the rest')}"
        return Problem(question, [Solution([have, eat, each])])
    gift = rng.randint(2, 9) * friends
    question = (f"{intro} {p} eats {eaten} of them, and then gets {gift} more {thing} from a neighbor. "
                f"{ask.format(what='all of them')}")
    # two valid orders of the subtraction and the addition
    eat_first = [have, eat, Step("all", "+", ("left", gift), (f"Now {p} has {{calc}} {thing}.",
                                                              f"Now {p} has {{calc}}.")),
                 Step("each", "/", ("all", friends), (f"Each friend gets {{calc}} {thing}.",
                                                      "Each gets {calc}."))]
    gift_first = [have, Step("more", "+", ("have", gift), (f"Now {p} has {{calc}}.",
                                                           f"Then {p} has {{calc}}.")),
                  Step("left", "-", ("more", eaten), (f"{{calc}} {thing} are left.",
                                                      f"{p} has {{calc}} {thing} left.")),
                  Step("each", "/", ("left", friends), (f"Each friend gets {{calc}} {thing}.",
                                                        "Each gets {calc}."))]
    return Problem(question, [Solution(eat_first, 0.6), Solution(gift_first, 0.4)])


def ages(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p, q = rng.sample(NAMES, 2)
    rel = rng.choice(RELATIVES)
    x, y = rng.randint(3, 12), rng.randint(2, 9)
    older = Step("q", "+", (x, y), (f"{q} is {{calc}} years old.", f"{q} is {{calc}}."))
    intro = f"{p} is {x} years old. {p}'s {rel} {q} is {y} years older than {p}."
    if n_steps == 2:
        if rng.random() < 0.5:
            m = rng.randint(2, 4)
            parent = Step("r", "*", ("q", m), ("Their aunt is {calc}.", "The aunt is {calc} years old."))
            return Problem(f"{intro} Their aunt is {m} times as old as {q}. How old is their aunt?",
                           [Solution([older, parent])])
        both = Step("sum", "+", (x, "q"), ("Together they are {calc}.", "The sum is {calc}."))
        return Problem(f"{intro} What is the sum of their ages?", [Solution([older, both])])
    m = rng.randint(2, 4)
    aunt = Step("r", "*", ("q", m), ("Their aunt is {calc}.", "The aunt is {calc} years old."))
    if n_steps == 3:
        total = Step("sum", "+", (x, "q", "r"), ("Together they are {calc}.",
                                                 "The sum is {calc}."))
        question = f"{intro} Their aunt is {m} times as old as {q}. What is the sum of the ages of all three?"
        return Problem(question, [Solution([older, aunt, total])])
    n = rng.randint(2, 9)
    later = Step("later", "+", ("r", n), (f"In {n} years she will be {{calc}}.",
                                          "The aunt will be {calc}."))
    total = Step("sum", "+", (x, "q", "later"), ("Together they are {calc}.",
                                                 "The sum is {calc}."))
    question = (f"{intro} Their aunt is {m} times as old as {q}. What is the sum of {p}'s age, {q}'s age and "
                f"the age the aunt will have in {n} years?")
    return Problem(question, [Solution([older, aunt, later, total])])


def pay(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p = rng.choice(NAMES)
    rate = rng.randint(2, lv["max_price"])
    d1, d2, d3 = rng.sample(DAYS, 3)
    h1, h2, h3 = (rng.randint(2, min(9, lv["max_mul"])) for _ in range(3))
    earn = (f"{p} earns {{calc}}.", "The pay is {calc}.")
    if n_steps == 2:
        question = f"{p} earns ${rate} per hour. {p} works {h1} hours on {d1} and {h2} hours on {d2}. " \
                   f"How much does {p} earn?"
        hours = Step("hours", "+", (h1, h2), (f"{p} works {{calc}} hours.", "That is {calc} hours."))
        by_hours = Solution([hours, Step("pay", "*", ("hours", rate), earn, True)], 0.7)
        by_day = Solution([Step("e1", "*", (h1, rate), (f"On {d1} {p} earns {{calc}}.",), True),
                           Step("e2", "*", (h2, rate), (f"On {d2} {p} earns {{calc}}.",), True),
                           Step("pay", "+", ("e1", "e2"), earn, True)], 0.3)
        return Problem(question, [by_hours, by_day])
    spend = rng.randint(2, 20)
    if n_steps == 3:
        question = (f"{p} earns ${rate} per hour. {p} works {h1} hours on {d1} and {h2} hours on {d2}, "
                    f"and then spends ${spend} on lunch. How much money does {p} have left?")
        hours = Step("hours", "+", (h1, h2), (f"{p} works {{calc}} hours.", "That is {calc} hours."))
        left = Step("left", "-", ("pay", spend), (f"{p} has {{calc}} left.", "{calc} is left."), True)
        return Problem(question, [Solution([hours, Step("pay", "*", ("hours", rate), earn, True), left])])
    question = (f"{p} earns ${rate} per hour. {p} works {h1} hours on {d1}, {h2} hours on {d2} and {h3} hours "
                f"on {d3}, and then spends ${spend} on lunch. How much money does {p} have left?")
    hours = Step("hours", "+", (h1, h2, h3), (f"{p} works {{calc}} hours.", "That is {calc} hours."))
    left = Step("left", "-", ("pay", spend), (f"{p} has {{calc}} left.", "{calc} is left."), True)
    by_hours = Solution([hours, Step("pay", "*", ("hours", rate), earn, True), left], 0.7)
    by_day = Solution([Step("e1", "*", (h1, rate), (f"On {d1} {p} earns {{calc}}.",), True),
                       Step("e2", "*", (h2, rate), (f"On {d2} {p} earns {{calc}}.",), True),
                       Step("e3", "*", (h3, rate), (f"On {d3} {p} earns {{calc}}.",), True),
                       Step("pay", "+", ("e1", "e2", "e3"), earn, True), left], 0.3)
    return Problem(question, [by_hours, by_day])


def collecting(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p = rng.choice(NAMES)
    thing = rng.choice(COLLECTIBLES)
    start, per_day, days = rng.randint(5, lv["limit"] // 3), rng.randint(2, lv["max_mul"]), rng.randint(2, 9)
    new = Step("new", "*", (per_day, days), (f"{p} gets {{calc}} new {thing}.",
                                             f"That is {{calc}} new {thing}."))
    intro = f"{p} has {start} {thing}. Every day {p} gets {per_day} more {thing}, for {days} days."
    ask = f"How many {thing} does {p} have now?"
    if n_steps == 2:
        now = Step("now", "+", (start, "new"), (f"{p} now has {{calc}} {thing}.", "That makes {calc}."))
        return Problem(f"{intro} {ask}", [Solution([new, now])])
    gift = rng.randint(2, start - 1) if start > 3 else 0
    if not gift:
        raise Retry
    question = f"{intro} Then {p} gives {gift} {thing} to a friend. {ask}"
    add_first = [new, Step("sum", "+", (start, "new"), (f"{p} has {{calc}} {thing}.", "That makes {calc}.")),
                 Step("now", "-", ("sum", gift), (f"After the gift {p} has {{calc}}.",
                                                  f"{p} now has {{calc}} {thing}."))]
    gift_first = [Step("kept", "-", (start, gift), (f"Without the gift {p} has {{calc}}.",)),
                  new, Step("now", "+", ("kept", "new"), (f"{p} now has {{calc}} {thing}.",
                                                          "That makes {calc}."))]
    if n_steps == 3:
        return Problem(question, [Solution(add_first, 0.7), Solution(gift_first, 0.3)])
    bonus = rng.randint(2, 9)
    question = f"{intro} Then {p} gives {gift} {thing} to a friend and finds {bonus} more. {ask}"
    tail = Step("final", "+", ("now", bonus), (f"In the end {p} has {{calc}}.",
                                               f"Now {p} has {{calc}} {thing}."))
    return Problem(question, [Solution(add_first + [tail], 0.7), Solution(gift_first + [tail], 0.3)])


def reading(rng: random.Random, n_steps: int, lv: dict) -> Problem:
    p = rng.choice(NAMES)
    x, m = rng.randint(3, lv["limit"] // 6), rng.randint(2, 4)
    tuesday = Step("tue", "*", (x, m), ("On Tuesday it is {calc} pages.", "Tuesday: {calc} pages."))
    intro = f"{p} reads {x} pages on Monday. On Tuesday {p} reads {m} times as many pages as on Monday."
    if n_steps == 2:
        total = Step("total", "+", (x, "tue"), ("In total it is {calc} pages.", "That is {calc} pages."))
        return Problem(f"{intro} How many pages does {p} read on the two days?", [Solution([tuesday, total])])
    y = rng.randint(2, 9)
    wednesday = Step("wed", "-", ("tue", y), ("On Wednesday it is {calc} pages.",
                                              "Wednesday: {calc} pages."))
    question = f"{intro} On Wednesday {p} reads {y} fewer pages than on Tuesday. How many pages does {p} read " \
               f"on the three days?"
    total = Step("total", "+", (x, "tue", "wed"), ("In total it is {calc} pages.", "That is {calc} pages."))
    if n_steps == 3:
        return Problem(question, [Solution([tuesday, wednesday, total])])
    z = rng.randint(2, 9)
    question = (f"{intro} On Wednesday {p} reads {y} fewer pages than on Tuesday. On Thursday {p} reads {z} pages "
                f"more than on Monday. How many pages does {p} read on the four days?")
    thursday = Step("thu", "+", (x, z), ("On Thursday it is {calc} pages.",
                                         "Thursday: {calc} pages."))
    total = Step("total", "+", (x, "tue", "wed", "thu"), ("In total it is {calc} pages.",
                                                         "That is {calc} pages."))
    return Problem(question, [Solution([tuesday, wednesday, thursday, total])])


FAMILIES = {"shopping": shopping, "sharing": sharing, "ages": ages, "pay": pay, "collecting": collecting,
            "reading": reading}
# which step counts each family supports
FAMILY_STEPS = {"shopping": (2, 3, 4), "sharing": (2, 3, 4), "ages": (2, 3, 4), "pay": (2, 3, 4),
                "collecting": (2, 3, 4), "reading": (2, 3, 4)}


# -- answers ----------------------------------------------------------------------------------------
def _topological_orders(steps: list[Step]) -> list[list[Step]]:
    names = {s.name for s in steps}
    out = []
    for perm in itertools.permutations(steps):
        done: set[str] = set()
        ok = True
        for step in perm:
            if any(isinstance(a, str) and a in names and a not in done for a in step.args):
                ok = False
                break
            done.add(step.name)
        if ok and perm[-1] is steps[-1]:  # the asked-for value comes last
            out.append(list(perm))
    return out


def _line(step: Step, values: dict[str, int], args: list[int], phrasing: str, short: bool) -> str:
    expr = step.op.join(str(a) for a in args)
    value = values[step.name]
    calc = f"{'$' if step.money else ''}<<{expr}={value}>>{value}"
    return phrasing.format(calc=calc if short else f"{expr} = {calc}")


def render_answer(problem: Problem, rng: random.Random) -> str:
    """One valid worked answer: solution graph, step order, operand order and phrasings sampled."""
    x = rng.random()
    acc = 0.0
    solution = problem.solutions[-1]
    for s in problem.solutions:
        acc += s.probability
        if x < acc:
            solution = s
            break
    orders = _topological_orders(solution.steps)
    order = orders[0] if rng.random() < 0.5 else rng.choice(orders)
    lines = []
    for step in order:
        args = _arg_values(step, solution.values)
        if step.op in "+*" and rng.random() < P_SWAP:
            args = args[::-1]
        phrasing = rng.choice(step.lines)
        lines.append(_line(step, solution.values, args, phrasing, rng.random() < P_SHORT_CALC))
    lines.append(f"#### {problem.answer}")
    return "\n".join(lines)


def count_valid_answers(problem: Problem) -> int:
    total = 0
    for solution in problem.solutions:
        n = len(_topological_orders(solution.steps))
        for step in solution.steps:
            args = _arg_values(step, solution.values)
            n *= len(step.lines) * 2 * (2 if step.op in "+*" and args != args[::-1] else 1)  # x2: calc forms
        total += n
    return total


class ReasoningGenerator:
    def __init__(self, difficulty: int, longer_share: float = 0.0):
        self.difficulty = difficulty
        self.level = LEVELS[difficulty]
        self.longer_share = longer_share

    def sample(self, rng: random.Random) -> Problem:
        lv = self.level
        for _ in range(1000):
            family = rng.choice(sorted(FAMILIES))
            n_steps = rng.choice(lv["steps"])
            if self.longer_share and rng.random() < self.longer_share:
                n_steps += 1
            try:
                problem = FAMILIES[family](rng, n_steps, lv)
                answers = {evaluate(solution, lv["limit"]) for solution in problem.solutions}
            except Retry:
                continue
            if len(answers) != 1:
                raise AssertionError(f"solutions of one {family} problem disagree: {answers}")
            problem.answer = answers.pop()
            if lv["distractor"]:
                sentences = problem.question.split(". ")
                name = problem.question.split()[0]
                extra = rng.choice(DISTRACTORS).format(P=name, x=rng.randint(2, 60), rel=rng.choice(RELATIVES))
                sentences.insert(rng.randint(1, len(sentences) - 1), extra.rstrip("."))
                problem.question = ". ".join(sentences)
            return problem
        raise RuntimeError("could not sample a problem within the limits")

    def record(self, rng: random.Random, *, split: str, index: int) -> dict:
        problem = self.sample(rng)
        return {"question": problem.question, "answer": render_answer(problem, rng)}


# -- oracle -----------------------------------------------------------------------------------------
def final_answer(text: str) -> float | None:
    """The number after the first '#### ' (lm-eval's strict extraction), as a number."""
    extracted = metrics.gsm8k_extract_strict(text)
    return None if extracted == metrics.INVALID else metrics.parse_number(extracted)


def reasoning_oracle(reference_answer: str, output: str) -> dict[str, float]:
    gold = final_answer(reference_answer)
    if gold is None:
        raise ValueError(f"the reference answer has no '#### N' line: {reference_answer!r}")
    predicted = final_answer(output)
    correct = 1.0 if predicted is not None and abs(predicted - gold) < 1e-9 else 0.0
    valid, total = metrics.annotation_validity(output)
    return {"oracle": correct, "answer_correct": correct, "valid_step_fraction": valid / total if total else 0.0}


class ReasoningTask(Task):
    """GSM8K-like arithmetic word problems; the hf source is openai/gsm8k (main)."""

    name = "reasoning"
    headline_metric = "accuracy_strict"
    fields = {"question": str, "answer": str}
    hf_path = "openai/gsm8k"
    hf_name = "main"
    hf_has_validation = False
    default_difficulty = 1
    generator_options = ("longer_share",)

    def prompt(self, example: dict) -> str:
        return "question: " + example["question"]

    def target(self, example: dict) -> str:
        return example["answer"]

    def _input_text(self, record: dict) -> str:
        return record["question"]

    def _resolve_generator_options(self, options, difficulty):
        share = options.get("longer_share", 0.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"longer_share must be a number in [0, 1] (the share of problems one step longer "
                             f"than the level's), got {share!r}")
        if share and difficulty == max(LEVELS):  # the families write at most the top level's steps
            raise ValueError(f"longer_share must be 0 at difficulty {difficulty}: its problems already take the "
                             f"most steps the generator writes; allowed at difficulty 0..{max(LEVELS) - 1}")
        return {"longer_share": float(share)}

    def _generator(self):
        return ReasoningGenerator(self._options["difficulty"], self._options["longer_share"])

    def _corpus_metrics(self, predictions, references):
        return metrics.gsm8k_accuracy(predictions, references)

    def _example_metric(self, prediction, reference):
        return 1.0 if metrics.gsm8k_correct(metrics.gsm8k_extract_strict(prediction), reference) else 0.0

    def _oracle_details(self, example, output):
        return reasoning_oracle(example["answer"], output)

    def _extra_oracle_metrics(self, details):
        return {"valid_steps": sum(d["valid_step_fraction"] for d in details) / len(details)}
