"""Contract tests for the synthetic ParallelBench-style suite and its word-level tokenizer."""
from __future__ import annotations

import itertools
import random

import pytest
from transformers import AutoTokenizer

from dllm.distill.tokenizer import EOS, EOS_ID, MASK_ID, PAD_ID, SPECIALS, UNK_ID, build_tokenizer, save_tokenizer
from dllm.eval.tasks.base import Task
from dllm.eval.tasks.synthetic import (DIGITS, ITEMS, SET_VALUED, TASKS, WORDS, SyntheticTask, score_shuffle,
                                       split_of, suite, training_draws)

DETERMINISTIC = [t for t in TASKS if t not in SET_VALUED]
PROMPT_BUDGET, ANSWER_BUDGET, TOTAL_BUDGET = 24, 24, 48  # tokens; the answer budget counts the EOS


def _pairs(name: str, split: str, seed: int, k: int, **knobs: int) -> list[tuple[str, str]]:
    task, rng = SyntheticTask(name, split, **knobs), random.Random(seed)
    return [task.sample(rng) for _ in range(k)]


@pytest.mark.parametrize("name", TASKS)
def test_generators_are_deterministic_per_seed(name: str) -> None:
    assert _pairs(name, "train", 1, 50) == _pairs(name, "train", 1, 50)
    assert _pairs(name, "train", 1, 50) != _pairs(name, "train", 2, 50)


def test_examples_are_stable_per_seed_and_distinct() -> None:
    for a, b, c in zip(suite("test", 100, 0), suite("test", 100, 0), suite("test", 100, 1)):
        ea, eb, ec = a.examples(), b.examples(), c.examples()
        assert ea == eb == a.examples()
        assert [e.prompt for e in ea] != [e.prompt for e in ec]
        assert len(ea) == 100 and len({e.prompt for e in ea}) == 100 and len({e.id for e in ea}) == 100
        assert isinstance(a, Task)


def test_train_and_test_are_disjoint() -> None:
    test = {e.prompt for seed in (0, 1) for t in suite("test", 200, seed) for e in t.examples()}
    assert all(split_of(p) == "test" for p in test)
    stream = training_draws(random.Random(0), suite("train"))
    train = [d.prompt for _, d in itertools.islice(stream, 20_000)]
    assert all(split_of(p) == "train" for p in train)
    assert not test & set(train)
    assert {p.split(" ")[0] for p in train} == {"copy", "reverse", "sort", "insert", "remove", "replace", "add",
                                                "shuffle"}  # the stream mixes every task
    with pytest.raises(ValueError):
        next(training_draws(random.Random(0), suite("test")))


def test_training_mix_follows_the_task_weights() -> None:
    tasks = suite("train")
    weights = [3.0 if t.name in ("sort", "add") else 0.0 if t.name == "copy" else 1.0 for t in tasks]
    stream = training_draws(random.Random(0), tasks, weights)
    words = [d.prompt.split(" ")[0] for _, d in itertools.islice(stream, 6000)]
    share = {w: words.count(w) / len(words) for w in set(words)}
    assert "copy" not in share                                          # weight 0: never drawn
    assert abs(share["sort"] - 3 / 11) < 0.03 and abs(share["reverse"] - 1 / 11) < 0.02
    for bad in ([1.0] * 3, [-1.0] + [1.0] * 7, [0.0] * 8):
        with pytest.raises(ValueError):
            next(training_draws(random.Random(0), tasks, bad))


def _corruptions(answer: str) -> list[str]:
    ws = answer.split(" ")
    swapped = [ws[-1]] + ws[1:-1] + [ws[0]] if len(ws) > 1 else ws
    other = "00" if ws[0] != "00" and len(ws[0]) == 2 else ("1" if ws[0] != "1" else "2")
    return ["", " ".join(ws[:-1]), answer + " " + ws[-1], " ".join(swapped), " ".join([other] + ws[1:]),
            answer.replace(" ", "  ", 1), answer + " " + EOS]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_scoring_is_exact_match(name: str) -> None:
    task = SyntheticTask(name, "test", n=200)
    for ex in task.examples():
        assert task.score(ex, ex.reference).correct
        assert task.score(ex, f"  {ex.reference}\n").correct  # surrounding whitespace is stripped
        for bad in _corruptions(ex.reference):
            if bad != ex.reference:
                assert not task.score(ex, bad).correct, (ex.prompt, bad)


def test_shuffle_accepts_every_valid_answer_and_rejects_invalid_ones() -> None:
    task = SyntheticTask("shuffle", "test", n=20, min_len=4, max_len=4)
    for ex in task.examples():
        xs = ex.meta["items"]
        assert task.score(ex, ex.reference).correct and ex.reference != " ".join(xs)
        accepted = [p for p in itertools.permutations(xs) if task.score(ex, " ".join(p)).correct]
        assert len(accepted) == 23 and tuple(xs) not in accepted  # all 4! - 1 non-identity permutations
        y = list(reversed(xs))
        other = next(i for i in ITEMS if i not in xs)
        invalid = [" ".join(xs), " ".join(y[:-1]), " ".join(y + [y[0]]), " ".join(y[:-1] + [y[0]]),
                   " ".join(y[:-1] + [other]), " ".join(y).replace(" ", "  ", 1), " ".join(y) + " =",
                   "", " ".join(y[:-1] + [y[-1][1]]), " ".join(y + [EOS])]
        assert not any(task.score(ex, bad).correct for bad in invalid)
    assert score_shuffle(["01", "02"], " 02 01 ").detail == {"well_formed": True, "same_multiset": True,
                                                            "differs": True}


