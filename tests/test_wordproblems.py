"""gsm_synth: deterministic generation, disjoint splits by held-out pairing and seed, exact canonical rationales,
GSM8K's own scoring (strict and flexible) on generated solutions and on corrupted ones, answer lengths, knobs."""
from __future__ import annotations

import itertools
import random
import re

import pytest

from dllm.distill.tokenizer import build_suite_tokenizer
from dllm.eval.tasks.base import Task
from dllm.eval.tasks.gsm8k import GSM8K
from dllm.eval.tasks.synthetic import training_draws
from dllm.eval.tasks.wordproblems import (EVENTS, ITEMS, NAMES, OPENINGS, QUESTIONS, Knobs, WordProblems, draw,
                                          held_out)

LINE = re.compile(r"^(\w+) .*?, so (?:he|she) has (\d+)([-+*/])(\d+) = <<(\d+)([-+*/])(\d+)=(\d+)>>(\d+) (\w+)\.$")


def _train(k: int, seed: int = 0, **knobs) -> list:
    stream = training_draws(random.Random(seed), [WordProblems("train", **knobs)])
    return [d for _, d in itertools.islice(stream, k)]


def test_generation_is_deterministic_per_seed() -> None:
    a, b, c = WordProblems(n=50).examples(), WordProblems(n=50).examples(), WordProblems(n=50, seed=1).examples()
    assert a == b and [e.prompt for e in a] != [e.prompt for e in c]
    assert len({e.prompt for e in a}) == 50 and len({e.id for e in a}) == 50
    assert [d.prompt for d in _train(30)] == [d.prompt for d in _train(30)] != [d.prompt for d in _train(30, 1)]
    assert isinstance(WordProblems(), Task)


def test_train_and_test_are_disjoint_by_held_out_pairing_and_seed() -> None:
    test = [e for seed in (0, 1) for e in WordProblems("test", 300, seed).examples()]
    train = _train(5000)
    index = lambda name, item: (next(i for i, n in enumerate(NAMES) if n[0] == name), ITEMS.index(item))
    assert all(held_out(*index(e.meta["name"], e.meta["item"])) for e in test)
    assert not any(held_out(*index(d.meta["name"], d.meta["item"])) for d in train)
    assert not {e.prompt for e in test} & {d.prompt for d in train}
    # about one pairing in five is held out, for every name and every item; all parts still occur in training
    pairs = [(i, j) for i in range(len(NAMES)) for j in range(len(ITEMS)) if held_out(i, j)]
    assert 0.15 < len(pairs) / (len(NAMES) * len(ITEMS)) < 0.25
    assert {i for i, _ in pairs} == set(range(len(NAMES))) and {j for _, j in pairs} == set(range(len(ITEMS)))
    assert {d.meta["name"] for d in train} == {n[0] for n in NAMES} and {d.meta["item"] for d in train} == set(ITEMS)
    questions = " ".join(d.meta["question"] for d in train)
    for template in OPENINGS + QUESTIONS + tuple(t for ts in EVENTS.values() for t in ts):
        head = template.split("{")[0] or template.split("}")[1].split("{")[0]
        assert head in questions, template
    # test problems come from their own seed stream: same split, different seed -> different problems
    assert not {e.prompt for e in WordProblems("test", 100, 0).examples()} & \
        {e.prompt for e in WordProblems("test", 100, 7).examples()}


