"""Contract tests parametrized over every sampler: commits only masked slots, progresses every unfinished row,
never writes its inputs, is seeded, is seed-independent at temperature 0, and batch == one-by-one. The models
are every family at random weights and the shipped v2 embedded models on held-out long-task prompts (whose
confident, long answers are the regime the parallel samplers are built for)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import dllm
from dllm.samplers import (S2D2, CreditDecoding, DynamicThreshold, EntropyThreshold, EoTP, Factor, LocalLeap,
                           FreeDave, SpanLength, Static, Threshold)

import conftest
from dllm.loading import SHIPPED

SAMPLERS = {
    "static": Static(steps=16),
    "static_random": Static(steps=16, remasking="random"),
    "static_dream_entropy": Static(steps=16, remasking="entropy", schedule="dream"),
    "static_margin_alg_temp": Static(steps=8, remasking="margin", schedule="dream", alg_temp=0.5),
    "threshold": Threshold(0.7),
    "dynamic": DynamicThreshold(0.7, steps=3),
    "factor": Factor(1.0),
    "entropy": EntropyThreshold(0.5),
    "freedave": FreeDave(4),
    "credit": CreditDecoding(threshold=0.7),
    "localleap": LocalLeap(threshold=0.8, relaxed=0.5),
    "eotp_threshold": EoTP(Threshold(0.7)),
    "eotp_freedave": EoTP(FreeDave(3)),
    "s2d2": S2D2(),
    "s2d2_greedy": S2D2(router=SpanLength(2), acceptance="greedy"),
}
BLOCK_CAUSAL_ONLY = {"s2d2", "s2d2_greedy"}


V2 = ("tiny-sdar-v2", "tiny-llada-v2")


@pytest.fixture(params=["llada", "sdar", "dream", *V2])
def model(request, llada, sdar, dream):
    """Every family (Dream's shifted logits included) and the shipped v2 models."""
    if request.param in V2:
        if not (SHIPPED / request.param).is_dir():
            pytest.skip(f"{request.param} is not shipped")
        return shipped(request.param)
    return {"llada": llada, "sdar": sdar, "dream": dream}[request.param]


_loaded: dict = {}


def shipped(name: str):
    if name not in _loaded:
        _loaded[name] = dllm.load(name)
    return _loaded[name]


def prompts(n: int, model=None) -> list[list[int]]:
    """Random ids for the random-weight models; held-out long-task prompts (alternately gsm_synth and
    mbpp_synth, test split) for the shipped v2 models."""
    if not any(model is m for m in _loaded.values()):
        return conftest.prompts(n)
    from dllm.eval.tasks.long import LongSuite
    tok = dllm.load_tokenizer("tiny-sdar-v2")
    examples = LongSuite(n_per_task=n).examples()
    half = len(examples) // 2
    mixed = [e for pair in zip(examples[:half], examples[half:]) for e in pair]
    return [tok(e.prompt, add_special_tokens=False).input_ids for e in mixed[:n]]


def stochastic_order(sampler) -> bool:
    """Draws which slots commit from the generator (batch-shaped noise: batch != one-by-one, seed matters)."""
    return getattr(sampler, "remasking", None) == "random" or getattr(sampler, "alg_temp", 0) > 0


@pytest.fixture(autouse=True)
def _family_filter(request):
    name = request.node.callspec.params.get("name") if hasattr(request.node, "callspec") else None
    if name in BLOCK_CAUSAL_ONLY and "model" in request.fixturenames \
            and not request.getfixturevalue("model").block_causal:
        pytest.skip(f"{name} needs a block-causal model")
KW = dict(gen_length=16, block_length=8, stop_at_eos=False)


class Checked:
    """Wraps a sampler and asserts the contract on every step it takes."""

    def __init__(self, inner):
        self.inner = inner
        self.needs_hidden = inner.needs_hidden
        self.steps = 0

    def init_state(self, *a):
        return self.inner.init_state(*a)

    def step(self, inp, state):
        before = [t.clone() for t in (inp.x, inp.logits, inp.masked)]
        out, state = self.inner.step(inp, state)
        for a, b in zip(before, (inp.x, inp.logits, inp.masked)):
            assert torch.equal(a, b), "sampler wrote to its inputs"
        assert not bool((out.commit & ~inp.masked).any()), "committed a slot that was not masked"
        assert bool((out.commit.any(1) | ~inp.masked.any(1)).all()), "a row with masks committed nothing"
        assert out.tokens.shape == inp.masked.shape and out.tokens.dtype == torch.long
        self.steps += 1
        return out, state


@pytest.mark.parametrize("name", SAMPLERS)
def test_contract_through_the_loop(model, name):
    checked = Checked(SAMPLERS[name])
    modes = ("none", "block", "block_fused") if model.block_causal else ("none", "prefix", "dual")
    for mode in modes:
        out = dllm.generate(model, prompts(3, model), checked, cache=mode, **KW)
        assert all(model.mask_id not in s for s in out.sequences)
    assert checked.steps > 0


@pytest.mark.parametrize("name", SAMPLERS)
def test_batch_equals_one_by_one(model, name):
    sampler = SAMPLERS[name]
    if stochastic_order(sampler):
        pytest.skip("random commit orders draw batch-shaped noise; covered by the seeded test")
    ps = prompts(4, model)
    batch = dllm.generate(model, ps, sampler, **KW).sequences
    assert batch == [dllm.generate(model, [p], sampler, **KW).sequences[0] for p in ps]


@pytest.mark.parametrize("name", SAMPLERS)
def test_seeded_and_temperature_zero_seed_free(model, name):
    sampler = SAMPLERS[name]
    ps = prompts(3, model)
    run = lambda s, seed: dllm.generate(model, ps, s, seed=seed, **KW).sequences
    assert run(sampler, 1) == run(sampler, 1)
    if not stochastic_order(sampler):
        assert run(sampler, 1) == run(sampler, 2)
    if "temperature" in {f.name for f in dataclasses.fields(sampler)}:
        hot = dataclasses.replace(sampler, temperature=1.0)
        assert run(hot, 3) == run(hot, 3)


def test_freedave_equals_static_with_fewer_forwards(model):
    ps = prompts(4, model)
    modes = ("none", "block_fused") if model.block_causal else ("none", "dual")
    for mode in modes:
        ref = dllm.generate(model, ps, Static(steps=32), gen_length=32, block_length=8, cache=mode, stop_at_eos=False)
        one = dllm.generate(model, ps, FreeDave(1), gen_length=32, block_length=8, cache=mode, stop_at_eos=False)
        assert one.sequences == ref.sequences and one.nfe == ref.nfe
        prev = one.nfe
        for d in (2, 4, 8):
            out = dllm.generate(model, ps, FreeDave(d), gen_length=32, block_length=8, cache=mode, stop_at_eos=False)
            assert out.sequences == ref.sequences
            assert out.nfe <= prev and out.stats["tokens_evaluated"] > ref.stats["tokens_evaluated"]
            prev = out.nfe
        assert prev < ref.nfe
