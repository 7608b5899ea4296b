"""mbpp_synth: deterministic generation, disjoint splits by held-out shape and seed, one program per spec, MBPP's
prompt format, MBPP's sandbox scorer on generated programs (all pass) and on broken ones (rejected)."""
from __future__ import annotations

import itertools
import random

import pytest

from dllm.distill.tokenizer import build_suite_tokenizer
from dllm.eval.tasks.base import Task
from dllm.eval.tasks.mbpp import lm_eval_text
from dllm.eval.tasks.programs import COUNT, SOURCES, Knobs, Programs, Shape, held_out, program
from dllm.eval.tasks.synthetic import training_draws

# (original, replacement): each swaps one operator of the reference program for another
OPERATOR_SWAPS = ((" == ", " != "), (" != ", " == "), (" > ", " < "), (" < ", " > "), ("x % ", "x // "),
                  (" in '", " not in '"), ("x + ", "x - "), ("x - ", "x + "), ("x * ", "x + "),
                  ("total += ", "total -= "), ("count += 1", "count += 2"), ("c + c", "c + c + c"),
                  ("c.upper()", "c.lower()"))


def _train(k: int, seed: int = 0, **knobs) -> list:
    stream = training_draws(random.Random(seed), [Programs("train", **knobs)])
    return [d for _, d in itertools.islice(stream, k)]


def _shapes(source: int):
    src = SOURCES[source]
    for f, m, r in itertools.product(range(len(src.filters)), range(len(src.maps)), range(len(src.reducers))):
        if not (m and src.reducers[r] is COUNT):
            yield f, m, r


def test_generation_is_deterministic_per_seed() -> None:
    a, b, c = Programs(n=50).examples(), Programs(n=50).examples(), Programs(n=50, seed=1).examples()
    assert a == b and [e.prompt for e in a] != [e.prompt for e in c]
    assert len({e.prompt for e in a}) == 50 and len({e.id for e in a}) == 50
    assert [d.prompt for d in _train(30)] == [d.prompt for d in _train(30)] != [d.prompt for d in _train(30, 1)]
    assert isinstance(Programs(), Task)


def test_train_and_test_are_disjoint_by_held_out_shape_and_seed() -> None:
    test = [e for seed in (0, 1) for e in Programs("test", 300, seed).examples()]
    train = _train(3000, min_depth=0)
    assert all(e.meta["held_out"] for e in test) and not any(d.meta["held_out"] for d in train)
    assert not {e.prompt for e in test} & {d.prompt for d in train}
    assert not {e.meta["text"] for e in test} & {d.meta["text"] for d in train}  # not even the spec sentence
    assert not {e.prompt for e in Programs("test", 100, 0).examples()} & \
        {e.prompt for e in Programs("test", 100, 7).examples()}
    # about one shape in five is held out; every part, and every (source, filter, map) with a map, is trained on
    shapes = [(s, *t) for s in range(len(SOURCES)) for t in _shapes(s)]
    trained = [t for t in shapes if not held_out(*t)]
    assert 0.15 < 1 - len(trained) / len(shapes) < 0.25
    for s, src in enumerate(SOURCES):
        mine = [t for t in trained if t[0] == s]
        assert {t[1] for t in mine} == set(range(len(src.filters))) and {t[2] for t in mine} == set(
            range(len(src.maps))) and {t[3] for t in mine} == set(range(len(src.reducers)))
        for f, m in itertools.product(range(len(src.filters)), range(1, len(src.maps))):
            assert any(t[1:3] == (f, m) for t in mine), (src.key, f, m)


def test_spec_determines_the_code() -> None:
    # one program per spec sentence across every shape and constant, and distinct specs for distinct programs
    specs: dict[str, str] = {}
    for s, src in enumerate(SOURCES):
        for f, m, r in _shapes(s):
            for kf, km in itertools.product("ae" if src.var == "c" else (2, 7), (3, 5)):
                spec, fname, code = program(Shape(s, f, m, r, kf, km))
                assert specs.setdefault(spec, code) == code and spec.startswith("Write a function to ")
                assert code.startswith(f"def {fname}(") and 4 <= len(code.split("\n")) <= 10
    assert len(set(specs.values())) == len(specs)


