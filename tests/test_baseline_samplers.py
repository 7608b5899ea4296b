"""Exact cases on constructed logits for Static, Threshold and Factor, and their batched helpers."""
from __future__ import annotations

import math

import torch

from dllm.protocols import Block, StepInput
from dllm.samplers import Factor, Static, Threshold
from dllm.samplers.common import top_k_mask

V = 8


def peaked(tokens: list[list[int]], conf: list[list[float]]) -> torch.Tensor:
    """Logits [B, S, V] whose argmax is `tokens` with softmax probability exactly `conf` (rest uniform)."""
    B, S = len(tokens), len(tokens[0])
    out = torch.zeros(B, S, V, dtype=torch.float64)
    for b in range(B):
        for s in range(S):
            c = conf[b][s]
            other = (1 - c) / (V - 1)
            out[b, s] = math.log(other)
            out[b, s, tokens[b][s]] = math.log(c)
    return out


def step(sampler, logits, masked, step_idx=0, state=None):
    B, S = masked.shape
    inp = StepInput(torch.zeros(B, S, dtype=torch.long), logits, masked, Block(0, S), step_idx,
                    torch.Generator().manual_seed(0), None, mask_id=7)
    state = state if state is not None else sampler.init_state(B, 1, torch.device("cpu"))
    before = (logits.clone(), masked.clone())
    out, state = sampler.step(inp, state)
    assert torch.equal(before[0], logits) and torch.equal(before[1], masked)   # inputs unmodified
    return out, state


def test_threshold_exact():
    logits = peaked([[1, 2, 3, 4]], [[0.95, 0.5, 0.91, 0.99]])
    masked = torch.tensor([[True, True, True, False]])
    out, _ = step(Threshold(0.9), logits, masked)
    assert out.commit.tolist() == [[True, False, True, False]]      # 0.99 is not masked
    assert out.tokens[0, :3].tolist() == [1, 2, 3]
    out, _ = step(Threshold(0.99), logits, masked)
    assert out.commit.tolist() == [[True, False, False, False]]     # none passes: the best one anyway


def test_threshold_monotone_in_tau():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 16, V, generator=g) * 3
    masked = torch.rand(4, 16, generator=g) < 0.7
    prev = None
    for tau in (0.2, 0.4, 0.6, 0.8, 1.5):
        c = step(Threshold(tau), logits, masked)[0].commit
        if prev is not None:
            assert bool((c <= prev).all())
        prev = c


def test_factor_rule_and_reference_quirk():
    # sorted confidences 0.9, 0.7, 0.6 with f = 1: bounds -inf, 1 - 1/3 = 0.667, 1 - 1/4 = 0.75
    logits = peaked([[1, 2, 3]], [[0.7, 0.9, 0.6]])
    masked = torch.ones(1, 3, dtype=torch.bool)
    out, _ = step(Factor(1.0), logits, masked)
    assert out.commit.tolist() == [[True, True, False]]
    # first failure at the last rank: the reference takes every slot
    out, _ = step(Factor(1.0, reference_compat=True), logits, masked)
    assert out.commit.tolist() == [[True, True, True]]
    # two masks left: the reference always takes both, the corrected rule only if rank 2 passes
    two = peaked([[1, 2]], [[0.9, 0.3]])
    assert step(Factor(1.0), two, torch.ones(1, 2, dtype=torch.bool))[0].commit.tolist() == [[True, False]]
    assert step(Factor(1.0, reference_compat=True), two, torch.ones(1, 2, dtype=torch.bool))[0].commit.tolist() == [[True, True]]
    # f = 0: one token per step
    assert step(Factor(0.0), logits, masked)[0].commit.sum() == 1


def test_static_quota_schedule():
    # 5 masked slots over 2 steps: 3 then 2 (the first m0 % steps steps take one more)
    logits = peaked([[1, 2, 3, 4, 5, 6]], [[0.3, 0.9, 0.5, 0.8, 0.2, 0.7]])
    masked = torch.tensor([[True, True, True, True, True, False]])
    sampler = Static(steps=2)
    state = sampler.init_state(1, 1, torch.device("cpu"))
    out, state = step(sampler, logits, masked, 0, state)
    assert out.commit.tolist() == [[False, True, True, True, False, False]]   # 0.9, 0.8, 0.5
    masked2 = masked & ~out.commit
    out, state = step(sampler, logits, masked2, 1, state)
    assert out.commit.tolist() == [[True, False, False, False, True, False]]


def test_static_random_remasking_is_seeded():
    logits = torch.randn(2, 8, V, generator=torch.Generator().manual_seed(1))
    masked = torch.ones(2, 8, dtype=torch.bool)
    a = step(Static(steps=4, remasking="random"), logits, masked)[0].commit
    b = step(Static(steps=4, remasking="random"), logits, masked)[0].commit
    assert torch.equal(a, b) and a.sum(1).tolist() == [2, 2]


def test_top_k_mask_per_row_k():
    score = torch.tensor([[0.1, 0.9, 0.5, float("-inf")], [0.3, 0.2, 0.8, 0.7]])
    assert top_k_mask(score, torch.tensor([2, 0])).tolist() == [[False, True, True, False], [False] * 4]
    assert top_k_mask(score, torch.tensor([1, 3])).tolist() == [[False, True, False, False], [True, False, True, True]]


def test_bad_arguments():
    import pytest
    with pytest.raises(ValueError):
        Static(steps=0)
    with pytest.raises(ValueError):
        Static(steps=4, remasking="origin")
    with pytest.raises(ValueError):
        Threshold(0.9, temperature=-1)
    with pytest.raises(ValueError):
        Factor(-1)