def test_difficulty_knobs_are_respected() -> None:
    for name in ("copy", "shuffle", "insert_index"):
        lens = {len(p.split(" : ")[1].split(" ")) - 1 for p, _ in _pairs(name, "train", 0, 2000)}
        assert lens == set(range(4, 9))
        assert {len(p.split(" : ")[1].split(" ")) - 1 for p, _ in _pairs(name, "train", 0, 200, min_len=6,
                                                                          max_len=6)} == {6}
    pairs = _pairs("add", "train", 0, 5000)
    operands = [p[len("add : "):-len(" =")].split(" + ") for p, _ in pairs]
    # fixed width (zero-padded) operands whose significant digits span the knob range; answers one digit wider
    assert {len(x.split(" ")) for ab in operands for x in ab} == {4}
    assert {len(str(int(x.replace(" ", "")))) for ab in operands for x in ab} == {1, 2, 3, 4}
    carries = sum(any(int(a) + int(b) >= 10 for a, b in zip(x.split()[::-1], y.split()[::-1])) for x, y in operands)
    assert carries > 0.3 * len(pairs)
    assert {len(a.split(" ")) for _, a in pairs} == {5}
    assert all(int(a.replace(" ", "")) == int(x.replace(" ", "")) + int(y.replace(" ", ""))
               for (_, a), (x, y) in zip(pairs, operands))
    assert any(a.split(" ")[0] == "1" for _, a in pairs)   # a carry out of the top digit
    small = [p for p, _ in _pairs("add", "train", 0, 500, min_digits=2, max_digits=2)]
    assert all(len(x.split(" ")) == 2 and x[0] != "0" for p in small
               for x in p[len("add : "):-len(" =")].split(" + "))
    for bad in ({"min_len": 1}, {"max_len": 10}, {"min_len": 5, "max_len": 4}, {"min_digits": 0}):
        with pytest.raises(ValueError):
            SyntheticTask("copy", **bad)
    with pytest.raises(ValueError):
        SyntheticTask("nope")


def test_tokenizer_vocab_is_one_token_per_word() -> None:
    tok = build_tokenizer()
    assert [tok.token_to_id(s) for s in SPECIALS] == [PAD_ID, MASK_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]
    assert tok.get_vocab_size() == len(SPECIALS) + len(WORDS) <= 200 and len(set(WORDS)) == len(WORDS)
    assert set(ITEMS) | set(DIGITS) <= set(WORDS)
    for w in WORDS:
        ids = tok.encode(w).ids
        assert len(ids) == 1 and ids[0] >= len(SPECIALS) and tok.decode(ids) == w


def _samples(k: int) -> list[tuple[str, str, str]]:
    rng = random.Random(0)
    return [(name, *SyntheticTask(name, split).sample(rng)) for name in TASKS for split in ("train", "test")
            for _ in range(k)]


def test_tokenizer_round_trips_suite_text_with_budgets() -> None:
    tok, maxima = build_tokenizer(), {}
    samples = _samples(1500)
    encoded = tok.encode_batch([t for _, p, a in samples for t in (p, a)])
    for (name, prompt, answer), ep, ea in zip(samples, encoded[::2], encoded[1::2]):
        assert UNK_ID not in ep.ids + ea.ids
        assert tok.decode(ep.ids) == prompt and tok.decode(ea.ids) == answer
        assert tok.decode(ea.ids + [EOS_ID, PAD_ID]) == answer  # specials are skipped when decoding
        p, a = maxima.get(name, (0, 0))
        maxima[name] = (max(p, len(ep.ids)), max(a, len(ea.ids) + 1))  # + EOS
    print("\nmax tokens (prompt, answer+EOS):", maxima)
    for p, a in maxima.values():
        assert p <= PROMPT_BUDGET and a <= ANSWER_BUDGET and p + a <= TOTAL_BUDGET


def test_autotokenizer_loads_saved_folder(tmp_path) -> None:
    tok = AutoTokenizer.from_pretrained(save_tokenizer(tmp_path / "tok"))
    assert (tok.pad_token_id, tok.mask_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.bos_token is None and not getattr(tok, "chat_template", None)
    assert len(tok) == build_tokenizer().get_vocab_size()
    for _, prompt, answer in _samples(20):
        ids = tok(prompt, add_special_tokens=False).input_ids
        assert ids == build_tokenizer().encode(prompt).ids and tok.decode(ids) == prompt
        a_ids = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id, tok.pad_token_id]
        assert tok.decode(a_ids, skip_special_tokens=True) == answer


def test_distinct_draws_stop_with_a_clear_error_when_too_few_prompts_exist():
    from dllm.eval.tasks.synthetic import Draw, distinct_draws
    few = iter(range(10**6))
    only_two = lambda: Draw(f"p{next(few) % 2}", "a", {})
    assert [d.prompt for d in distinct_draws(only_two, 2, "x")] == ["p0", "p1"]
    with pytest.raises(ValueError, match="could not find 3 distinct copy test prompts"):
        distinct_draws(only_two, 3, "copy test prompts")
