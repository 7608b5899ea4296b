"""Synthetic exact-answer tasks after ParallelBench (furiosa-ai/ParallelBench, arXiv 2510.04767).

ParallelBench's waiting-line tasks (copy, reverse, sort, insert/remove/replace at an index, shuffle) are rebuilt
here over two-digit items "00".."99" instead of person names, plus multi-digit addition, so that a ~1-5 M
parameter diffusion LM can learn all of them from scratch with a ~130-token vocabulary. Prompts are chat-free and
every word is one token (see `dllm.distill.tokenizer`); the model generates the answer and then EOS:

    copy : 12 45 07 99 =                  ->  12 45 07 99
    reverse : 12 45 07 99 =               ->  99 07 45 12
    sort : 12 45 07 99 =                  ->  07 12 45 99
    insert 33 at 2 : 12 45 07 99 =        ->  12 45 33 07 99      (0-based index, as in ParallelBench)
    remove at 2 : 12 45 07 99 =           ->  12 45 99
    replace at 2 with 33 : 12 45 07 99 =  ->  12 45 33 99
    add : 1 2 3 4 + 0 5 6 7 =             ->  0 1 8 0 1           (digit by digit, fixed width, zero-padded)
    shuffle : 12 45 07 99 =               ->  any permutation of the input other than the input itself

Every deterministic task has a point-mass answer, so parallel decoding loses nothing in principle. `shuffle` is
the one set-valued task: its n! - 1 valid answers are strongly coupled (each item exactly once), so positions
committed in the same step from independent marginals duplicate or drop items; with near-uniform marginals one
fully parallel step is valid with probability about n!/n^n (eval.md §3.3). We pick it over a Latin-square row
because it shares the list format, vocabulary and lengths of the other list tasks, so any accuracy gap between
`shuffle` and `copy` isolates the cost of the conditional total correlation rather than a new format.

Train/test disjointness is by construction: each prompt belongs to one split by a stable SHA-256 hash of its
text, and every generator rejects prompts of the other split, so no test prompt can ever be trained on. Test
examples are additionally drawn from their own seed stream.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator, Sequence

from dllm.eval.tasks.base import Example, Score

ITEMS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(100))
DIGITS: tuple[str, ...] = tuple(str(i) for i in range(10))  # addition digits and list indices
SET_VALUED: frozenset[str] = frozenset({"shuffle"})
# Every non-special word a prompt or answer can contain, in a fixed order: the tokenizer's vocabulary.
WORDS: tuple[str, ...] = ("copy", "reverse", "sort", "insert", "remove", "replace", "shuffle", "add",
                          "at", "with", ":", "=", "+") + DIGITS + ITEMS
TEST_FRACTION = 0.1
MAX_LIST_LEN = 9  # an index is one digit token, and insert may use index == len


def split_of(prompt: str) -> str:
    """The split a prompt belongs to, fixed forever by its text (hashlib, so independent of PYTHONHASHSEED)."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    return "test" if h < TEST_FRACTION * 2**64 else "train"


@dataclass(frozen=True)
class Knobs:
    """Difficulty knobs: list lengths for the list tasks, operand digit counts for `add`."""
    min_len: int = 4
    max_len: int = 8
    min_digits: int = 1
    max_digits: int = 4

    def __post_init__(self) -> None:
        if not 2 <= self.min_len <= self.max_len <= MAX_LIST_LEN:  # shuffle needs 2 items to have an answer
            raise ValueError(f"need 2 <= min_len <= max_len <= {MAX_LIST_LEN}, got {self.min_len}, {self.max_len}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits}, {self.max_digits}")


@dataclass(frozen=True)
class Draw:
    prompt: str
    answer: str
    meta: dict  # the parsed input, e.g. {"items": [...]}; `shuffle` scores against it


Generator = Callable[[random.Random, Knobs], Draw]


def draw_until(draw: Callable[[], Draw], keep: Callable[[Draw], bool]) -> Draw:
    """Rejection sampling: the first draw `keep` accepts (a split's prompts, a split's held-out combinations)."""
    while True:
        d = draw()
        if keep(d):
            return d


