"""CreditDecoding and LocalLeap: exact cases on constructed logits, and their Threshold special cases through
dllm.generate on both tiny families with and without caches."""
from __future__ import annotations

import math

import pytest
import torch

import dllm
from dllm.protocols import Block, StepInput
from dllm.samplers.credit import CreditDecoding
from dllm.samplers.localleap import LocalLeap
from dllm.samplers.threshold import Threshold

from conftest import prompts
from test_baseline_samplers import V, peaked

CPU = torch.device("cpu")


def run(sampler, logits, masked, step_idx=0, state=None, seed=0):
    B, S = masked.shape
    inp = StepInput(torch.zeros(B, S, dtype=torch.long), logits, masked, Block(0, S), step_idx,
                    torch.Generator().manual_seed(seed), None, mask_id=V - 1)
    state = state if state is not None else sampler.init_state(B, 1, CPU)
    before = (logits.clone(), masked.clone())
    out, state = sampler.step(inp, state)
    assert torch.equal(before[0], logits) and torch.equal(before[1], masked)   # inputs unmodified
    return out, state


def random_case(seed: int, B: int = 4, S: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, V, generator=g, dtype=torch.float64) * 3, torch.rand(B, S, generator=g) < 0.7


def through_generate(model, sampler, mode: str):
    out = dllm.generate(model, prompts(3), sampler, gen_length=16, block_length=8, cache=mode, stop_at_eos=False)
    return out.sequences, out.nfe


MODES = [("llada", "none"), ("llada", "dual"), ("sdar", "none"), ("sdar", "block_fused")]


# ---------------------------------------------------------------- CreditDecoding

def test_credit_accrues_on_masked_top1_only():
    logits = peaked([[1, 2, 3]], [[0.6, 0.5, 0.9]])
    masked = torch.tensor([[True, False, True]])
    _, state = run(CreditDecoding(gamma=0.5), logits, masked)
    c = state.credit
    assert c.shape == (1, 3, V) and bool((c >= 0).all())
    assert c[0, 0, 1].item() == pytest.approx(0.6 ** 0.5) and c[0, 2, 3].item() == pytest.approx(0.9 ** 0.5)
    assert c[0, 1].abs().sum() == 0                              # committed slot earns nothing
    assert (c[0] != 0).sum() == 2                                 # only the top-1 token of each masked slot


def test_credit_converges_to_geometric_limit():
    m, decay, gamma = 0.6, 0.8, 0.2
    sampler = CreditDecoding(decay=decay, gamma=gamma)
    logits = peaked([[2, 2]], [[m, m]])
    masked = torch.ones(1, 2, dtype=torch.bool)
    state = None
    for t in range(100):                                          # C_t = m^g (1 - decay^(t+1)) / (1 - decay)
        _, state = run(sampler, logits, masked, t, state)
        assert bool((state.credit >= 0).all())
    assert state.credit[0, :, 2].tolist() == pytest.approx([m ** gamma / (1 - decay)] * 2, rel=1e-5)


def test_credit_keeps_an_earlier_winner():
    # step 0: A=1 is top-1 (0.95); step 1: B=2 narrowly beats A (0.40 vs 0.39). With gamma = 1 and decay 0.9,
    # A's credit 0.9 * 0.95 outweighs B's fresh 0.40, so a large alpha keeps A; alpha = 0 follows the raw logits.
    s0 = peaked([[1, 5]], [[0.95, 0.2]])
    s1 = torch.full((1, 2, V), math.log(0.21 / (V - 2)), dtype=torch.float64)
    s1[0, 0, 1], s1[0, 0, 2] = math.log(0.39), math.log(0.40)
    s1[0, 1] = s0[0, 1]
    masked = torch.ones(1, 2, dtype=torch.bool)
    for alpha, want in ((5.0, 1), (0.0, 2)):
        sampler = CreditDecoding(threshold=0.99, alpha=alpha, decay=0.9, gamma=1.0)
        _, state = run(sampler, s0, masked, 0)
        out, state = run(sampler, s1, masked, 1, state)
        assert out.tokens[0, 0].item() == want


def test_credit_resets_at_block_start():
    sampler = CreditDecoding()
    logits = peaked([[3, 4]], [[0.5, 0.7]])
    masked = torch.ones(1, 2, dtype=torch.bool)
    _, state = run(sampler, logits, masked, 0)
    _, state = run(sampler, logits, masked, 1, state)
    _, fresh = run(sampler, logits, masked, 0, state)             # a new block: history forgotten
    _, first = run(sampler, logits, masked, 0)
    assert torch.equal(fresh.credit, first.credit)
    assert state.select(torch.tensor([0])).credit.shape == (1, 2, V)


