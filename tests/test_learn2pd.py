"""Learn2PD (learned filter on top of the static schedule) and EoTP (end-of-text prediction around any sampler):
a filter trained on the fly on tiny trajectories, the accept >= 1 == Static equivalence, exact EoTP cases,
filter-file checks, purity and determinism."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

import dllm
from dllm.protocols import Block, ModelOut, NoState, StepInput, StepOutput
from dllm.samplers import Static, Threshold
from dllm.samplers.common import confidence, scores, top_k_mask
from dllm.samplers.eotp import EoTP
from dllm.samplers.learn2pd import Learn2PD
from dllm.samplers.policy import FilterNet, features, load_filter, save_filter, train_filter

from conftest import prompts
from test_generate import eos_heavy

GEN, BLOCK = 16, 8
KW = dict(gen_length=GEN, block_length=BLOCK)


def egp_data(model, ps, gen_length=GEN, block_length=BLOCK):
    """Roll out Static one token per step; per step, features of the block and EGP labels (samplers.md §2.1):
    label_j = [current argmax at slot j == the slot's final token y*_j], decoded slots included."""
    steps = []
    out = dllm.generate(model, ps, Static(gen_length), gen_length=gen_length, block_length=block_length,
                        cache="none", stop_at_eos=False, on_step=steps.append)
    feats, labels = [], []
    for r in steps:   # temperature 0: r.tokens is the argmax at every block slot
        s, e = r.block.start, r.block.end
        feats.append(features(r.logits, r.x[:, s:e], r.masked))
        labels.append(r.tokens == out.canvas[r.rows, s:e])
    return torch.cat(feats), torch.cat(labels)


@pytest.fixture(scope="module")
def filter_file(llada, tmp_path_factory):
    """A filter trained on the fly, saved, and the median of its training outputs (a tiny random model's labels
    carry little signal, so decode at an accept level the filter is known to cross on some slots)."""
    feats, labels = egp_data(llada, prompts(4))
    net = train_filter(feats, labels, epochs=200, seed=0)
    path = tmp_path_factory.mktemp("filter") / "filter.safetensors"
    save_filter(path, net, {"teacher": "tiny llada, Static one token per step"})
    with torch.no_grad():
        return path, float(torch.sigmoid(net(feats)).median())


class QuotaChecked:
    """Wraps Learn2PD(steps=None) and asserts each step commits the static quota (the best masked slot)."""

    def __init__(self, inner):
        self.inner, self.needs_hidden, self.extra = inner, inner.needs_hidden, 0

    def init_state(self, *a):
        return self.inner.init_state(*a)

    def step(self, inp, state):
        out, state = self.inner.step(inp, state)
        score = scores(confidence(inp.logits, inp.logits.argmax(-1)), inp.masked)
        quota = top_k_mask(score, torch.ones(score.shape[0], dtype=torch.long)) & inp.masked
        assert not bool((quota & ~out.commit).any()), "a step skipped the static quota"
        assert not bool((out.commit & ~inp.masked).any())
        self.extra += int((out.commit & ~quota).sum())
        return out, state


def test_filter_net_size_and_feature():
    assert sum(p.numel() for p in FilterNet(32).parameters()) == 2112   # the paper's "~2K parameters"
    assert sum(p.numel() for p in FilterNet(8, hidden=4, activation="tanh").parameters()) == 8 * 4 + 4 + 4 * 8 + 8
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]]))
    feat = features(logits, torch.zeros(1, 2, dtype=torch.long), torch.tensor([[False, True]]))
    assert torch.allclose(feat, torch.tensor([[0.7, 0.6]]))             # decoded slot 0 included
    with pytest.raises(ValueError, match="activation"):
        FilterNet(8, activation="swish")


def test_trained_filter_decodes_within_static_budget(llada, filter_file):
    path, accept = filter_file
    net = load_filter(path, block_length=BLOCK)
    assert net.meta == {"teacher": "tiny llada, Static one token per step"}
    ps = prompts(4, seed=7)
    static = dllm.generate(llada, ps, Static(GEN), cache="none", stop_at_eos=False, **KW)
    checked = QuotaChecked(Learn2PD(str(path), accept=accept))
    for cache in ("none", "auto"):
        out = dllm.generate(llada, ps, checked, cache=cache, stop_at_eos=False, **KW)
        assert all(llada.mask_id not in s for s in out.sequences) and out.nfe <= static.nfe
    assert checked.extra > 0, "the filter should accept some slots beyond the static quota"
    assert dllm.generate(llada, ps, Learn2PD(net, accept=accept), cache="none", stop_at_eos=False, **KW).nfe < static.nfe