def test_prompt_and_answer_are_in_mbpp_lm_eval_format() -> None:
    task = Programs("test", 50)
    assert task.stop == ("[DONE]",)
    for ex in task.examples():
        tests = ex.reference["tests"]
        assert ex.prompt == lm_eval_text({"text": ex.meta["text"], "test_list": tests})
        assert ex.prompt.endswith("\n[BEGIN]\n") and len(tests) == 3 and ex.reference["imports"] == []
        assert all(t.startswith(f"assert {ex.meta['function']}(") for t in tests)
        assert len({repr(x) for x in ex.meta["inputs"]}) == 3   # three distinct inputs
    d = _train(1)[0]
    assert d.answer == d.meta["code"] + "\n[DONE]"


def _differs(code: str, broken: str, function: str, inputs: list) -> bool:
    """Whether the broken function gives another output than the reference on some assert input."""
    ref, new = {}, {}
    exec(code, ref)
    try:
        exec(broken, new)
        return any(new[function](x) != ref[function](x) for x in inputs)
    except Exception:
        return True


def test_mbpp_scorer_passes_every_generated_program_and_rejects_broken_ones() -> None:
    task = Programs("test", 200, workers=2)
    examples = task.examples()
    completions = [ex.meta["code"] + "\n[DONE]\nYou are an expert" for ex in examples]   # cut at [DONE]
    wrong_op, syntax = [], []
    for ex in examples[:40]:
        code = ex.meta["code"]
        old, new = next((o, n) for o, n in OPERATOR_SWAPS if o in code.split("\n", 2)[2])  # past def and init
        broken = code.split("\n", 2)
        broken = "\n".join(broken[:2] + [broken[2].replace(old, new, 1)])
        wrong_op.append((ex, broken, _differs(code, broken, ex.meta["function"], ex.meta["inputs"])))
    for ex in examples[40:60]:
        syntax.append((ex, ex.meta["code"].replace("):\n", ")\n", 1)))   # the def line loses its colon
    scores = task.score_many(examples + [e for e, _, _ in wrong_op] + [e for e, _ in syntax],
                             completions + [b + "\n[DONE]" for _, b, _ in wrong_op] + [b for _, b in syntax])
    gold, ops, syn = scores[:200], scores[200:240], scores[240:]
    assert all(s.correct and s.detail["rule"] == "done" for s in gold), [s.detail for s in gold if not s.correct]
    assert [s.correct for s in ops] == [not differs for _, _, differs in wrong_op]   # rejected iff really wrong
    assert sum(differs for _, _, differs in wrong_op) >= 34                           # and nearly all are wrong
    assert all(not s.correct and s.detail["status"] == "error" for s in syn)
    ex = examples[0]
    one = task.score(ex, completions[0])   # score and score_many agree
    assert (one.correct, one.extracted, one.detail["status"]) == (gold[0].correct, gold[0].extracted, "passed")


def test_answers_are_2_to_10_lines_and_tens_of_suite_tokens() -> None:
    tok = build_suite_tokenizer()
    draws = _train(300)
    lines = [len(d.meta["code"].split("\n")) for d in draws]
    lengths = [len(tok.encode(d.answer).ids) for d in draws]
    print(f"\nlines {min(lines)}-{max(lines)}; answer tokens {min(lengths)}-{max(lengths)}, "
          f"mean {sum(lengths) / len(lengths):.0f}")
    assert 2 <= min(lines) and max(lines) <= 10 and 25 <= min(lengths) and max(lengths) <= 200


def test_depth_knob_sets_the_number_of_stages() -> None:
    for lo, hi in ((0, 0), (1, 1), (2, 2), (0, 2)):
        depths = {("        if " in d.meta["code"]) + (", each " in d.meta["text"])
                  for d in _train(300, min_depth=lo, max_depth=hi)}
        assert depths == set(range(lo, hi + 1)), (lo, hi, depths)
    big = [x for d in _train(300, max_number=60) if d.meta["function"].endswith("upto_n") for x in d.meta["inputs"]]
    assert max(big) > 10 and max(big) <= 30


@pytest.mark.parametrize("bad", [{"min_depth": -1}, {"max_depth": 3}, {"min_depth": 2, "max_depth": 1},
                                 {"max_number": 9}, {"max_number": 100}, {"split": "val"}, {"n": 0}])
def test_bad_knobs_are_refused(bad) -> None:
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        Programs(**bad)
    assert Knobs() == Programs().knobs
