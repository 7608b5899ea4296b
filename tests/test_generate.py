"""The generation loop: LLaDA reproduction, exact block cache, batch invariance, stopping, NFE, errors."""
from __future__ import annotations

import pytest
import torch

import dllm
from dllm.generate import finished_rows
from dllm.samplers import Factor, Static, Threshold

from conftest import prompts


def llada_reference(model, prompt, steps, gen_length, block_length):
    """ML-GSAI/LLaDA `generate.py` written out plainly: full forward every step, steps split over blocks,
    per-step quota split of the block's masks, per-row low-confidence top-k, temperature 0 (batch of one)."""
    mask = model.mask_id
    x = torch.tensor([prompt + [mask] * gen_length])
    P = len(prompt)
    n_blocks = gen_length // block_length
    spb = steps // n_blocks
    nfe = 0
    for b in range(n_blocks):
        s, e = P + b * block_length, P + (b + 1) * block_length
        m0 = int((x[0, s:e] == mask).sum())
        quota = [m0 // spb + (1 if t < m0 % spb else 0) for t in range(spb)]
        for t in range(spb):
            logits = model(x).logits
            nfe += 1
            x0 = logits.argmax(-1)
            p = torch.softmax(logits.double(), -1).gather(-1, x0[..., None]).squeeze(-1)
            conf = torch.where(x == mask, p, -torch.inf)
            conf[:, e:] = -torch.inf
            _, idx = torch.topk(conf[0], quota[t])
            x[0, idx] = x0[0, idx]
    return x[0, P:].tolist(), nfe


@pytest.mark.parametrize("gen,block,steps", [(16, 16, 16), (16, 8, 8), (24, 8, 24), (16, 4, 8)])
def test_static_reproduces_llada_decoding(model, gen, block, steps):
    for p in prompts(3, lengths=(8, 4, 12)):        # multiples of 4: SDAR blocks then start at the prompt end
        if model.block_causal and (len(p) % block or block % model.block_size):
            continue
        ref, ref_nfe = llada_reference(model, p, steps, gen, block)
        out = dllm.generate(model, [p], Static(steps=steps), gen_length=gen, block_length=block, cache="none",
                            stop_at_eos=False)
        assert out.canvas[0, len(p):].tolist() == ref
        assert out.nfe == ref_nfe == steps


@pytest.mark.parametrize("sampler", [Static(steps=16), Threshold(0.5), Factor(1.0), Static(steps=8, remasking="random")])
@pytest.mark.parametrize("cache", ["none", "exact"])
def test_batch_equals_one_by_one(model, sampler, cache):
    mode = "none" if cache == "none" else ("block_fused" if model.block_causal else "dual")
    ps = prompts(4)
    kw = dict(gen_length=16, block_length=8, cache=mode, stop_at_eos=False)
    batch = dllm.generate(model, ps, sampler, **kw).sequences
    if sampler.remasking == "random" if isinstance(sampler, Static) else False:
        return   # random remasking draws batch-shaped noise: only seeded determinism holds (tested below)
    alone = [dllm.generate(model, [p], sampler, **kw).sequences[0] for p in ps]
    assert batch == alone


@pytest.mark.parametrize("block", [4, 8, 12])
@pytest.mark.parametrize("sampler", [Static(steps=24), Threshold(0.3), Factor(2.0)])
def test_sdar_block_cache_is_exact(sdar, block, sampler):
    for n in (1, 3):
        ps = prompts(n, lengths=(5, 10, 3), seed=n)
        seen = {}
        for mode in ("none", "block", "block_fused"):
            logs = []
            out = dllm.generate(sdar, ps, sampler, gen_length=24, block_length=block, cache=mode, stop_at_eos=False,
                                on_step=lambda r: logs.append(r.logits.clone()))
            seen[mode] = (out, logs)
        ref, ref_logs = seen["none"]
        for mode in ("block", "block_fused"):
            out, logs = seen[mode]
            assert out.sequences == ref.sequences, mode
            assert len(logs) == len(ref_logs)
            for a, b in zip(logs, ref_logs):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        blocks = len(ref.stats["steps_per_block"])
        # the fused commit saves one forward per block boundary (and the separate prompt prefill)
        unfused, fused = seen["block"][0], seen["block_fused"][0]
        assert unfused.stats["forwards"].get("commit", 0) >= blocks - 1
        assert fused.nfe == unfused.nfe - unfused.stats["forwards"].get("commit", 0) == ref.nfe


def test_cached_steps_inside_a_block_run_mask_free(sdar, monkeypatch):
    # the hot path: an unpadded cached step that feeds one aligned block needs no mask (flash / SDPA fast kernels);
    # the fused commit step (several blocks) and padded batches still build one. Exactness: the test above.
    import dllm.models.transformer as tr
    seen = []
    monkeypatch.setattr(tr, "attend", lambda q, k, v, mask: _record(seen, q, k, v, mask))
    out = dllm.generate(sdar, prompts(1, lengths=(5,)), Static(steps=16), gen_length=16, block_length=4,
                        cache="block_fused", stop_at_eos=False)
    n_layers, blocks = sdar.cfg.n_layers, len(out.stats["steps_per_block"])
    assert seen.count(False) == n_layers * blocks                 # each block's first step carries the fused commit
    assert seen.count(True) == n_layers * (out.nfe - blocks) > 0
    seen.clear()
    dllm.generate(sdar, prompts(2, lengths=(5, 9)), Static(steps=16), gen_length=16, block_length=4,
                  cache="block_fused", stop_at_eos=False)
    assert not any(seen)


def _record(seen, q, k, v, mask):
    from dllm.attention import attend
    seen.append(mask is None)
    return attend(q, k, v, mask)


def test_static_one_token_per_step(model):
    ps = prompts(3)
    commits = []
    out = dllm.generate(model, ps, Static(steps=16), gen_length=16, block_length=8, cache="none",
                        stop_at_eos=False, on_step=lambda r: commits.append(r.commit.sum(1).tolist()))
    masked_rows = [c for c in commits]
    assert all(n in (0, 1) for row in masked_rows for n in row)
    if not model.block_causal:
        assert out.nfe == 16 and all(c == [1, 1, 1] for c in commits)
    for p, row in zip(ps, out.canvas.tolist()):
        assert model.mask_id not in row
    lay_prompts = [row for row in out.canvas.tolist()]
    for p, row in zip(ps, lay_prompts):   # the prompt is never altered
        joined = " ".join(map(str, row))
        assert " ".join(map(str, p)) in joined


def test_threshold_above_one_is_static_one_per_step(model):
    ps = prompts(3)
    kw = dict(gen_length=16, block_length=8, cache="none", stop_at_eos=False)
    a = dllm.generate(model, ps, Threshold(1.0 + 1e-9), **kw)
    b = dllm.generate(model, ps, Static(steps=16), **kw)
    assert a.sequences == b.sequences and a.nfe == b.nfe


def test_threshold_one_commits_more_only_on_exact_ties(model):
    def check(r):
        from dllm.samplers.common import confidence
        c = confidence(r.logits, r.tokens)
        many = r.commit.sum(1) > 1
        assert bool((c[r.commit & many[:, None]] == 1.0).all())
    dllm.generate(model, prompts(3), Threshold(1.0), gen_length=16, block_length=8, cache="none", on_step=check)


def test_no_mask_left_and_prompt_untouched(model):
    ps = prompts(5)
    for mode in (("none", "block", "block_fused") if model.block_causal else ("none", "prefix", "dual")):
        out = dllm.generate(model, ps, Threshold(0.6), gen_length=16, block_length=8, cache=mode, stop_at_eos=False)
        for p, seq, row in zip(ps, out.sequences, out.canvas.tolist()):
            assert model.mask_id not in seq and len(seq) <= 16
            start = next(i for i in range(len(row)) if row[i:i + len(p)] == p)
            assert row[start:start + len(p)] == p


def test_prefix_and_dual_refresh_policy(llada):
    ps = prompts(2)
    for mode in ("prefix", "dual"):
        out = dllm.generate(llada, ps, Static(steps=16), gen_length=16, block_length=8, cache=mode, stop_at_eos=False)
        assert out.stats["forwards"]["refresh"] == 2 and out.nfe == 16
        out = dllm.generate(llada, ps, Static(steps=16), gen_length=16, block_length=8, cache=mode,
                            refresh_every=3, stop_at_eos=False)
        assert out.stats["forwards"]["refresh"] == 2 * 3        # steps 0, 3, 6 of each 8-step block
        # a refresh every step is the uncached computation
        every = dllm.generate(llada, ps, Static(steps=16), gen_length=16, block_length=8, cache=mode,
                              refresh_every=1, stop_at_eos=False)
        none = dllm.generate(llada, ps, Static(steps=16), gen_length=16, block_length=8, cache="none",
                             stop_at_eos=False)
        assert every.sequences == none.sequences


def test_shifted_llada_caches_predict_the_block_from_the_position_before_it(ckpt_dir, tmp_path):
    """A llada written with `logit_shift: true` (what pipeline=convert exports with pipeline.logit_shift): the cached
    forwards feed the position before the block, so a refresh every step is still the uncached computation, and
    the shift changes what is decoded."""
    import json
    import shutil
    folder = tmp_path / "shifted"
    shutil.copytree(ckpt_dir("llada", n_kv_heads=2), folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "logit_shift": True}))
    shifted, plain = dllm.load(folder), dllm.load(ckpt_dir("llada", n_kv_heads=2))
    assert shifted.logit_shift and not plain.logit_shift
    ps = prompts(2)
    none = dllm.generate(shifted, ps, Static(steps=16), gen_length=16, block_length=8, cache="none", stop_at_eos=False)
    for mode in ("prefix", "dual"):
        every = dllm.generate(shifted, ps, Static(steps=16), gen_length=16, block_length=8, cache=mode,
                              refresh_every=1, stop_at_eos=False)
        assert every.sequences == none.sequences
    unshifted = dllm.generate(plain, ps, Static(steps=16), gen_length=16, block_length=8, cache="none",
                              stop_at_eos=False)
    assert unshifted.sequences != none.sequences