def distinct_draws(draw: Callable[[], Draw], n: int, what: str) -> list[Draw]:
    """n draws with distinct prompts, in draw order; bounded at 100 n tries, since a tiny knob setting may have
    fewer than n distinct prompts (then a ValueError names `what`)."""
    seen: dict[str, Draw] = {}
    for _ in range(100 * n):
        d = draw()
        seen.setdefault(d.prompt, d)
        if len(seen) == n:
            return list(seen.values())
    raise ValueError(f"could not find {n} distinct {what}")


def _items(rng: random.Random, k: Knobs) -> list[str]:
    # Distinct items, as ParallelBench samples names without replacement: sort/shuffle answers stay unambiguous.
    return rng.sample(ITEMS, rng.randint(k.min_len, k.max_len))


def _fresh(rng: random.Random, xs: list[str]) -> str:
    return rng.choice([x for x in ITEMS if x not in xs])


def _list_task(name: str, fn: Callable[[list[str]], list[str]]) -> Generator:
    def draw(rng: random.Random, k: Knobs) -> Draw:
        xs = _items(rng, k)
        return Draw(f"{name} : {' '.join(xs)} =", " ".join(fn(xs)), {"items": xs})
    return draw


def _insert(rng: random.Random, k: Knobs) -> Draw:
    xs = _items(rng, k)
    new, i = _fresh(rng, xs), rng.randint(0, len(xs))
    return Draw(f"insert {new} at {i} : {' '.join(xs)} =", " ".join(xs[:i] + [new] + xs[i:]), {"items": xs})


def _remove(rng: random.Random, k: Knobs) -> Draw:
    xs = _items(rng, k)
    i = rng.randrange(len(xs))
    return Draw(f"remove at {i} : {' '.join(xs)} =", " ".join(xs[:i] + xs[i + 1:]), {"items": xs})


def _replace(rng: random.Random, k: Knobs) -> Draw:
    xs = _items(rng, k)
    new, i = _fresh(rng, xs), rng.randrange(len(xs))
    return Draw(f"replace at {i} with {new} : {' '.join(xs)} =", " ".join(xs[:i] + [new] + xs[i + 1:]),
                {"items": xs})


def _shuffle(rng: random.Random, k: Knobs) -> Draw:
    xs = _items(rng, k)
    ys = xs
    while ys == xs:  # uniform over the n! - 1 valid answers; terminates fast since n >= 2 and items are distinct
        ys = rng.sample(xs, len(xs))
    return Draw(f"shuffle : {' '.join(xs)} =", " ".join(ys), {"items": xs})


def _number(rng: random.Random, k: Knobs) -> int:
    d = rng.randint(k.min_digits, k.max_digits)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10 ** d - 1)


def _spaced(n: int, width: int) -> str:
    # One token per digit, most significant first, zero-padded to `width`.
    return " ".join(f"{n:0{width}d}")


def _add(rng: random.Random, k: Knobs) -> Draw:
    # Operands are zero-padded to max_digits and the sum to max_digits + 1, so digit i of the answer always sits
    # at the same offset from digit i of each operand: the only cross-position dependence left is the carry
    # chain, which is what makes parallel commits of digits fail. Fixed-width operands are the "padded" format
    # of Lee et al., "Teaching Arithmetic to Small Transformers" (arXiv 2307.03381), which a model this small
    # learns in a CPU budget; variable-width operands add an alignment problem it does not.
    a, b = _number(rng, k), _number(rng, k)
    w = k.max_digits
    return Draw(f"add : {_spaced(a, w)} + {_spaced(b, w)} =", _spaced(a + b, w + 1), {"operands": [a, b]})


GENERATORS: dict[str, Generator] = {
    "copy": _list_task("copy", list),
    "reverse": _list_task("reverse", lambda xs: xs[::-1]),
    "sort": _list_task("sort", sorted),  # string order == numeric order for two-digit items
    "insert_index": _insert,
    "remove_index": _remove,
    "replace_index": _replace,
    "add": _add,
    "shuffle": _shuffle,
}
TASKS: tuple[str, ...] = tuple(GENERATORS)


def score_shuffle(items: Sequence[str], completion: str) -> Score:
    """Valid iff the completion is well-formed items, a permutation of `items`, and not `items` in order."""
    out = completion.strip()
    ys = out.split(" ")  # split on single spaces: a doubled space yields "" and counts as malformed
    well_formed = all(y in ITEMS for y in ys)
    same_multiset = sorted(ys) == sorted(items)
    differs = ys != list(items)
    return Score(well_formed and same_multiset and differs, out,
                 {"well_formed": well_formed, "same_multiset": same_multiset, "differs": differs})


