"""The suite tokenizer (byte-level BPE, one token per digit) and training batches that mix short and long tasks."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer

import dllm
from dllm.distill.checkpoint import export
from dllm.distill.data import Batches
from dllm.distill.tokenizer import (EOS_ID, MASK_ID, PAD_ID, SPECIALS, SUITE_VOCAB_SIZE, UNK_ID, _suite_json,
                                    build_suite_tokenizer, build_tokenizer, save_tokenizer, suite_corpus)
from dllm.eval.tasks.programs import Programs
from dllm.eval.tasks.synthetic import SyntheticTask, suite
from dllm.eval.tasks.wordproblems import WordProblems
from dllm.testing import random_model


def _tasks(split: str) -> list:
    return suite(split) + [WordProblems(split, max_steps=5), Programs(split, min_depth=0)]


def _samples(k: int) -> list[str]:
    rng = random.Random(0)
    return [text for split in ("train", "test") for task in _tasks(split) for _ in range(k)
            for text in task.sample(rng)]


def test_builds_are_identical_and_train_on_train_split_text_only() -> None:
    assert _suite_json.__wrapped__() == _suite_json()   # a fresh build (bypassing the cache) equals the cached one
    corpus = set(suite_corpus())
    for task in _tasks("test"):
        assert not {ex.prompt for ex in task.examples()} & corpus, task.name


def test_specials_vocabulary_and_single_digit_tokens() -> None:
    tok = build_suite_tokenizer()
    assert [tok.token_to_id(s) for s in SPECIALS] == [PAD_ID, MASK_ID, EOS_ID, UNK_ID] == [0, 1, 2, 3]
    assert 300 <= tok.get_vocab_size() == SUITE_VOCAB_SIZE <= 1000
    digit_tokens = [t for t in tok.get_vocab() if any(ch in "0123456789" for ch in t)]
    assert sorted(digit_tokens) == list("0123456789")           # no merge ever holds a digit
    for number in ("7", "07", "1234", "#### 905", "<<12*4=48>>48"):
        digits = [t for t in tok.encode(number).tokens if t in digit_tokens]
        assert digits == [ch for ch in number if ch in digit_tokens]


def test_round_trip_on_every_task_short_and_long() -> None:
    tok, texts = build_suite_tokenizer(), _samples(150)
    for text, enc in zip(texts, tok.encode_batch(texts)):
        assert UNK_ID not in enc.ids and tok.decode(enc.ids) == text
        assert tok.decode(enc.ids + [EOS_ID, PAD_ID]) == text   # specials are skipped when decoding
    odd = "  two  spaces\n\n\tTab\r\nCRLF é ü → 😀 <|mask|>"   # bytes outside the corpus still round-trip
    assert tok.decode(tok.encode(odd).ids, skip_special_tokens=False) == odd


def test_autotokenizer_loads_the_saved_suite_tokenizer(tmp_path) -> None:
    tok = AutoTokenizer.from_pretrained(save_tokenizer(tmp_path / "tok", "suite"))
    assert (tok.pad_token_id, tok.mask_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.bos_token is None and len(tok) == SUITE_VOCAB_SIZE
    ref = build_suite_tokenizer()
    for text in _samples(3):
        ids = tok(text, add_special_tokens=False).input_ids
        assert ids == ref.encode(text).ids and tok.decode(ids + [EOS_ID, PAD_ID], skip_special_tokens=True) == text
    assert AutoTokenizer.from_pretrained(save_tokenizer(tmp_path / "words")).vocab_size == \
        build_tokenizer().get_vocab_size()                      # the default is still the shipped word-level one
    with pytest.raises(ValueError, match="kind"):
        save_tokenizer(tmp_path / "x", "bpe")


@pytest.mark.parametrize("left_pad", [False, True])
def test_batches_mix_short_and_long_tasks_under_the_suite_tokenizer(left_pad) -> None:
    tok = build_suite_tokenizer()
    tasks = [SyntheticTask("shuffle", "train"), SyntheticTask("add", "train"), WordProblems("train"),
             Programs("train")]
    P, G = 200, 160
    batches = Batches(tasks, 24, P, G, 0, left_pad=left_pad, multiple_of=8, tokenizer=tok)
    b = batches[3]
    assert torch.equal(b.ids, batches[3].ids) and b.ids.shape == (24, -(-(P + G) // 8) * 8)
    assert not batches.item_tokens and b.excluded is not None and not (b.excluded >= 0).any()  # no exact targets
    rng = random.Random("pretrain/0/3")   # the stream Batches draws step 3 from
    kinds = set()
    for r in range(24):
        task = rng.choice(tasks)
        d = task.draw(rng)
        kinds.add(task.name)
        p, a = tok.encode(d.prompt).ids, tok.encode(d.answer).ids
        start = P - len(p) if left_pad else 0
        assert b.ids[r, start:start + len(p)].tolist() == p and b.valid[r, start:].all()
        assert (b.ids[r, :start] == PAD_ID).all() and not b.valid[r, :start].any()
        ans = b.answer[r].nonzero()[:, 0]
        assert ans[0] == start + len(p) and (ans.diff() == 1).all()
        assert b.ids[r, ans[:len(a)]].tolist() == a and (b.ids[r, ans[len(a):]] == EOS_ID).all()
        assert len(ans) == (G if left_pad else b.ids.shape[1] - len(p))
        assert tok.decode(b.ids[r, ans].tolist()) == d.answer
    assert kinds == {t.name for t in tasks}
    # a pair beyond the budgets is refused by name, and excluded orders must be one token per item
    with pytest.raises(ValueError, match="gen_length"):
        Batches(tasks, 1, P, 20, 0, left_pad=left_pad, tokenizer=tok).encode([("x", WordProblems().sample(rng)[1])])
    with pytest.raises(ValueError, match="one token per item"):
        batches.encode([("shuffle : 07 12 =", "12 07")], ["07 12"])


def test_word_level_batches_keep_their_exact_targets() -> None:
    b = Batches([SyntheticTask("shuffle", "train")], 8, 15, 12, 0, left_pad=False)
    assert b.item_tokens and (b[0].excluded >= 0).any(1).all()


def test_export_writes_the_chosen_tokenizer(tmp_path) -> None:
    model, cfg = random_model("sdar", vocab=SUITE_VOCAB_SIZE, mask_id=MASK_ID, eos_id=EOS_ID)
    tok = dllm.load_tokenizer(export(model, cfg, tmp_path / "m", "card", tokenizer="suite"))
    text = WordProblems().examples()[0].prompt
    assert len(tok) == SUITE_VOCAB_SIZE and tok(text).input_ids == build_suite_tokenizer().encode(text).ids
    old = dllm.load_tokenizer(export(model, cfg, tmp_path / "w", "card"))   # default: the word-level one
    assert len(old) == build_tokenizer().get_vocab_size()
