"""Exact targets for set-valued answers: the closed-form posterior equals counting the valid orders, and the
objectives use it only on set-valued slots."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from dllm.distill.data import Batches
from dllm.distill.objectives import add_noise, block_diffusion_loss, masked_diffusion_loss
from dllm.distill.pretrain import ModelInit, build_model
from dllm.distill.targets import permutation_posterior
from dllm.eval.tasks.synthetic import SyntheticTask

V = 12


def brute_force(items: list[int], answer: list[int], seen: list[bool], q: int) -> torch.Tensor:
    """P(y_q = c | the seen slots) by enumerating every order of `items` other than `items` itself."""
    counts = torch.zeros(V, dtype=torch.double)
    for y in itertools.permutations(items):
        if list(y) != items and all(y[k] == answer[k] for k in range(len(items)) if seen[k]):
            counts[y[q]] += 1
    return counts / counts.sum()


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_posterior_counts_the_valid_orders(n):
    rng = random.Random(n)
    for _ in range(40):
        items = rng.sample(range(3, V), n)
        answer = items
        while answer == items:
            answer = rng.sample(items, n)
        if rng.random() < 0.3:   # make "agrees with the excluded order" common: keep a prefix of it in place
            k = rng.randrange(n - 1)
            rest = items[k:]
            while True:
                tail = rng.sample(rest, len(rest))
                if tail != rest:
                    break
            answer = items[:k] + tail
        off = rng.randrange(3)                      # slots sit after a prompt and before EOS fill
        L = off + n + 2
        x0 = torch.tensor([0] * off + answer + [2, 2])[None]
        excluded = torch.tensor([-1] * off + items + [-1, -1])[None]
        sees = torch.rand(1, L, L, generator=torch.Generator().manual_seed(rng.randrange(10**6))) < 0.5
        sees &= ~torch.eye(L, dtype=torch.bool)[None]   # a query never sees its own token
        post = permutation_posterior(x0, excluded, sees, V)
        for q in range(n):
            want = brute_force(items, answer, [bool(sees[0, off + q, off + k]) for k in range(n)], q)
            torch.testing.assert_close(post[0, off + q].double(), want, rtol=0, atol=1e-6)
        assert not post[0, :off].any() and not post[0, off + n:].any()   # only the slots get a target


def test_shuffle_rows_carry_their_excluded_order():
    task = SyntheticTask("shuffle", "train")
    b = Batches([task, SyntheticTask("copy", "train")], 16, 15, 12, 0, left_pad=False, multiple_of=4)[0]
    slots = b.excluded >= 0
    is_shuffle = b.ids[:, 0] == b.ids[slots.any(1)][0, 0]        # rows whose first word is shuffle's
    assert slots.any(1).equal(is_shuffle) and 0 < int(is_shuffle.sum()) < 16
    for r in is_shuffle.nonzero()[:, 0]:
        assert sorted(b.ids[r][slots[r]].tolist()) == sorted(b.excluded[r][slots[r]].tolist())
        assert not b.ids[r][slots[r]].equal(b.excluded[r][slots[r]])   # the answer is never the excluded order
        assert b.answer[r][slots[r]].all()


@pytest.mark.parametrize("family,loss", [("sdar", block_diffusion_loss), ("llada", masked_diffusion_loss)])
def test_exact_targets_change_only_set_valued_rows(family, loss):
    init = ModelInit(family, 32, 2, 4, 2, 64, True, 4 if family == "sdar" else None, 10000.0)
    model, _ = build_model(init, 0, torch.device("cpu"))
    with torch.no_grad():                   # far from uniform logits, so the two targets give different losses
        for p in model.parameters():
            p.mul_(20)
    tasks = [SyntheticTask(n, "train") for n in ("copy", "sort", "shuffle")]
    batch = Batches(tasks, 24, 15, 12, 0, left_pad=family == "llada", multiple_of=4 if family == "sdar" else 1)[3]
    shuffle = (batch.excluded >= 0).any(1)
    with torch.no_grad():
        for rows in (~shuffle, shuffle):
            r = rows.nonzero()[:, 0]
            part = batch.rows(r)
            exact = loss(model, part, torch.Generator().manual_seed(1), exact=True)
            sampled = loss(model, part, torch.Generator().manual_seed(1), exact=False)
            assert torch.allclose(exact, sampled) == (not bool(shuffle[r].any()))