@dataclass(frozen=True)
class SyntheticTask:
    """One synthetic task and split, implementing the `Task` protocol.

    `examples()` gives `n` distinct prompts of `split`, identical for the same `seed`; `sample(rng)` draws one
    fresh (prompt, answer) pair of `split` for training.
    """
    name: str
    split: str = "test"
    n: int = 200
    seed: int = 0
    min_len: int = 4
    max_len: int = 8
    min_digits: int = 1
    max_digits: int = 4
    stop: ClassVar[tuple[str, ...]] = ()  # generation ends at the EOS token, which the loop cuts before scoring

    def __post_init__(self) -> None:
        if self.name not in GENERATORS:
            raise ValueError(f"unknown synthetic task {self.name!r}; choose from {TASKS}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")
        self.knobs  # validate the knobs eagerly

    @property
    def knobs(self) -> Knobs:
        return Knobs(self.min_len, self.max_len, self.min_digits, self.max_digits)

    def draw(self, rng: random.Random) -> Draw:
        """A fresh draw whose prompt belongs to this task's split (rejection: ~10 tries for test, ~1.1 for train)."""
        gen, knobs = GENERATORS[self.name], self.knobs
        return draw_until(lambda: gen(rng, knobs), lambda d: split_of(d.prompt) == self.split)

    def sample(self, rng: random.Random) -> tuple[str, str]:
        d = self.draw(rng)
        return d.prompt, d.answer

    def examples(self) -> list[Example]:
        # A string seed goes through SHA-512 in `random.seed`, so streams are stable and differ per task and split.
        rng = random.Random(f"synthetic/{self.name}/{self.split}/{self.seed}")
        draws = distinct_draws(lambda: self.draw(rng), self.n, f"{self.name} {self.split} prompts at {self.knobs}")
        meta = {"task": self.name, "set_valued": self.name in SET_VALUED}
        return [Example(f"{self.name}/{self.split}/{self.seed}/{i}", d.prompt, d.answer, {**meta, **d.meta})
                for i, d in enumerate(draws)]

    def score(self, example: Example, completion: str) -> Score:
        if self.name in SET_VALUED:
            return score_shuffle(example.meta["items"], completion)
        out = completion.strip()
        return Score(out == example.reference, out)


def suite(split: str = "test", n_per_task: int = 200, seed: int = 0, **knobs: int) -> list[SyntheticTask]:
    """Every synthetic task with the same split, size, seed and difficulty knobs."""
    return [SyntheticTask(name, split, n_per_task, seed, **knobs) for name in TASKS]


def training_draws(rng: random.Random, tasks: Sequence[SyntheticTask],
                   weights: Sequence[float] | None = None) -> Iterator[tuple[SyntheticTask, Draw]]:
    """An endless stream of (task, draw), each from a task chosen at random: uniformly, or in proportion to
    `weights` (one per task)."""
    if any(t.split != "train" for t in tasks):
        raise ValueError("training_draws takes train-split tasks only")
    if weights is not None and (len(weights) != len(tasks) or min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"need one non-negative weight per task with a positive sum, got {list(weights)}")
    while True:
        task = rng.choice(tasks) if weights is None else rng.choices(tasks, weights)[0]
        yield task, task.draw(rng)


@dataclass(frozen=True)
class SyntheticSuite:
    """Several synthetic tasks as one `Task` (the default of dllm-eval and dllm-compare); each example keeps its
    task name in `meta["task"]`, so results can be broken down per task."""
    tasks: tuple[str, ...] = TASKS
    split: str = "test"
    n_per_task: int = 50
    seed: int = 0
    min_len: int = 4
    max_len: int = 8
    min_digits: int = 1
    max_digits: int = 4
    name: str = "synthetic"
    stop: ClassVar[tuple[str, ...]] = ()

    def _members(self) -> dict[str, SyntheticTask]:
        return {t: SyntheticTask(t, self.split, self.n_per_task, self.seed, self.min_len, self.max_len,
                                 self.min_digits, self.max_digits) for t in self.tasks}

    def examples(self) -> list[Example]:
        return [ex for task in self._members().values() for ex in task.examples()]

    def score(self, example: Example, completion: str) -> Score:
        return self._members()[example.meta["task"]].score(example, completion)
