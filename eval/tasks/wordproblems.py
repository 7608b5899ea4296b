"""GSM8K-format word problems generated from seeds (`gsm_synth`): long step-by-step answers a tiny model can learn.

The embedded models answer the short suite (`synthetic`) in at most ~10 tokens, a regime where block-wise
samplers, caches and early stopping have nothing to do. These problems reproduce GSM8K's regime cheaply: a
question of 2-5 chained operations on one quantity and a 40-200 token answer in GSM8K's own style, one sentence
per step with the calculator annotation and a final `#### N`, in GSM8K's zero-shot prompt format:

    Question: Mia has 12 marbles. She buys 6 more marbles. She splits her marbles into 3 equal piles and keeps
    one pile. How many marbles does Mia have now?\\nAnswer:
    ->  " Mia gets 6 more, so she has 12+6 = <<12+6=18>>18 marbles.\\n"
        "Mia keeps one of 3 equal parts, so she has 18/3 = <<18/3=6>>6 marbles.\\n#### 6"

Every problem is exact small-integer arithmetic: addends and subtrahends in [2, `max_operand`], multipliers and
divisors in [2, `max_factor`], every intermediate value in [2, `max_value`], division only when it is exact.
The question is drawn from a finite grammar (3 surface templates for the opening, for each operation and for
the question; 16 names; 16 item nouns), and the answer is a function of the problem alone: one sentence per
operation whose wording depends on the operation, not on the surface template the question used, so every
problem has exactly one canonical solution a model can reproduce.

Split. Train and test are disjoint by construction and by seed:
  * held-out combinations: a (name, item) pair belongs to the test split when (name index + 2 * item index)
    mod 5 == 0 (indices into NAMES and ITEMS), i.e. 3-4 of the 16 items for each name and 3-4 of the 16 names
    for each item; every name, item, template and operation occurs in training, but no test problem's
    name-item pairing ever does, so test accuracy measures recombination rather than recall;
  * seeds: test examples come from their own seed stream ("gsm_synth/test/{seed}"), training draws from the
    trainer's.
Scoring is GSM8K's own (`dllm.eval.tasks.gsm8k.GSM8K.score`, zero-shot format): the `#### N` / last-number
extraction, with lm-eval's strict and flexible filters in `Score.detail`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from dllm.eval.tasks.base import Example, Score
from dllm.eval.tasks.gsm8k import GSM8K
from dllm.eval.tasks.synthetic import Draw, distinct_draws, draw_until

NAME = "gsm_synth"
OPS = "+-*/"
MAX_STEPS = 5
SCORER = GSM8K(prompt_format="zero_shot")  # GSM8K's own scoring, as `task=gsm8k prompt_format=zero_shot`
HELD_OUT_PERIOD = 5  # one (name, item) pair in five is test-only
# (name, subject pronoun, object pronoun, possessive)
NAMES: tuple[tuple[str, str, str, str], ...] = tuple(
    (n, *(("she", "her", "her") if g == "f" else ("he", "him", "his"))) for n, g in (
        ("Mia", "f"), ("Tom", "m"), ("Ava", "f"), ("Leo", "m"), ("Zoe", "f"), ("Sam", "m"), ("Lily", "f"),
        ("Jack", "m"), ("Emma", "f"), ("Ben", "m"), ("Nora", "f"), ("Max", "m"), ("Ruby", "f"), ("Owen", "m"),
        ("Ella", "f"), ("Noah", "m")))
ITEMS: tuple[str, ...] = ("apples", "marbles", "stickers", "pencils", "cookies", "cards", "shells", "books",
                          "stamps", "beads", "coins", "toys", "candies", "flowers", "balloons", "crayons")
# Question sentences; {N} name, {P}/{p} subject pronoun (capitalised / not), {o} object pronoun, {s} possessive.
OPENINGS = ("{N} has {a} {i}.", "{N} starts with {a} {i}.", "{N} owns {a} {i}.")
EVENTS: dict[str, tuple[str, ...]] = {
    "+": ("{P} buys {b} more {i}.", "{P} finds {b} more {i}.", "A friend gives {o} {b} more {i}."),
    "-": ("{P} gives {b} {i} to a friend.", "{P} loses {b} {i}.", "{P} sells {b} {i}."),
    "*": ("{P} then gets {b} times as many {i} as {p} had.", "The number of {i} {p} has becomes {b} times as large.",
          "Every one of {s} {i} is traded for {b} {i}."),
    "/": ("{P} splits {s} {i} into {b} equal piles and keeps one pile.",
          "{P} shares {s} {i} equally among {b} bags and keeps one bag.",
          "{P} divides {s} {i} into {b} equal groups and keeps only one group."),
}
QUESTIONS = ("How many {i} does {N} have now?", "How many {i} does {N} have in the end?",
             "How many {i} does {N} have at the end?")
# The answer: one sentence per operation, fixed by the operation (GSM8K's "a+b = <<a+b=c>>c" annotation).
SOLUTIONS: dict[str, str] = {
    "+": "{N} gets {b} more, so {p} has {x}+{b} = <<{x}+{b}={y}>>{y} {i}.",
    "-": "{N} gives up {b}, so {p} has {x}-{b} = <<{x}-{b}={y}>>{y} {i}.",
    "*": "{N} gets {b} times as many, so {p} has {x}*{b} = <<{x}*{b}={y}>>{y} {i}.",
    "/": "{N} keeps one of {b} equal parts, so {p} has {x}/{b} = <<{x}/{b}={y}>>{y} {i}.",
}


def held_out(name_index: int, item_index: int) -> bool:
    """Whether this (name, item) pairing is reserved for the test split."""
    return (name_index + 2 * item_index) % HELD_OUT_PERIOD == 0


@dataclass(frozen=True)
class Knobs:
    """Difficulty: how many operations, how large operands and values get, which operations occur."""
    min_steps: int = 2
    max_steps: int = 4
    max_operand: int = 20     # every number added or subtracted is in [2, max_operand], as is the start value
    max_factor: int = 5       # every multiplier and divisor is in [2, max_factor]
    max_value: int = 999      # every intermediate value and the answer is in [2, max_value]
    ops: str = OPS            # a subset of "+-*/"

    def __post_init__(self) -> None:
        if not 2 <= self.min_steps <= self.max_steps <= MAX_STEPS:
            raise ValueError(f"need 2 <= min_steps <= max_steps <= {MAX_STEPS}, got min_steps={self.min_steps}, "
                             f"max_steps={self.max_steps}")
        if not 2 <= self.max_operand <= self.max_value or not 2 <= self.max_factor <= self.max_value:
            raise ValueError(f"need 2 <= max_operand <= max_value and 2 <= max_factor <= max_value, got "
                             f"max_operand={self.max_operand}, max_factor={self.max_factor}, "
                             f"max_value={self.max_value}")
        if not self.ops or not set(self.ops) <= set(OPS) or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be distinct characters of {OPS!r}, got {self.ops!r}")


def _operand(rng: random.Random, op: str, x: int, k: Knobs) -> int | None:
    """A random operand b >= 2 for `x op b` that keeps the result in [2, max_value] (exact for "/"), or None.
    (b >= 2: no "1 stamps", no multiplying by one.)"""
    if op == "+":
        hi = min(k.max_operand, k.max_value - x)
    elif op == "-":
        hi = min(k.max_operand, x - 2)
    elif op == "*":
        hi = min(k.max_factor, k.max_value // x)
    else:
        divisors = [b for b in range(2, min(k.max_factor, x // 2) + 1) if x % b == 0]
        return rng.choice(divisors) if divisors else None
    return rng.randint(2, hi) if hi >= 2 else None
    return rng.choice(divisors) if divisors else None


def _apply(op: str, x: int, b: int) -> int:
    return {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]


def _chain(rng: random.Random, k: Knobs) -> tuple[int, list[tuple[str, int]]]:
    """A start value and `steps` (op, operand) pairs, each op drawn uniformly among those feasible at its step."""
    for _ in range(1000):
        x = start = rng.randint(2, k.max_operand)
        steps: list[tuple[str, int]] = []
        for _ in range(rng.randint(k.min_steps, k.max_steps)):
            options = [(op, b) for op in k.ops if (b := _operand(rng, op, x, k)) is not None]
            if not options:
                break
            op, b = rng.choice(options)
            steps.append((op, b))
            x = _apply(op, x, b)
        else:
            return start, steps
    raise ValueError(f"no problem satisfies {k}: widen ops, max_operand or max_value")


def draw(rng: random.Random, k: Knobs) -> Draw:
    """One problem: GSM8K zero-shot prompt, the canonical rationale ending in `#### N`, and its parts in `meta`."""
    ni, ii = rng.randrange(len(NAMES)), rng.randrange(len(ITEMS))
    (name, p, o, s), items = NAMES[ni], ITEMS[ii]
    start, steps = _chain(rng, k)
    words = {"N": name, "P": p.capitalize(), "p": p, "o": o, "s": s, "i": items}
    sentences, lines, x = [rng.choice(OPENINGS).format(a=start, **words)], [], start
    for op, b in steps:
        y = _apply(op, x, b)
        sentences.append(rng.choice(EVENTS[op]).format(b=b, **words))
        lines.append(SOLUTIONS[op].format(b=b, x=x, y=y, **words))
        x = y
    sentences.append(rng.choice(QUESTIONS).format(**words))
    question = " ".join(sentences)
    return Draw(f"Question: {question}\nAnswer:", " " + "\n".join(lines) + f"\n#### {x}",
                {"question": question, "answer": x, "name": name, "item": items, "steps": [list(t) for t in steps],
                 "held_out": held_out(ni, ii)})


@dataclass(frozen=True)
class WordProblems:
    """`gsm_synth` as a `Task`: `n` distinct problems of `split`, identical for the same `seed` and knobs;
    `draw(rng)` gives a fresh problem of `split` for training."""
    split: str = "test"
    n: int = 200
    seed: int = 0
    min_steps: int = 2
    max_steps: int = 4
    max_operand: int = 20
    max_factor: int = 5
    max_value: int = 999
    ops: str = OPS
    name: str = NAME
    stop: ClassVar[tuple[str, ...]] = SCORER.stop

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        self.knobs  # validate the knobs eagerly

    @property
    def knobs(self) -> Knobs:
        return Knobs(self.min_steps, self.max_steps, self.max_operand, self.max_factor, self.max_value, self.ops)

    def draw(self, rng: random.Random) -> Draw:
        """A fresh problem of this split (rejection on the held-out pairing: ~5 tries for test, ~1.25 for train)."""
        knobs, test = self.knobs, self.split == "test"
        return draw_until(lambda: draw(rng, knobs), lambda d: d.meta["held_out"] == test)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = self.draw(rng)
        return d.prompt, d.answer

    def examples(self) -> list[Example]:
        rng = random.Random(f"{NAME}/{self.split}/{self.seed}")
        draws = distinct_draws(lambda: self.draw(rng), self.n, f"{NAME} {self.split} problems at {self.knobs}")
        return [Example(f"{NAME}/{self.split}/{self.seed}/{i}", d.prompt, str(d.meta["answer"]),
                        {"task": NAME, "rationale": d.answer, **d.meta}) for i, d in enumerate(draws)]

    def score(self, example: Example, completion: str) -> Score:
        return SCORER.score(example, completion)