def test_train_filter_is_seeded():
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.rand(64, 8, generator=g), torch.rand(64, 8, generator=g) < 0.5
    a, b = train_filter(feats, labels, epochs=20, seed=3), train_filter(feats, labels, epochs=20, seed=3)
    c = train_filter(feats, labels, epochs=20, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    with pytest.raises(ValueError, match=r"\[N, S\]"):
        train_filter(feats, labels[:, :4])


@pytest.mark.parametrize("family", ["llada", "sdar"])
def test_accept_one_is_static(family, llada, sdar):
    model = {"llada": llada, "sdar": sdar}[family]
    torch.manual_seed(0)
    net = FilterNet(BLOCK)   # any weights: a sigmoid never exceeds 1
    ps = prompts(4)
    for cache in ("none", "auto"):
        for steps in (None, GEN // 2):
            ref = dllm.generate(model, ps, Static(steps or GEN), cache=cache, **KW)
            out = dllm.generate(model, ps, Learn2PD(net, accept=1.01, steps=steps), cache=cache, **KW)
            assert out.sequences == ref.sequences and out.nfe == ref.nfe
            assert torch.equal(out.canvas, ref.canvas)


def test_filter_file_mismatch_is_a_clear_error(llada, tmp_path):
    path = tmp_path / "f.safetensors"
    save_filter(path, FilterNet(BLOCK))
    with pytest.raises(ValueError, match=f"filter trained for block_length {BLOCK}, decoding with 4"):
        dllm.generate(llada, prompts(2), Learn2PD(str(path)), gen_length=8, block_length=4)
    with pytest.raises(ValueError, match=f"filter trained for block_length {BLOCK}, decoding with 4"):
        load_filter(path, block_length=4)
    weights = FilterNet(BLOCK).state_dict()
    meta = {"format": "dllm.learn2pd_filter", "feature": "top1_prob", "feature_version": "2",
            "block_length": str(BLOCK), "hidden": str(BLOCK), "activation": "relu"}
    save_file(dict(weights), str(tmp_path / "v2.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="feature 'top1_prob' v2"):
        load_filter(tmp_path / "v2.safetensors")
    save_file(dict(weights), str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a Learn2PD filter"):
        Learn2PD(str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="reserved"):
        save_filter(path, FilterNet(BLOCK), {"block_length": 3})


# ---- EoTP on constructed steps --------------------------------------------------------------------------------

V, M, E = 8, 7, 6    # vocabulary, mask id, stop id


def peaked(tokens: list[list[int]], conf: list[list[float]]) -> torch.Tensor:
    """Logits [B, S, V] whose argmax is `tokens` with probability `conf` (rest uniform)."""
    out = torch.empty(len(tokens), len(tokens[0]), V, dtype=torch.float64)
    for b, (row, crow) in enumerate(zip(tokens, conf)):
        for s, (t, c) in enumerate(zip(row, crow)):
            out[b, s] = math.log((1 - c) / (V - 1))
            out[b, s, t] = math.log(c)
    return out


def eotp_step(sampler, logits, masked, start=2, L=10):
    B, S = masked.shape
    x = torch.full((B, L), 1)
    x[:, start:start + S] = torch.where(masked, M, 1)
    inp = StepInput(x, logits, masked, Block(start, start + S), 0, torch.Generator().manual_seed(0), None,
                    mask_id=M, stop_ids=(E, 5))
    before = [t.clone() for t in (x, logits, masked)]
    out, state = sampler.step(inp, sampler.init_state(B, 1, torch.device("cpu")))
    assert all(torch.equal(a, b) for a, b in zip(before, (x, logits, masked)))   # inputs unmodified
    return out


def test_eotp_fills_after_the_first_committed_stop():
    # row 0 commits the stop at slot 1 (canvas 3) and at slot 3; row 1 commits no stop; row 2 commits stop id 5
    logits = peaked([[1, E, 2, E], [1, E, 2, 3], [5, 1, 1, 1]],
                    [[0.95, 0.99, 0.3, 0.97], [0.95, 0.5, 0.3, 0.2], [0.99, 0.2, 0.2, 0.2]])
    masked = torch.ones(3, 4, dtype=torch.bool)
    base = eotp_step(Threshold(0.9), logits, masked)
    out = eotp_step(EoTP(Threshold(0.9)), logits, masked)
    assert torch.equal(out.commit, base.commit) and torch.equal(out.tokens, base.tokens)
    assert out.fill_from.tolist() == [2 + 1 + 1, 10, 2 + 0 + 1]
    # eos_confidence: row 1's masked slot predicting the stop at 0.5 is committed and ends the row
    out = eotp_step(EoTP(Threshold(0.9), eos_confidence=0.5), logits, masked)
    assert out.commit[1].tolist() == [True, True, False, False] and out.tokens[1, 1] == E
    assert out.fill_from.tolist() == [4, 4, 3]


class Carrying:
    """A base that commits the argmax of slot 0 and carries logits (as FreeDave does)."""
    needs_hidden = False

    def init_state(self, *a):
        return NoState()

    def step(self, inp, state):
        commit = torch.zeros_like(inp.masked)
        commit[:, 0] = True
        return StepOutput(inp.logits.argmax(-1), commit & inp.masked, carry=ModelOut(inp.logits)), state


def test_eotp_drops_a_carry_it_made_stale():
    masked = torch.ones(2, 3, dtype=torch.bool)
    no_stop = eotp_step(EoTP(Carrying()), peaked([[1, 2, 3]] * 2, [[0.9] * 3] * 2), masked)
    assert no_stop.carry is not None and no_stop.fill_from.tolist() == [10, 10]
    stop = eotp_step(EoTP(Carrying()), peaked([[1, 2, 3], [E, 2, 3]], [[0.9] * 3] * 2), masked)
    assert stop.carry is None and stop.fill_from.tolist() == [10, 3]   # slots 1, 2 of row 1 get filled


# ---- EoTP through the loop ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def heavy(ckpt_dir):
    return {"llada": eos_heavy(ckpt_dir("llada", n_kv_heads=2)),
            "sdar": eos_heavy(ckpt_dir("sdar", n_kv_heads=2, block_size=4))}


class FillChecked:
    """on_step hook: once a row commits a stop id, none of its slots after that stop is still masked."""

    def __init__(self, model):
        self.model, self.fills = model, 0

    def __call__(self, r):
        stop = r.commit & torch.isin(r.tokens, torch.tensor(self.model.stop_ids))       # [B, S]
        first = r.block.start + stop.int().argmax(1)                                   # [B]
        col = torch.arange(r.x.shape[1])
        after = stop.any(1)[:, None] & (col[None, :] > first[:, None])                  # [B, L]
        assert not bool((after & (r.x == self.model.mask_id)).any()), "masked slots left after a committed stop"
        self.fills += int(stop.any(1).sum())


@pytest.mark.parametrize("family", ["llada", "sdar"])
def test_eotp_through_the_loop(family, heavy, filter_file):
    model, ps = heavy[family], prompts(6, seed=4)
    # without the loop's early stop (the reference's setting) one token per step costs a forward per slot;
    # EoTP's fill removes the masks after a committed stop, so a block ends once every row's prefix is decoded
    static = dllm.generate(model, ps, Static(GEN), stop_at_eos=False, **KW)
    check = FillChecked(model)
    eotp = dllm.generate(model, ps, EoTP(Static(GEN)), stop_at_eos=False, on_step=check, **KW)
    assert eotp.nfe <= static.nfe and check.fills > 0
    assert any(len(s) < GEN for s in eotp.sequences), "the EOS-heavy model should end some rows"
    for base in (Threshold(0.9), Learn2PD(str(filter_file[0]), accept=filter_file[1])):
        for sampler in (EoTP(base), EoTP(base, eos_confidence=0.2)):
            out = dllm.generate(model, ps, sampler, cache="auto", on_step=check, **KW)
            assert all(model.mask_id not in s and not set(s) & set(model.stop_ids) for s in out.sequences)


def test_eotp_is_the_base_when_no_stop_is_committed(model):
    ps = prompts(3)
    stops = torch.tensor(model.stop_ids)
    no_stop = lambda logits: logits.index_fill(-1, stops, -torch.inf)   # noqa: E731

    class NoStop:   # Threshold that never proposes a stop id
        needs_hidden = False
        init_state = Threshold(0.7).init_state

        def step(self, inp, state):
            return Threshold(0.7).step(StepInput(**{**inp.__dict__, "logits": no_stop(inp.logits)}), state)

    base = dllm.generate(model, ps, NoStop(), **KW)
    out = dllm.generate(model, ps, EoTP(NoStop()), **KW)
    assert out.sequences == base.sequences and out.nfe == base.nfe and all(len(s) == GEN for s in out.sequences)


def test_learn2pd_pure_and_seeded(llada):
    net = FilterNet(4)
    logits = torch.randn(2, 4, V, generator=torch.Generator().manual_seed(0))
    masked = torch.tensor([[True, True, False, True], [True, False, False, False]])
    sampler = Learn2PD(net, accept=0.0)   # accept everything masked
    out = eotp_step(EoTP(sampler), logits, masked, start=2, L=6)
    assert torch.equal(out.commit, masked)
    hot = Learn2PD(net, accept=0.9, temperature=1.0)
    ps, kw = prompts(3), dict(gen_length=8, block_length=4, cache="none")
    run = lambda seed: dllm.generate(llada, ps, hot, seed=seed, **kw).sequences   # noqa: E731
    assert run(1) == run(1) and run(1) != run(2)
    with pytest.raises(ValueError):
        Learn2PD(net, steps=0)
    with pytest.raises(ValueError):
        Learn2PD(net, temperature=-1)


@pytest.mark.parametrize("name,block_length", [("tiny-sdar", 4), ("tiny-llada", 6)])
def test_shipped_filter_loads_by_model_name(name, block_length):
    from dllm.loading import SHIPPED
    if not (SHIPPED / name / "model.safetensors").is_file():
        pytest.skip(f"{name} is not shipped in this checkout")
    net = load_filter(f"{name}/learn2pd_filter.safetensors", block_length=block_length)
    assert net.meta["model"] == name
    with pytest.raises(FileNotFoundError, match="no filter file"):
        load_filter(f"{name}/missing.safetensors")