def eos_heavy(ckpt):
    """The same checkpoint with the head rows of EOS and of its most generated token swapped, so rows stop."""
    m = dllm.load(ckpt)
    out = dllm.generate(m, prompts(6, seed=4), Threshold(0.9), gen_length=32, block_length=8, stop_at_eos=False)
    common = int(torch.tensor(sum(out.sequences, [])).mode().values)
    eos = m.stop_ids[0]
    with torch.no_grad():
        head = m.head.weight if m.head is not None else m.embed.weight
        head[[eos, common]] = head[[common, eos]]
    return m


def test_early_stop_is_exact_and_saves_forwards(ckpt_dir):
    for family, kw in (("llada", {"n_kv_heads": 2}), ("sdar", {"n_kv_heads": 2, "block_size": 4})):
        m = eos_heavy(ckpt_dir(family, **kw))
        ps = prompts(6, seed=4)
        full = dllm.generate(m, ps, Threshold(0.9), gen_length=32, block_length=8, cache="none", stop_at_eos=False)
        stop = dllm.generate(m, ps, Threshold(0.9), gen_length=32, block_length=8, cache="none")
        assert stop.sequences == full.sequences
        assert any(len(s) < 32 for s in stop.sequences), "the EOS-heavy model should stop some rows"
        assert stop.stats["row_forwards"] < full.stats["row_forwards"]   # finished rows left the batch
        short = min(range(len(ps)), key=lambda i: len(stop.sequences[i]))
        alone = dllm.generate(m, [ps[short]], Threshold(0.9), gen_length=32, block_length=8, cache="none")
        assert alone.sequences[0] == stop.sequences[short] and alone.nfe < full.nfe
        for seq in stop.sequences:
            assert not set(seq) & set(m.stop_ids)