def test_credit_raises_confidence_over_threshold():
    # two slots stuck at 0.85 / 0.86 < 0.9: Threshold takes only the best, credit lifts both over 0.9
    logits = peaked([[1, 2]], [[0.85, 0.86]])
    masked = torch.ones(1, 2, dtype=torch.bool)
    sampler, state = CreditDecoding(0.9), None
    for t in range(3):
        out, state = run(sampler, logits, masked, t, state)
    assert out.commit.tolist() == [[True, True]]
    assert run(Threshold(0.9), logits, masked)[0].commit.tolist() == [[False, True]]


@pytest.mark.parametrize("family,mode", MODES)
def test_credit_alpha_zero_is_threshold(family, mode, llada, sdar):
    model = {"llada": llada, "sdar": sdar}[family]
    for tau in (0.3, 0.9):
        assert through_generate(model, CreditDecoding(tau, alpha=0.0), mode) == \
            through_generate(model, Threshold(tau), mode)


# ---------------------------------------------------------------- LocalLeap

def test_localleap_window():
    # anchor at 2 (0.95); slot 5 (distance 3 <= r) at 0.8 is relaxed in, slot 7 (distance 5 > r) at 0.8 is not,
    # slot 0 (distance 2) at 0.7 < relaxed is not
    logits = peaked([[1, 1, 1, 1, 1, 1, 1, 1]], [[0.7, 0.3, 0.95, 0.3, 0.3, 0.8, 0.3, 0.8]])
    masked = torch.ones(1, 8, dtype=torch.bool)
    out, _ = run(LocalLeap(0.9, 0.75, radius=4), logits, masked)
    assert out.commit.tolist() == [[False, False, True, False, False, True, False, False]]
    out, _ = run(LocalLeap(0.9, 0.75, radius=5), logits, masked)
    assert out.commit.tolist() == [[False, False, True, False, False, True, False, True]]
    # no anchor: plain threshold (only the top-1)
    no_anchor = peaked([[1, 1, 1]], [[0.8, 0.85, 0.8]])
    assert run(LocalLeap(), no_anchor, torch.ones(1, 3, dtype=torch.bool))[0].commit.tolist() == [[False, True, False]]
    # an unmasked confident slot is not an anchor
    masked2 = masked.clone()
    masked2[0, 2] = False
    assert run(LocalLeap(), logits, masked2)[0].commit.tolist() == [[False] * 5 + [True] + [False] * 2]


def test_localleap_linear_ramp():
    # tau(d) = 0.7 + 0.2 * d / 3 inside r = 2: d=1 -> 0.767, d=2 -> 0.833
    logits = peaked([[1] * 5], [[0.95, 0.78, 0.8, 0.85, 0.3]])
    masked = torch.ones(1, 5, dtype=torch.bool)
    out, _ = run(LocalLeap(0.9, 0.7, radius=2, decay="linear"), logits, masked)
    assert out.commit.tolist() == [[True, True, False, False, False]]   # 0.8 < 0.833; slot 3 is at d = 3 > r
    out, _ = run(LocalLeap(0.9, 0.7, radius=2), logits, masked)
    assert out.commit.tolist() == [[True, True, True, False, False]]


def test_localleap_superset_of_threshold():
    for seed in range(5):
        logits, masked = random_case(seed)
        for decay in ("step", "linear"):
            leap, _ = run(LocalLeap(0.7, 0.4, radius=3, decay=decay), logits, masked)
            base, _ = run(Threshold(0.7), logits, masked)
            assert bool((base.commit <= leap.commit).all()) and torch.equal(base.tokens, leap.tokens)
            conf = torch.softmax(logits, -1).amax(-1)
            extra = leap.commit & ~base.commit                      # every extra commit passes relaxed
            assert bool((conf[extra] >= 0.4).all())


@pytest.mark.parametrize("family,mode", MODES)
def test_localleap_reduces_to_threshold(family, mode, llada, sdar):
    model = {"llada": llada, "sdar": sdar}[family]
    ref = through_generate(model, Threshold(0.3), mode)
    assert through_generate(model, LocalLeap(0.3, 0.3, radius=4), mode) == ref
    assert through_generate(model, LocalLeap(0.3, 0.1, radius=0), mode) == ref


# ---------------------------------------------------------------- both

@pytest.mark.parametrize("sampler", [CreditDecoding(0.5, temperature=1.0), LocalLeap(0.5, 0.2, temperature=1.0)])
def test_seeded_determinism(sampler):
    logits, masked = random_case(7)
    a, _ = run(sampler, logits, masked, seed=3)
    b, _ = run(sampler, logits, masked, seed=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.commit, b.commit)
    c = [run(sampler, logits, masked, seed=s)[0].tokens for s in range(4)]
    assert any(not torch.equal(c[0], t) for t in c[1:])          # the seed matters at temperature > 0


def test_bad_arguments():
    for kw in (dict(alpha=-1), dict(decay=1.5), dict(gamma=-0.1), dict(temperature=-1)):
        with pytest.raises(ValueError):
            CreditDecoding(**kw)
    for kw in (dict(relaxed=0.95), dict(radius=-1), dict(decay="exp")):
        with pytest.raises(ValueError):
            LocalLeap(**kw)
