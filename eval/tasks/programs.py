"""MBPP-format programming tasks generated from seeds (`mbpp_synth`): a spec sentence and three asserts -> code.

Each task is one sentence from a finite grammar, three asserts, and a 4-6 line Python function the sentence
determines exactly, in lm-eval's 0-shot MBPP format (`dllm.eval.tasks.mbpp.lm_eval_text`):

    You are an expert Python programmer, and here is your task: Write a function to return the sum of the even
    numbers in a list, each squared. Your code should pass these tests:\\n\\nassert sum_even_squares([3, 4, 2]) ==
    20\\n...\\n[BEGIN]\\n
    ->  "def sum_even_squares(nums):\\n    total = 0\\n    for x in nums:\\n        if x % 2 == 0:\\n"
        "            total += x * x\\n    return total\\n[DONE]"

The grammar is a loop over a source with an optional filter, an optional map and a reducer:
  source   a list of numbers (`nums`), the numbers 1..n (`range(1, n + 1)`), the characters of a string (`s`)
  filter   numbers: even, odd, greater than k, less than k, divisible by k; characters: vowels, consonants,
           equal to a letter, other than a letter
  map      numbers: squared, plus k, minus k, times k; characters: upper case, doubled
  reducer  numbers: a list, the sum, the count; characters: a string, a list, the count (a count takes no map)
with k in [2, 9]. `depth` is how many of filter and map a task uses (0-2). The function name is built from the
same parts and appears in the asserts; the asserts' expected values come from running the reference code.
Depth 0 (a plain copy, sum or count of the source) is allowed but off by default: it is too easy to be worth
training on.

Split. Train and test are disjoint by construction and by seed:
  * held-out combinations: a task's shape (source s, filter f, map m, reducer r, each an index into its table
    below, 0 = none for filter and map) is test-only when (s + f + 2m + 3r) mod 5 == 0, about one shape in five.
    Every source, filter, map and reducer, and every (source, filter, map) triple whose map is not none, occurs
    in training (two reducers take a map and at most one of them is held out); what the test split asks for
    is a new pairing of known parts, e.g. counting the numbers less than k in a list, where training counts
    other filters of lists and the numbers less than k from 1 to n;
  * seeds: test examples come from their own seed stream ("mbpp_synth/test/{seed}").
Scoring is MBPP's own (`dllm.eval.tasks.mbpp.MBPP`, lm_eval format): cut at "[DONE]", run the code and the
asserts in the sandbox (`dllm.eval.execution.check_program`); pass = no exception.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Sequence

from dllm.eval.tasks.base import Example, Score
from dllm.eval.tasks.mbpp import MBPP, lm_eval_text
from dllm.eval.tasks.synthetic import Draw, distinct_draws, draw_until

NAME = "mbpp_synth"
HELD_OUT_PERIOD = 5
MAX_DEPTH = 2
LETTERS = "abcdeilmnorstu"  # strings and filter letters: enough vowels and repeats for every filter to bite


@dataclass(frozen=True)
class Part:
    key: str
    phrase: str     # in the spec; "{k}" is the constant
    code: str       # the condition or expression; "{k}" as above
    label: str      # in the function name ("" for none)


NONE = Part("none", "", "", "")
NUMBER_FILTERS = (NONE, Part("even", "even numbers", "x % 2 == 0", "even"),
                  Part("odd", "odd numbers", "x % 2 == 1", "odd"),
                  Part("greater", "numbers greater than {k}", "x > {k}", "above{k}"),
                  Part("less", "numbers less than {k}", "x < {k}", "below{k}"),
                  Part("divisible", "numbers divisible by {k}", "x % {k} == 0", "div{k}"))
NUMBER_MAPS = (NONE, Part("square", ", each squared", "x * x", "squares"),
               Part("plus", ", each increased by {k}", "x + {k}", "plus{k}"),
               Part("minus", ", each decreased by {k}", "x - {k}", "minus{k}"),
               Part("times", ", each multiplied by {k}", "x * {k}", "times{k}"))
CHAR_FILTERS = (NONE, Part("vowel", "vowels", "c in 'aeiou'", "vowels"),
                Part("consonant", "consonants", "c not in 'aeiou'", "consonants"),
                Part("equal", "characters equal to '{k}'", "c == '{k}'", "only_{k}"),
                Part("other", "characters other than '{k}'", "c != '{k}'", "no_{k}"))
CHAR_MAPS = (NONE, Part("upper", ", each in upper case", "c.upper()", "upper"),
             Part("double", ", each doubled", "c + c", "doubled"))


@dataclass(frozen=True)
class Reducer:
    key: str
    phrase: str     # "return the sum of the"
    init: str       # "total = 0"
    step: str       # "total += {e}"
    result: str     # "total"
    label: str


LIST = Reducer("list", "return a list of the", "result = []", "result.append({e})", "result", "list")
SUM = Reducer("sum", "return the sum of the", "total = 0", "total += {e}", "total", "sum")
COUNT = Reducer("count", "count the", "count = 0", "count += 1", "count", "count")
JOIN = Reducer("string", "return a string of the", "result = ''", "result += {e}", "result", "join")


@dataclass(frozen=True)
class Source:
    key: str
    arg: str
    loop: str       # the loop header, variable included
    phrase: str     # " in a list"
    suffix: str     # function-name suffix
    noun: str       # the filter phrase when there is no filter ("numbers")
    label: str      # the filter's part of the function name when there is no filter ("nums")
    var: str
    filters: tuple[Part, ...]
    maps: tuple[Part, ...]
    reducers: tuple[Reducer, ...]


SOURCES = (
    Source("list", "nums", "for x in nums:", " in a list", "", "numbers", "nums", "x", NUMBER_FILTERS,
           NUMBER_MAPS, (LIST, SUM, COUNT)),
    Source("range", "n", "for x in range(1, n + 1):", " from 1 to n", "_upto_n", "numbers", "nums", "x",
           NUMBER_FILTERS, NUMBER_MAPS, (LIST, SUM, COUNT)),
    Source("string", "s", "for c in s:", " in a string", "", "characters", "chars", "c", CHAR_FILTERS, CHAR_MAPS,
           (JOIN, LIST, COUNT)),
)


def held_out(source: int, filt: int, mapping: int, reducer: int) -> bool:
    """Whether this program shape (indices into SOURCES and the source's tables) is reserved for the test split."""
    return (source + filt + 2 * mapping + 3 * reducer) % HELD_OUT_PERIOD == 0


@dataclass(frozen=True)
class Knobs:
    """Difficulty: grammar depth (how many of filter and map a program uses) and the size of input numbers."""
    min_depth: int = 1
    max_depth: int = MAX_DEPTH
    max_number: int = 20   # list elements in [0, max_number]; n in [3, max_number // 2]

    def __post_init__(self) -> None:
        if not 0 <= self.min_depth <= self.max_depth <= MAX_DEPTH:
            raise ValueError(f"need 0 <= min_depth <= max_depth <= {MAX_DEPTH}, got min_depth={self.min_depth}, "
                             f"max_depth={self.max_depth}")
        if not 10 <= self.max_number <= 99:
            raise ValueError(f"need 10 <= max_number <= 99, got max_number={self.max_number}")


@dataclass(frozen=True)
class Shape:
    source: int
    filt: int
    mapping: int
    reducer: int
    k_filter: int | str
    k_map: int


def _shape(rng: random.Random, k: Knobs) -> Shape:
    si = rng.randrange(len(SOURCES))
    src = SOURCES[si]
    depth = rng.randint(k.min_depth, k.max_depth)
    stages = {0: (), 1: (rng.choice(("filter", "map")),), 2: ("filter", "map")}[depth]
    fi = rng.randrange(1, len(src.filters)) if "filter" in stages else 0
    mi = rng.randrange(1, len(src.maps)) if "map" in stages else 0
    ri = rng.choice([i for i, r in enumerate(src.reducers) if not (mi and r is COUNT)])
    k_filter = rng.choice(LETTERS) if src.var == "c" else rng.randint(2, 9)
    return Shape(si, fi, mi, ri, k_filter, rng.randint(2, 9))


def program(shape: Shape) -> tuple[str, str, str]:
    """(spec sentence, function name, code) of a shape: the grammar's one spec -> code mapping."""
    src = SOURCES[shape.source]
    filt, mapping, red = src.filters[shape.filt], src.maps[shape.mapping], src.reducers[shape.reducer]
    fill = lambda text, k: text.replace("{k}", str(k))
    noun = fill(filt.phrase, shape.k_filter) if filt is not NONE else src.noun
    spec = f"Write a function to {red.phrase} {noun}{src.phrase}{fill(mapping.phrase, shape.k_map)}."
    labels = [red.label, fill(filt.label, shape.k_filter) or src.label, fill(mapping.label, shape.k_map)]
    fname = "_".join(p for p in labels if p) + src.suffix
    expr = fill(mapping.code, shape.k_map) if mapping is not NONE else src.var
    body = ["    " + red.init, "    " + src.loop]
    step = red.step.replace("{e}", expr)
    if filt is NONE:
        body.append("        " + step)
    else:
        body += ["        if " + fill(filt.code, shape.k_filter) + ":", "            " + step]
    code = "\n".join([f"def {fname}({src.arg}):", *body, f"    return {red.result}"])
    return spec, fname, code


def _inputs(rng: random.Random, src: Source, k: Knobs) -> list:
    """Three distinct inputs for the asserts."""
    seen: list = []
    while len(seen) < 3:
        if src.key == "list":
            x = [rng.randint(0, k.max_number) for _ in range(rng.randint(3, 6))]
        elif src.key == "range":
            x = rng.randint(3, k.max_number // 2)
        else:
            x = "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 8)))
        if x not in seen:
            seen.append(x)
    return seen


def draw(rng: random.Random, k: Knobs) -> Draw:
    """One task: the MBPP 0-shot prompt, the answer "{code}\\n[DONE]", and the asserts and parts in `meta`."""
    shape = _shape(rng, k)
    spec, fname, code = program(shape)
    namespace: dict = {}
    exec(compile(code, f"<{NAME}>", "exec"), namespace)  # our own reference code: run here to get the outputs
    inputs = _inputs(rng, SOURCES[shape.source], k)
    tests = [f"assert {fname}({x!r}) == {namespace[fname](x)!r}" for x in inputs]
    return Draw(lm_eval_text({"text": spec, "test_list": tests}), f"{code}\n[DONE]",
                {"text": spec, "code": code, "tests": tests, "function": fname, "inputs": inputs,
                 "held_out": held_out(shape.source, shape.filt, shape.mapping, shape.reducer)})


@dataclass(frozen=True)
class Programs:
    """`mbpp_synth` as a `Task`: `n` distinct tasks of `split`, identical for the same `seed` and knobs;
    `draw(rng)` gives a fresh task of `split` for training. Programs run `workers` at a time in `score_many`."""
    split: str = "test"
    n: int = 200
    seed: int = 0
    min_depth: int = 1
    max_depth: int = MAX_DEPTH
    max_number: int = 20
    timeout: float = 3.0
    workers: int | None = None
    name: str = NAME
    stop: ClassVar[tuple[str, ...]] = ("[DONE]",)  # MBPP's lm_eval format

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        self.knobs  # validate the knobs eagerly

    @property
    def knobs(self) -> Knobs:
        return Knobs(self.min_depth, self.max_depth, self.max_number)

    @property
    def scorer(self) -> MBPP:
        return MBPP(prompt_format="lm_eval", timeout=self.timeout, workers=self.workers)

    def draw(self, rng: random.Random) -> Draw:
        """A fresh task of this split (rejection on the held-out shape: ~5 tries for test, ~1.25 for train)."""
        knobs, test = self.knobs, self.split == "test"
        return draw_until(lambda: draw(rng, knobs), lambda d: d.meta["held_out"] == test)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = self.draw(rng)
        return d.prompt, d.answer

    def examples(self) -> list[Example]:
        rng = random.Random(f"{NAME}/{self.split}/{self.seed}")
        draws = distinct_draws(lambda: self.draw(rng), self.n, f"{NAME} {self.split} tasks at {self.knobs}")
        # `reference` as MBPP's: the program is imports + code + setup + asserts
        return [Example(f"{NAME}/{self.split}/{self.seed}/{i}", d.prompt,
                        {"imports": [], "setup": "", "tests": d.meta["tests"]}, {"task": NAME, **d.meta})
                for i, d in enumerate(draws)]

    def score(self, example: Example, completion: str) -> Score:
        return self.scorer.score(example, completion)

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Score]:
        return self.scorer.score_many(examples, completions)
