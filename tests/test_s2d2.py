"""S2D2: greedy always-verify reproduces AR decoding, never-verify is the base dynamic rule, the 2L verifier
mask has the stated pattern, and the routers behave as specified."""
from __future__ import annotations

import pytest
import torch

import dllm
from dllm.attention import verifier_mask
from dllm.samplers import S2D2, UCB, Always, Hysteresis, Never, ScoreThreshold, SpanLength, Threshold
from dllm.samplers.routing import RouteFeatures
from dllm.samplers.s2d2 import span_of

from conftest import prompts


def ar_greedy(model, prompt, G):
    """Greedy decoding with block size 1: causal context plus one mask, take the argmax, append."""
    x = list(prompt)
    for _ in range(G):
        ids = torch.tensor([x + [model.mask_id]])
        causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool))[None, None]
        x.append(int(model(ids, attn_mask=causal).logits[0, -1].argmax()))
    return x[len(prompt):]


@pytest.mark.parametrize("cache", ["none", "block", "block_fused"])
@pytest.mark.parametrize("block", [4, 8])
def test_greedy_always_verify_is_ar_decoding(sdar, cache, block):
    ps = prompts(3, lengths=(5, 8, 11))
    out = dllm.generate(sdar, ps, S2D2(router=Always(), acceptance="greedy"), gen_length=16, block_length=block,
                        cache=cache, stop_at_eos=False)
    assert out.sequences == [ar_greedy(sdar, p, 16) for p in ps]
    assert out.stats["forwards"]["extra"] > 0


@pytest.mark.parametrize("cache", ["none", "block_fused"])
def test_never_verify_is_the_base_dynamic_rule(sdar, cache):
    ps = prompts(4)
    a = dllm.generate(sdar, ps, S2D2(router=Never(), ar_cache=False, threshold=0.7), gen_length=16, block_length=8,
                      cache=cache, stop_at_eos=False)
    b = dllm.generate(sdar, ps, Threshold(0.7), gen_length=16, block_length=8, cache=cache, stop_at_eos=False)
    assert a.sequences == b.sequences and a.nfe == b.nfe and "extra" not in a.stats["forwards"]


def test_verify_steps_commit_at_least_one_and_batch_is_row_independent(sdar):
    ps = prompts(4)
    sampler = S2D2(router=SpanLength(2), acceptance="greedy")
    batch = dllm.generate(sdar, ps, sampler, gen_length=16, block_length=8, stop_at_eos=False)
    assert batch.sequences == [dllm.generate(sdar, [p], sampler, gen_length=16, block_length=8,
                                             stop_at_eos=False).sequences[0] for p in ps]


def test_stochastic_acceptance_is_seeded(sdar):
    ps = prompts(3)
    s = S2D2(router=Always(), temperature=1.0)
    run = lambda seed: dllm.generate(sdar, ps, s, gen_length=16, block_length=8, seed=seed).sequences
    assert run(5) == run(5)


def test_verifier_mask_pattern():
    m = verifier_mask(torch.tensor([[False, True]]), 3)[0, 0].int()     # prefix of 2 (first is padding), S = 3
    assert m.tolist() == [
        # pad prefix | drafts 0 1 2 | masks 0 1 2
        [0, 1, 1, 0, 0, 0, 0, 0],     # draft 0 sees itself
        [0, 1, 1, 1, 0, 0, 0, 0],     # draft 1 sees drafts <= 1
        [0, 1, 1, 1, 1, 0, 0, 0],
        [0, 1, 0, 0, 0, 1, 0, 0],     # mask 0 sees no draft, only itself
        [0, 1, 1, 0, 0, 0, 1, 0],     # mask 1 sees draft 0 and itself
        [0, 1, 1, 1, 0, 0, 0, 1],
    ]


def test_span_and_expected_accepted():
    masked = torch.tensor([[False, True, True, False, True], [True, True, True, True, True]])
    span = span_of(masked)
    assert span.tolist() == [[False, True, True, False, False], [True] * 5]
    ones = RouteFeatures(span, torch.ones(2, 5), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert ones.expected_accepted.tolist() == [2, 5]                  # all alpha = 1: the span length
    half = RouteFeatures(span, torch.full((2, 5), 0.5), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert half.expected_accepted.tolist() == pytest.approx([0.75, 0.5 + 0.25 + 0.125 + 0.0625 + 0.03125])
    assert bool((half.expected_accepted <= span.sum(1)).all())


def test_routers():
    span = torch.tensor([[True, True, False], [True, False, False]])
    feats = lambda a: RouteFeatures(span, torch.full((2, 3), a), torch.tensor([1, 0]), torch.zeros(2), torch.zeros(2))
    st = ScoreThreshold(threshold=0.0, cost=1.0)
    assert st.decide(feats(1.0), {})[0].tolist() == [True, True]      # E[K] = 2, 1 >= cost 1
    assert st.decide(feats(0.1), {})[0].tolist() == [False, False]
    h = Hysteresis(on=0.5, off=-0.5, cost=1.0, mode="static")
    state = h.init(2, torch.device("cpu"))
    v, state = h.decide(feats(1.0), state)                             # scores 1.0, 0.0: row 0 turns on
    assert v.tolist() == [True, False]
    v, state = h.decide(feats(0.5), state)                             # scores -0.25, -0.5: row 0 stays on
    assert v.tolist() == [True, False]
    v, state = h.decide(feats(0.3), state)                             # scores -0.61, -0.7: row 0 turns off
    assert v.tolist() == [False, False]
    with pytest.raises(ValueError):
        Hysteresis(on=0.0, off=1.0)
    u = UCB()
    state = u.init(2, torch.device("cpu"))
    v, state = u.decide(feats(1.0), state)
    assert v.tolist() == [True, True]                                  # untried arms tie: verify first
    state = u.update(feats(1.0), state, v, torch.tensor([0.5, 0.5]))
    v, _ = u.decide(feats(1.0), state)
    assert v.tolist() == [False, False]                                # skip is still untried (infinite bonus)


def test_bidirectional_model_is_refused(llada):
    with pytest.raises(ValueError, match="block-causal"):
        dllm.generate(llada, prompts(1), S2D2(), gen_length=8, block_length=8)