def _check_rationale(prompt: str, answer: str, meta: dict, k: Knobs) -> None:
    """The rationale is GSM8K-style, one annotated sentence per step, arithmetically exact and within the knobs."""
    *lines, final = answer[1:].split("\n")
    assert answer.startswith(" ") and final == f"#### {meta['answer']}"
    assert prompt == f"Question: {meta['question']}\nAnswer:"
    assert k.min_steps <= len(lines) == len(meta["steps"]) <= k.max_steps
    x = None
    for line, (op, b) in zip(lines, meta["steps"]):
        m = LINE.match(line)
        assert m, line
        name, a, o, bb, a2, o2, b2, y, y2, item = m.groups()
        assert name == meta["name"] and item == meta["item"] and (o, o2, int(bb), int(b2)) == (op, op, b, b)
        assert a == a2 and y == y2 and (x is None or int(a) == x) and op in k.ops
        assert eval(f"{a}{op}{b}") == int(y) and (op != "/" or int(a) % b == 0)   # exact
        limit = k.max_factor if op in "*/" else k.max_operand
        assert 2 <= b <= limit and 2 <= int(y) <= k.max_value and f" {b} " in meta["question"]
        x = int(y)
    assert x == meta["answer"]


@pytest.mark.parametrize("knobs", [{}, {"min_steps": 5, "max_steps": 5, "max_value": 200, "max_operand": 9},
                                   {"ops": "+-", "min_steps": 3, "max_steps": 3}, {"ops": "*/", "max_factor": 9}])
def test_rationales_are_exact_and_follow_the_knobs(knobs) -> None:
    k, draws = Knobs(**knobs), _train(400, **knobs)
    for d in draws:
        _check_rationale(d.prompt, d.answer, d.meta, k)
    assert {len(d.meta["steps"]) for d in draws} == set(range(k.min_steps, k.max_steps + 1))
    assert {op for d in draws for op, _ in d.meta["steps"]} == set(k.ops)


def test_one_canonical_solution_per_problem() -> None:
    # the rationale is a function of the question: equal questions never get different answers
    by_question: dict[str, str] = {}
    for d in _train(3000, max_steps=2, max_operand=4, max_factor=2, max_value=12, ops="+-"):
        assert by_question.setdefault(d.prompt, d.answer) == d.answer
    assert len(by_question) < 3000   # the tiny setting repeats questions, so the check above had teeth


def test_gsm8k_scorer_accepts_every_generated_solution_and_rejects_wrong_numbers() -> None:
    task = WordProblems("test", 200)
    assert task.stop == GSM8K(prompt_format="zero_shot").stop
    for ex in task.examples():
        good = task.score(ex, ex.meta["rationale"])
        assert good.correct and good.detail == {"rule": "strict", "strict": True, "flexible": True}
        assert good.extracted == ex.reference == str(ex.meta["answer"])
        assert task.score(ex, ex.meta["rationale"] + "\nQuestion: more text 7").correct   # cut at the stop
        n = ex.meta["answer"]
        wrong = ex.meta["rationale"].replace(f"#### {n}", f"#### {n + 1}")
        bad = task.score(ex, wrong)
        assert not bad.correct and not bad.detail["strict"] and not bad.detail["flexible"]
        assert not task.score(ex, ex.meta["rationale"].rsplit("\n", 1)[0]).detail["strict"]   # no "#### N"


def test_answers_are_40_to_200_suite_tokens() -> None:
    tok = build_suite_tokenizer()
    for knobs in ({}, {"max_steps": 5}):
        lengths = [len(tok.encode(d.answer).ids) for d in _train(300, **knobs)]
        print(f"\nanswer tokens at {knobs}: {min(lengths)}-{max(lengths)}, mean {sum(lengths) / len(lengths):.0f}")
        assert 40 <= min(lengths) and max(lengths) <= 200


@pytest.mark.parametrize("bad", [{"min_steps": 1}, {"max_steps": 6}, {"min_steps": 4, "max_steps": 3},
                                 {"max_operand": 1}, {"max_operand": 30, "max_value": 20}, {"max_factor": 1},
                                 {"ops": ""}, {"ops": "+%"}, {"ops": "++"}, {"split": "val"}, {"n": 0}])
def test_bad_knobs_are_refused(bad) -> None:
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        WordProblems(**bad)


def test_impossible_knobs_raise_instead_of_looping() -> None:
    with pytest.raises(ValueError, match="no problem satisfies"):
        draw(random.Random(0), Knobs(min_steps=5, max_steps=5, ops="/"))