def test_finished_rows_rule():
    M, E = 9, 7
    x = torch.tensor([[1, 2, 3, E, M],     # stop with nothing masked before it: finished
                      [1, M, 3, E, 4],     # a mask before the stop: not yet
                      [1, 2, 3, 4, M],     # no stop
                      [E, 2, 3, 4, 5]])    # stop in the prompt region does not count
    done = finished_rows(x, torch.tensor([1, 1, 1, 1]), torch.tensor([5, 5, 5, 5]), torch.tensor([E]), M)
    assert done.tolist() == [True, False, False, False]


def test_seeded_sampling(model):
    ps = prompts(3)
    kw = dict(gen_length=16, block_length=8, cache="none", stop_at_eos=False)
    hot = Threshold(0.7, temperature=1.0)
    a, b = dllm.generate(model, ps, hot, seed=1, **kw), dllm.generate(model, ps, hot, seed=1, **kw)
    c = dllm.generate(model, ps, hot, seed=2, **kw)
    assert a.sequences == b.sequences and a.sequences != c.sequences
    cold = Threshold(0.7)
    assert dllm.generate(model, ps, cold, seed=1, **kw).sequences == dllm.generate(model, ps, cold, seed=2, **kw).sequences


def test_stats(model):
    out = dllm.generate(model, prompts(2), Threshold(0.5), gen_length=16, block_length=8, stop_at_eos=False)
    s = out.stats
    assert s["nfe"] == out.nfe == sum(s["forwards"].values())
    assert s["tokens"] == 32 and s["tokens_per_forward"] == pytest.approx(32 / out.nfe)
    assert s["cache"] == ("block_fused" if model.block_causal else "prefix")
    assert s["seconds"] > 0 and len(s["steps_per_block"]) >= 2


