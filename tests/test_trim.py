"""Trimmed training batches (`Batches(trim=True)`): each batch is only as long as its rows need, the columns
dropped are only padding every row has or EOS fill past the batch's last answer, and a bidirectional model
reads the same answer region from a trimmed row as from the full one."""
from __future__ import annotations

import pytest
import torch

from dllm.distill.data import Batches
from dllm.distill.tokenizer import EOS_ID, PAD_ID, build_suite_tokenizer
from dllm.eval.tasks.programs import Programs
from dllm.eval.tasks.synthetic import SyntheticTask
from dllm.eval.tasks.wordproblems import WordProblems
from dllm.testing import random_model

P, G = 240, 160


def batches(left_pad: bool, trim: bool, multiple_of: int = 1) -> Batches:
    tasks = [WordProblems("train"), Programs("train"), SyntheticTask("copy", "train")]
    return Batches(tasks, 12, P, G, 0, left_pad=left_pad, multiple_of=multiple_of,
                   tokenizer=build_suite_tokenizer(), trim=trim)


@pytest.mark.parametrize("step", [0, 5])
def test_block_causal_rows_end_at_the_block_of_the_last_eos(step) -> None:
    full, cut = batches(False, False, 8)[step], batches(False, True, 8)[step]
    L = cut.ids.shape[1]
    assert L % 8 == 0 and L < full.ids.shape[1]
    for name in ("ids", "pos", "valid", "answer"):
        assert torch.equal(getattr(cut, name), getattr(full, name)[:, :L])
    # only EOS fill was dropped, and the longest row's EOS is in the last block kept
    assert (full.ids[:, L:] == EOS_ID).all()
    first_eos = [(row != EOS_ID).nonzero().max().item() + 1 for row in full.ids]   # answers hold no EOS
    assert L - 8 <= max(first_eos) < L


@pytest.mark.parametrize("step", [0, 5])
def test_bidirectional_rows_drop_only_shared_left_padding(step) -> None:
    full, cut = batches(True, False)[step], batches(True, True)[step]
    k = full.ids.shape[1] - cut.ids.shape[1]
    assert k > 0 and not full.valid[:, :k].any() and (full.ids[:, :k] == PAD_ID).all()
    assert full.valid[:, k].any()                                    # the longest prompt starts at column k
    for name in ("ids", "pos", "valid", "answer"):
        assert torch.equal(getattr(cut, name), getattr(full, name)[:, k:])
    assert (cut.answer.sum(1) == G).all()                            # every answer slot (the decode canvas) kept


def test_a_bidirectional_model_reads_the_same_answer_from_a_trimmed_row() -> None:
    full, cut = batches(True, False)[2], batches(True, True)[2]
    model = random_model("llada", vocab=build_suite_tokenizer().get_vocab_size())[0].eval()
    with torch.no_grad():
        a = model(full.ids, full.pos, pad_mask=full.valid).logits[full.answer]
        b = model(cut.ids, cut.pos, pad_mask=cut.valid).logits[cut.answer]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_untrimmed_batches_keep_the_fixed_length() -> None:
    assert batches(False, False, 8)[1].ids.shape[1] == 400 and batches(True, False)[1].ids.shape[1] == P + G
