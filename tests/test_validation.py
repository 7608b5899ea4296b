"""Library inputs fail early and clearly: sampler arguments at construction, `generate`'s arguments before any work.

Each case is an input that used to give a deep TypeError, a torch message, a silent acceptance or a 452-s run.
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

import dllm
from dllm.samplers import (UCB, CreditDecoding, EntropyThreshold, EoTP, Factor, FilterNet, FreeDave, Hysteresis,
                           Learn2PD, LocalLeap, S2D2, ScoreThreshold, SpanLength, Static, Threshold)

from conftest import prompts

NAN = float("nan")
GEN = dict(gen_length=8, block_length=4)

BAD_SAMPLERS = [
    (lambda: Threshold("abc"), r"Threshold: threshold must be a number in \(0, 1\] or > 1 .*; got 'abc'"),
    (lambda: Threshold(NAN), "Threshold: threshold must be a number .*; got nan"),
    (lambda: Threshold(0.9, temperature=NAN), "Threshold: temperature must be a number >= 0"),
    (lambda: Threshold(0.9, temperature=-0.5), "Threshold: temperature must be a number >= 0"),
    (lambda: Threshold(0.9, temperature=float("inf")), "temperature"),
    (lambda: EntropyThreshold(NAN), "EntropyThreshold: threshold must be a number; got nan"),
    (lambda: Static(1.5), "Static: steps must be an integer >= 1; got 1.5"),
    (lambda: Static(True), "Static: steps must be an integer"),
    (lambda: Static(0), "Static: steps must be an integer >= 1; got 0"),
    (lambda: Static(8, "lowest"), r"Static: remasking must be one of \('low_confidence', 'random', 'margin', 'entropy'\); got 'lowest'"),
    (lambda: Factor(-1.0), "Factor: factor must be a number >= 0; got -1.0"),
    (lambda: Factor(reference_compat="yes"), "Factor: reference_compat must be true or false"),
    (lambda: CreditDecoding(decay=1.5), r"CreditDecoding: decay must be a number in \[0, 1\]; got 1.5"),
    (lambda: CreditDecoding(threshold=0), "CreditDecoding: threshold must be a number in"),
    (lambda: LocalLeap(relaxed=0.95), r"LocalLeap: relaxed must be a number in \(0, threshold=0.9\]; got 0.95"),
    (lambda: LocalLeap(radius=2.5), "LocalLeap: radius must be an integer >= 0; got 2.5"),
    (lambda: LocalLeap(decay="cosine"), "LocalLeap: decay must be one of"),
    (lambda: FreeDave(2.0), "FreeDave: draft_steps must be an integer >= 1; got 2.0"),
    (lambda: EoTP(Threshold), r"EoTP: base must be a sampler instance: pass Threshold\(...\) not the class"),
    (lambda: EoTP("threshold"), r"EoTP: base must implement init_state\(\) and step\(\); got str"),
    (lambda: EoTP(Threshold(), eos_confidence=2), r"EoTP: eos_confidence must be a number in \[0, 1\] or None"),
    (lambda: S2D2(steps=0), "S2D2: steps must be an integer >= 1 or None; got 0"),
    (lambda: S2D2(acceptance="lenient"), "S2D2: acceptance must be one of"),
    (lambda: S2D2(ratio_power=0), r"S2D2: ratio_power must be a number > 0"),
    (lambda: S2D2(router=ScoreThreshold), "S2D2: router must be a router instance"),
    (lambda: ScoreThreshold(mode="fast"), "ScoreThreshold: mode must be one of"),
    (lambda: Hysteresis(on=NAN), "Hysteresis: on must be a number; got nan"),
    (lambda: SpanLength(1.5), "SpanLength: min_span must be an integer >= 0"),
    (lambda: UCB(beta=-1), "UCB: beta must be a number >= 0; got -1"),
    (lambda: Learn2PD(3), "Learn2PD: filter must be a save_filter file path or a FilterNet; got int"),
    (lambda: Learn2PD(FilterNet(4), accept=NAN), "Learn2PD: accept must be a number >= 0"),
    (lambda: Learn2PD(FilterNet(4), steps=2.5), "Learn2PD: steps must be an integer >= 1 or None; got 2.5"),
]


@pytest.mark.parametrize("make,message", BAD_SAMPLERS, ids=[m.split(":")[0] + str(i) for i, (_, m) in
                                                            enumerate(BAD_SAMPLERS)])
def test_sampler_rejects_bad_argument_naming_it(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_threshold_message_is_exact():
    with pytest.raises(ValueError) as e:
        Threshold(-1)
    assert str(e.value) == "Threshold: threshold must be a number in (0, 1] or > 1 for one-token-per-step; got -1"


def test_valid_edges_are_accepted():
    """The bounds are the documented ones, not stricter: tau > 1 (one token per step), entropy bounds below 0,
    relaxed == threshold, numpy integers from a config."""
    Threshold(1.0), Threshold(1.5), Threshold(float("inf")), EntropyThreshold(-1.0), Factor(0)
    LocalLeap(threshold=0.8, relaxed=0.8, radius=0), Static(np.int64(8)), FreeDave(1), EoTP(Static(8), 0.0)
    S2D2(steps=None, router=UCB(0)), CreditDecoding(alpha=0, decay=1)


def test_generate_rejects_a_sampler_class(sdar):
    with pytest.raises(ValueError, match=r"pass Threshold\(...\) not the class"):
        dllm.generate(sdar, prompts(2), Threshold, **GEN)


def test_generate_rejects_nan_threshold_and_temperature(sdar):
    with pytest.raises(ValueError, match="threshold"):
        dllm.generate(sdar, prompts(2), Threshold(NAN), **GEN)
    with pytest.raises(ValueError, match="temperature"):
        dllm.generate(sdar, prompts(2), Threshold(0.9, NAN), **GEN)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_generate_rejects_a_non_integer_seed(sdar, seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        dllm.generate(sdar, prompts(2), Threshold(), seed=seed, **GEN)


@pytest.mark.parametrize("kw,name", [(dict(gen_length=8.0, block_length=4), "gen_length"),
                                     (dict(gen_length=8, block_length=4.0), "block_length"),
                                     (dict(gen_length=0, block_length=4), "gen_length"),
                                     (dict(gen_length="8", block_length=4), "gen_length")])
def test_generate_rejects_non_integer_or_non_positive_lengths(sdar, kw, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        dllm.generate(sdar, prompts(2), Threshold(), **kw)


@pytest.fixture(scope="module")
def short_context(ckpt_dir, tmp_path_factory):
    """tiny SDAR whose config.json allows 32 positions."""
    folder = tmp_path_factory.mktemp("short") / "ckpt"
    shutil.copytree(ckpt_dir("sdar", n_kv_heads=2, block_size=4), folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 32}))
    return dllm.load(folder)


def test_context_read_from_each_family_config(llada, sdar, short_context):
    assert llada.max_length == 4096 and sdar.max_length == 32768 and short_context.max_length == 32


def test_generate_rejects_gen_length_beyond_the_context(short_context, llada):
    with pytest.raises(ValueError, match="gen_length=40 exceeds the model's context of 32"):
        dllm.generate(short_context, [[5, 6]], Threshold(), gen_length=40, block_length=4)
    t0 = time.perf_counter()      # was a 452-s run on LLaDA-8B; now refused before any forward
    with pytest.raises(ValueError, match="gen_length=40000 exceeds the model's context of 4096"):
        dllm.generate(llada, prompts(2), Threshold(), gen_length=40000, block_length=32)
    assert time.perf_counter() - t0 < 1.0


def test_generate_rejects_a_canvas_beyond_the_context(short_context):
    with pytest.raises(ValueError, match=r"longest prompt \(12 tokens\) \+ gen_length=24 = 36 positions exceeds"):
        dllm.generate(short_context, [[5] * 12, [6] * 3], Threshold(), gen_length=24, block_length=4)
    out = dllm.generate(short_context, [[5] * 8], Threshold(), gen_length=24, block_length=4)   # 32: fits
    assert len(out.canvas[0]) == 32


def test_numpy_integer_prompts_equal_list_prompts(sdar):
    ps = [[5, 9, 3, 12], [7, 4, 1, 8]]
    want = dllm.generate(sdar, ps, Threshold(), **GEN).sequences
    assert dllm.generate(sdar, np.array(ps, dtype=np.int32), Threshold(), **GEN).sequences == want
    assert dllm.generate(sdar, [np.array(p) for p in ps], Threshold(), **GEN).sequences == want
    assert dllm.generate(sdar, [[np.int64(t) for t in p] for p in ps], Threshold(), **GEN).sequences == want
    assert dllm.generate(sdar, torch.tensor(ps, dtype=torch.int32), Threshold(), **GEN).sequences == want


@pytest.mark.parametrize("bad,message", [
    (torch.tensor([[5.0, 9.0, 3.0]]), "prompts must hold integer token ids, got dtype torch.float32"),
    (np.array([[5.0, 9.0, 3.0]]), "prompts must hold integer token ids, got dtype float64"),
    (torch.tensor([[True, False]]), "prompts must hold integer token ids, got dtype torch.bool"),
    ([torch.tensor([5.0, 9.0])], "prompt 0 must hold integer token ids"),
    ([[5, 9], [3, 2.0]], "prompt 1 must contain integer token ids; found 2.0"),
    (torch.zeros(0, 5, dtype=torch.long), r"non-empty \[B, P\].*got shape \(0, 5\)"),
    (torch.zeros(2, 0, dtype=torch.long), r"non-empty \[B, P\].*got shape \(2, 0\)"),
    (np.zeros((0, 3), dtype=np.int64), r"got shape \(0, 3\)"),
    ([], "non-empty list"),
    (["hello"], "prompt 0 must be a list of token ids .tokenize text first."),
    ([torch.zeros(2, 3, dtype=torch.long)], r"prompt 0 must be 1-D token ids, got shape \(2, 3\)"),
])
def test_generate_rejects_bad_prompts(sdar, bad, message):
    with pytest.raises(ValueError, match=message):
        dllm.generate(sdar, bad, Threshold(), **GEN)