def test_errors(llada, sdar):
    p = prompts(1)
    with pytest.raises(ValueError, match="does not apply to a bidirectional"):
        dllm.generate(llada, p, Threshold(), gen_length=8, block_length=8, cache="block")
    with pytest.raises(ValueError, match="does not apply to a block-causal"):
        dllm.generate(sdar, p, Threshold(), gen_length=8, block_length=8, cache="dual")
    with pytest.raises(ValueError, match="unknown cache mode"):
        dllm.generate(sdar, p, Threshold(), gen_length=8, block_length=8, cache="paged")
    with pytest.raises(ValueError, match="multiple of the model's block_size"):
        dllm.generate(sdar, p, Threshold(), gen_length=8, block_length=6)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        dllm.generate(llada, p, Static(steps=3), gen_length=16, block_length=8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dllm.generate(llada, [[1, 2, 10_000]], Threshold(), gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="wrap a single prompt"):
        dllm.generate(llada, [1, 2, 3], Threshold(), gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="empty"):
        dllm.generate(llada, [[]], Threshold(), gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="sampler must implement"):
        dllm.generate(llada, p, "threshold", gen_length=8, block_length=8)
    with pytest.raises(ValueError, match="refresh_every"):
        dllm.generate(sdar, p, Threshold(), gen_length=8, block_length=8, cache="block", refresh_every=2)


def test_broken_sampler_contract_is_reported(llada):
    class Lazy(Threshold):
        def step(self, inp, state):
            out, state = super().step(inp, state)
            out.commit = torch.zeros_like(out.commit)
            return out, state
    with pytest.raises(RuntimeError, match="committed nothing"):
        dllm.generate(llada, prompts(1), Lazy(), gen_length=8, block_length=8)


def test_hf_adapter_drives_a_plain_transformers_model():
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    bert = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=128)).eval()
    model = dllm.HFAdapter(bert, mask_id=39, stop_ids=(38,), pad_id=0)
    ps = prompts(3, vocab=30)
    out = dllm.generate(model, ps, Static(steps=8), gen_length=8, block_length=4, stop_at_eos=False)
    assert out.nfe == 8 and all(len(s) == 8 and 39 not in s for s in out.sequences)
    alone = [dllm.generate(model, [p], Static(steps=8), gen_length=8, block_length=4, stop_at_eos=False).sequences[0]
             for p in ps]
    assert out.sequences == alone
    with pytest.raises(ValueError, match="does not apply"):
        dllm.generate(model, ps, Static(steps=8), gen_length=8, block_length=4, cache="dual")


def test_row_nfe_is_what_the_row_needs_alone(model):
    ps = prompts(4)
    kw = dict(gen_length=16, block_length=8, stop_at_eos=False)
    batch = dllm.generate(model, ps, Threshold(0.6), **kw)
    alone = [dllm.generate(model, [p], Threshold(0.6), **kw).nfe for p in ps]
    assert batch.stats["row_nfe"] == alone and max(alone) <= batch.nfe


@pytest.mark.parametrize("cache", ["none", "block_fused"])
def test_compiled_forward_gives_the_same_tokens(sdar, cache):
    # the "eager" backend traces the forward through TorchDynamo without generating code, so this checks the
    # compile plumbing (dynamic shapes as rows finish and spans change) on any CI machine; inductor is for GPUs
    ps = prompts(3, lengths=(5, 10, 3))
    ref = dllm.generate(sdar, ps, Threshold(0.3), gen_length=16, block_length=4, cache=cache)
    out = dllm.generate(sdar, ps, Threshold(0.3), gen_length=16, block_length=4, cache=cache, compile="eager")
    assert out.sequences == ref.sequences and out.nfe == ref.nfe
