"""LLaDA2 (Ling MoE, block diffusion): the native forward equals a plain-torch forward written here from the
checkpoint's own weight names; the grouped MoE equals a per-token loop; the block caches equal no cache; the
LLaDA2 threshold rule decodes as the reference `generate()` loop; special ids, block length and the load
overrides resolve as documented; bad configs fail with a ValueError naming the key (every family)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import dllm
from dllm.models import FAMILIES
from dllm.models.moe import MoE, MoEConfig, per_token_reference
from dllm.models.transformer import MLP
from dllm.samplers import DynamicThreshold, Threshold
from dllm.testing import write_tiny_checkpoint, write_tiny_llada2

from conftest import prompts


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def partial_rope(x, theta, rd):           # rotate_half over the first rd dims, positions 0..L-1
    L = x.shape[-2]
    inv = 1.0 / theta ** (torch.arange(0, rd, 2).float() / rd)
    ang = torch.outer(torch.arange(L).float(), inv)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    r, rest = x[..., :rd], x[..., rd:]
    r = r * cos + torch.cat([-r[..., rd // 2:], r[..., :rd // 2]], -1) * sin
    return torch.cat([r, rest], -1)


def swiglu(h, w, p):
    return (F.silu(h @ w[p + "gate_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)) @ w[p + "down_proj.weight"].T


def moe_reference(h, w, p, cfg):
    """Every expert on every token, mixed by a dense [N, E] weight matrix that is zero off the chosen experts."""
    E, G, k = cfg["num_experts"], cfg["n_group"], cfg["num_experts_per_tok"]
    x = h.reshape(-1, h.shape[-1])
    s = torch.sigmoid(x @ w[p + "gate.weight"].T)
    sel = s + w[p + "gate.expert_bias"]
    gs = sel.view(-1, G, E // G).sort(-1, descending=True).values[..., :2].sum(-1)
    best_groups = gs.argsort(-1, descending=True)[:, :cfg["topk_group"]]
    ok = torch.zeros(x.shape[0], G, dtype=torch.bool)
    ok[torch.arange(x.shape[0])[:, None], best_groups] = True
    sel = sel.masked_fill(~ok.repeat_interleave(E // G, 1), -1e9)
    chosen = sel.argsort(-1, descending=True)[:, :k]
    mix = torch.zeros_like(s)
    mix.scatter_(1, chosen, s.gather(1, chosen))
    if k > 1:
        mix = mix / mix.sum(-1, keepdim=True)
    mix = mix * cfg["routed_scaling_factor"]
    y = sum(mix[:, e:e + 1] * swiglu(x, w, f"{p}experts.{e}.") for e in range(E))
    if cfg["num_shared_experts"]:
        y = y + swiglu(x, w, p + "shared_experts.")
    return y.view(h.shape)


def reference_llada2(folder, ids, block):
    cfg = json.loads((folder / "config.json").read_text())
    w = {}
    for f in sorted(folder.glob("*.safetensors")):
        w.update(load_file(f))
    H, Hkv, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    rd = int(hd * cfg["partial_rotary_factor"])
    x = w["model.word_embeddings.weight"][ids]
    B, L, _ = x.shape
    blk = torch.arange(L) // block
    allowed = blk[None, :] <= blk[:, None]            # the reference's tril(ones(nb, nb)) repeated per block
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        qkv = (h @ w[p + "attention.query_key_value.weight"].T).view(B, L, H + 2 * Hkv, hd)
        q, k, v = qkv[:, :, :H], qkv[:, :, H:H + Hkv], qkv[:, :, H + Hkv:]
        q = rms(q, w[p + "attention.query_layernorm.weight"], eps).transpose(1, 2)
        k = rms(k, w[p + "attention.key_layernorm.weight"], eps).transpose(1, 2)
        q, k, v = partial_rope(q, cfg["rope_theta"], rd), partial_rope(k, cfg["rope_theta"], rd), v.transpose(1, 2)
        rep = H // Hkv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = (q @ k.transpose(-1, -2) / hd ** 0.5).masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        x = x + att.transpose(1, 2).reshape(B, L, -1) @ w[p + "attention.dense.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        dense = i < cfg["first_k_dense_replace"]
        x = x + (swiglu(h, w, p + "mlp.") if dense else moe_reference(h, w, p + "mlp.", cfg))
    return rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    made = {}

    def make(**kw):
        key = tuple(sorted(kw.items()))
        if key not in made:
            made[key] = write_tiny_llada2(tmp_path_factory.mktemp("llada2"), **kw)
        return made[key]

    return make


@pytest.mark.parametrize("kw", [
    {},                                                                  # GQA 4:2, top-2 of 8 in 2 groups, dense + 2 MoE
    {"n_kv_heads": 4, "top_k": 1, "n_shared": 0},                        # MHA, top-1 (no renormalisation)
    {"n_group": 4, "topk_group": 2, "top_k": 3, "first_dense": 0},       # every layer MoE, 4 groups
    {"n_group": 1, "topk_group": 1, "first_dense": 2, "n_kv_heads": 1},  # one group (plain top-k), MQA
    {"head_dim": 16, "rotary_factor": 0.25, "block_length": 3, "shards": 2},  # head_dim != d/H, other RoPE share
])
def test_logits_match_plain_torch_reference(ckpt, kw):
    folder = ckpt(**kw)
    model = dllm.load(folder)
    ids = torch.randint(0, 58, (2, 11), generator=torch.Generator().manual_seed(1))
    ref = reference_llada2(folder, ids, kw.get("block_length", 4))
    torch.testing.assert_close(model(ids).logits, ref, atol=3e-5, rtol=3e-5)


def test_block_causal_aligned_to_position_zero(ckpt):
    model = dllm.load(ckpt())
    ids = torch.randint(0, 58, (1, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 58                  # inside block [8, 12)
    a, b = model(ids).logits, model(changed).logits
    # earlier blocks cannot see it (not bitwise: an expert's batch of tokens changes with the routing of token 9)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)


@pytest.mark.parametrize("top_k,n_group,topk_group,shared", [(2, 2, 1, 1), (1, 1, 1, 0), (4, 4, 3, 2)])
def test_grouped_moe_equals_per_token_loop(top_k, n_group, topk_group, shared):
    cfg = MoEConfig(n_experts=8, top_k=top_k, d_expert=12, n_shared=shared, n_group=n_group, topk_group=topk_group,
                    scaling=2.5, first_dense=0)
    torch.manual_seed(0)
    moe = MoE(cfg, 16, MLP)
    torch.nn.init.normal_(moe.router.weight)
    moe.router.expert_bias.normal_(0, 0.1)
    h = torch.randn(3, 7, 16)
    idx, _ = moe.router(h.reshape(-1, 16))
    assert idx.unique().numel() > 2                           # several experts share the batch
    with torch.no_grad():
        torch.testing.assert_close(moe(h), per_token_reference(moe, h), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(moe(h[:, :0]), h[:, :0])   # an empty query range (a commit-only forward)


def test_expert_bias_steers_selection_only():
    cfg = MoEConfig(n_experts=4, top_k=2, d_expert=4, n_shared=0, n_group=2, topk_group=2, scaling=2.5,
                    first_dense=0)
    moe = MoE(cfg, 2, MLP)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[2.0, 0], [1.0, 0], [0.0, 0], [-1.0, 0]]))
        x = torch.tensor([[1.0, 0.0]])
        s = torch.sigmoid(torch.tensor([2.0, 1.0, 0.0, -1.0]))
        idx, w = moe.router(x)
        assert sorted(idx[0].tolist()) == [0, 1]
        moe.router.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 5.0]))     # expert 3 now always chosen
        idx, w = moe.router(x)
        assert sorted(idx[0].tolist()) == [0, 3]
        got = dict(zip(idx[0].tolist(), w[0].tolist()))
        total = s[0] + s[3]                                                  # unbiased scores, renormalised
        assert got[3] == pytest.approx(2.5 * s[3] / total) and got[0] == pytest.approx(2.5 * s[0] / total)


def reference_generate(model, prompt, gen_length, block, threshold, steps):
    """The LLaDA2 reference decoder for one prompt (window recomputed every step, no cache), except that the
    mask id is never proposed (dllm's candidate rule, `samplers.common.candidates`)."""
    P = len(prompt)
    nb = -(-(P + gen_length) // block)
    x = torch.full((1, nb * block), model.mask_id)
    x[0, :P] = torch.tensor(prompt)
    base, extra = divmod(block, steps)
    for b in range(P // block, nb):
        end = (b + 1) * block
        for step in range(steps):
            active = x[:, end - block:end] == model.mask_id
            if not active.any():
                break
            logits = model(x[:, :end]).logits[:, -block:].double()
            probs = logits.softmax(-1)
            probs_ = probs.clone()
            probs_[..., model.mask_id] = -1
            tok = probs_.argmax(-1)
            conf = torch.where(active, probs.gather(-1, tok[..., None])[..., 0], -torch.inf)
            k = base + (step < extra)
            high = conf[0] > threshold
            commit = torch.zeros_like(active)
            if high.sum() >= k:
                commit[0] = high
            else:
                commit[0, conf[0].topk(min(k, int(active.sum()))).indices] = True
            x[:, end - block:end] = torch.where(commit, tok, x[:, end - block:end])
    return x[0, P:P + gen_length].tolist()


@pytest.mark.parametrize("threshold,steps", [(0.3, 4), (0.6, 2), (2.0, 4)])
def test_dynamic_threshold_decodes_as_the_reference_loop(llada2, threshold, steps):
    """Blocks aligned to position 0 (the prompt tail shares the first block), k(step) over the block length,
    strictly-above test: token for token the reference, for every cache mode."""
    sampler = DynamicThreshold(threshold, steps=steps)
    for p in prompts(3, lengths=(5, 8, 3)):
        gen = 16 - len(p) % 4
        ref = reference_generate(llada2, p, gen, 4, threshold, steps)
        for cache in ("none", "block", "block_fused"):
            out = dllm.generate(llada2, [p], sampler, gen_length=gen, block_length=4, cache=cache, stop_at_eos=False)
            assert out.canvas[0, -gen:].tolist() == ref, (p, cache)


def test_dynamic_threshold_floor_schedule():
    s = DynamicThreshold(0.9, steps=3)
    assert [s.floor(8, i) for i in range(4)] == [3, 3, 2, 8]   # 8 = 3 + 3 + 2, past the schedule: everything
    assert [DynamicThreshold(0.9, steps=8).floor(4, i) for i in range(5)] == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="steps"):
        DynamicThreshold(0.9, steps=0)


@pytest.mark.parametrize("sampler", [DynamicThreshold(0.5, steps=4), Threshold(0.5)])
def test_block_caches_equal_no_cache_and_batch_equals_alone(llada2, sampler):
    ps = prompts(4, lengths=(5, 9, 3, 12))
    kw = dict(gen_length=12, block_length=8, stop_at_eos=False)
    ref = dllm.generate(llada2, ps, sampler, cache="none", **kw)
    for cache in ("block", "block_fused"):
        out = dllm.generate(llada2, ps, sampler, cache=cache, **kw)
        assert out.sequences == ref.sequences
        assert out.stats["tokens_evaluated"] < ref.stats["tokens_evaluated"]
    assert ref.sequences == [dllm.generate(llada2, [p], sampler, cache="block_fused", **kw).sequences[0]
                             for p in ps]


def test_special_ids_block_length_and_overrides(ckpt, tmp_path):
    folder = ckpt()
    tok = dllm.load_tokenizer(folder)
    m = dllm.load(folder)
    assert m.family == "llada2" and m.block_causal and m.block_size == 4          # generation_config block_length
    assert m.mask_id == tok.convert_tokens_to_ids("<|mask|>")
    assert m.stop_ids == (tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|role_end|>"))
    text = tok.apply_chat_template([{"role": "user", "content": "w1"}], add_generation_prompt=True, tokenize=False)
    assert text == "<role>HUMAN</role>w1<|role_end|><role>ASSISTANT</role>"
    assert dllm.load(ckpt(block_length=None)).block_size == 32                    # the reference default
    o = dllm.load(folder, mask_id=5, stop_ids=[7, 8], block_size=8)
    assert (o.mask_id, o.stop_ids, o.block_size) == (5, (7, 8), 8)
    # no <|mask|> in the tokenizer: the official id 156895, which this 64-token vocabulary cannot hold
    bare = shutil.copytree(folder, tmp_path / "bare")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    with pytest.raises(ValueError, match=r"mask_id \[156895\].*dllm.load\(\.\.\., mask_id=\.\.\.\)"):
        dllm.load(bare)
    assert dllm.load(bare, mask_id=63).mask_id == 63


@pytest.mark.parametrize("family", ["llada", "sdar"])
def test_overrides_for_the_other_families(ckpt_dir, family):
    folder = ckpt_dir(family)
    m = dllm.load(folder, mask_id=3, stop_ids=9)
    assert (m.mask_id, m.stop_ids) == (3, (9,))
    if family == "sdar":
        assert dllm.load(folder, block_size=2).block_size == 2
    else:
        with pytest.raises(ValueError, match="bidirectional"):
            dllm.load(folder, block_size=4)
    with pytest.raises(ValueError, match="stop_ids"):
        dllm.load(folder, stop_ids=[1000])
    with pytest.raises(ValueError, match="block_size must be"):
        dllm.load(ckpt_dir("sdar"), block_size=0)


def _edit_config(src, dst, **changes):
    folder = shutil.copytree(src, dst)
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("changes,match", [
    ({"num_experts": None}, "missing required keys.*num_experts"),
    ({"use_bias": None}, "use_bias"),
    ({"score_function": "softmax"}, "score_function"),
    ({"rotary_dim": 6}, "rotary_dim"),
    ({"n_group": 3}, "n_group"),
    ({"topk_group": 3}, "topk_group"),
    ({"num_experts_per_tok": 5}, "num_experts_per_tok"),
    ({"first_k_dense_replace": 4}, "first_k_dense_replace"),
    ({"moe_intermediate_size": 8}, "mlp.experts.0.gate_proj.weight has shape"),
])
def test_llada2_config_errors(ckpt, tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        dllm.load(_edit_config(ckpt(), tmp_path / "bad", **changes))


def test_llada2_missing_expert_weight(ckpt, tmp_path):
    folder = shutil.copytree(ckpt(), tmp_path / "bad")
    w = load_file(folder / "model.safetensors")
    del w["model.layers.2.mlp.experts.7.down_proj.weight"]
    save_file(w, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing \['model.layers.2.mlp.experts.7.down_proj.weight'\]"):
        dllm.load(folder)


def _write(folder, family):
    return write_tiny_llada2(folder) if family == "llada2" else write_tiny_checkpoint(folder, family)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_heads_must_divide_into_kv_heads_for_every_family(tmp_path, family):
    """n_heads=6, n_kv_heads=4 used to load and then fail inside SDPA: now a ValueError naming both keys."""
    keys = FAMILIES[family].dim_keys
    folder = _write(tmp_path / "ok", family)
    bad = _edit_config(folder, tmp_path / "bad", **{keys["n_heads"]: 6, keys["n_kv_heads"]: 4, keys["d_model"]: 48})
    with pytest.raises(ValueError, match=f"{keys['n_heads']}=6 is not a multiple of {keys['n_kv_heads']}=4"):
        dllm.load(bad)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_weights_must_match_config_dims_for_every_family(tmp_path, family):
    keys = FAMILIES[family].dim_keys
    folder = _write(tmp_path / "ok", family)
    cfg = json.loads((folder / "config.json").read_text())
    bad = _edit_config(folder, tmp_path / "bad", **{keys["d_ff"]: cfg[keys["d_ff"]] + 8})
    with pytest.raises(ValueError, match=f"has shape .* the config implies .*{keys['d_ff']}"):
        dllm.load(bad)


def test_mmada_text_model_loads_as_llada(ckpt_dir, tmp_path):
    folder = _edit_config(ckpt_dir("llada"), tmp_path / "mmada", model_type="mmada", architectures=["MMadaModelLM"])
    m = dllm.load(folder)
    ids = torch.randint(0, 50, (1, 6))
    assert m.family == "llada" and not m.block_causal
    torch.testing.assert_close(m(ids).logits, dllm.load(ckpt_dir("llada"))(ids).logits)


def test_bench_accepts_llada2_and_times_the_moe(monkeypatch):
    """dllm-bench on a random LLaDA2 (a tiny stand-in for llada2_mini_shape): Static without cache reproduces
    the naive loop, and the MoE micro-benchmark's grouped layer equals the per-token loop."""
    from omegaconf import OmegaConf

    from dllm.eval import bench
    monkeypatch.setitem(bench.SHAPES, "llada2_tiny_shape", dict(family="llada2", block_size=4))
    cfg = OmegaConf.load(__import__("dllm.configs", fromlist=["x"]).__path__[0] + "/bench.yaml")
    cfg.merge_with({"models": ["llada2_tiny_shape"], "samplers": ["static", "dynamic"], "batch_sizes": [2],
                    "gen_lengths": [8], "block_length": 4, "prompt_length": 8, "device": "cpu"})
    rows, _ = bench.run(cfg)
    assert {(r["sampler"], r["cache"]) for r in rows if r["sampler"] != "naive LLaDA loop"} == \
        {(s, c) for s in ("static", "dynamic") for c in ("none", "block", "block_fused")}
    assert next(r for r in rows if r["sampler"] == "static" and r["cache"] == "none")["matches_naive"] is True
    small = MoEConfig(n_experts=8, top_k=2, d_expert=8, n_shared=1, n_group=2, topk_group=1, scaling=2.5,
                      first_dense=0)
    (row,) = bench.moe_speed(torch.device("cpu"), torch.float32, [24], cfg=small, d_model=16, repeats=1)
    assert row["tokens"] == 24 and row["max_abs_diff"] < 1e-5 and row["grouped_ms"] > 0 and row["speedup"] > 0


def test_eval_and_lm_eval_adapter_accept_llada2(ckpt, tmp_path):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from dllm.eval.evaluate import evaluate
    from dllm.eval.lm_eval_adapter import DLLM
    from dllm.eval.tasks.synthetic import SyntheticSuite
    folder = ckpt()
    model, tok = dllm.load(folder), dllm.load_tokenizer(folder)
    m = evaluate(model, tok, SyntheticSuite(tasks=("copy",), n_per_task=3), DynamicThreshold(0.5, steps=4), tmp_path,
                 gen_length=8, block_length=4, batch_size=2, progress=False, chat_template=True)
    assert m["n"] == 3 and m["nfe_per_example"] > 0
    lm = DLLM(pretrained=str(folder), sampler="dynamic", threshold=0.5, steps=4, gen_length=8, block_length=4,
              device="cpu")
    (text,) = lm.generate_until([Instance("generate_until", doc={}, arguments=("w1 w2 w3", {"until": ["zzz"]}),
                                          idx=0)], disable_tqdm=True)
    ids = tok("w1 w2 w3").input_ids
    direct = dllm.generate(model, [ids], DynamicThreshold(0.5, steps=4), gen_length=8, block_length=4).sequences[0]
    assert text == tok.decode(direct, skip_special_tokens=True)


def test_distillation_on_llada2(ckpt, tmp_path):
    """dParallel trains through the grouped MoE and exports a student that loads with the teacher's block
    length; Learn2PD trains a filter on LLaDA2 trajectories."""
    from dllm.distill.dparallel import CertaintySettings, dparallel
    from dllm.distill.learn2pd import FilterSettings, learn2pd
    from dllm.distill.loop import LoopSettings
    from dllm.distill.pretrain import Decoding
    from dllm.eval.distributed import Dist
    from dllm.eval.tracking import Tracker
    from dllm.samplers import Learn2PD
    teacher = shutil.copytree(ckpt(), tmp_path / "teacher")
    dec, one, log = Decoding(gen_length=8, block_length=4), Dist(0, 1, None), Tracker("disabled", "dllm", ".", {})
    cf = CertaintySettings(lr=1e-3, weight_decay=0.01, mask_ratio=0.5, eps=1e-3, temperature=0.5, entropy_weight=2.0)
    out = dparallel(dllm.load(teacher), teacher, prompts(4), dec=dec, s=cf, loop=LoopSettings(2, 4, 2, 1.0),
                    lora=None, seed=0, dist=one, run_dir=tmp_path / "dp", export_dir=tmp_path / "dp" / "model",
                    resume=False, tracker=log, shard_size=8, collect_batch=4, eval_tasks=[], thresholds=[], info={})
    student, before = load_file(out / "model.safetensors"), load_file(teacher / "model.safetensors")
    assert any(not torch.equal(student[k], before[k]) for k in before if ".mlp.experts." in k)   # experts trained
    s = dllm.load(out)
    assert (s.family, s.block_size, s.mask_id) == ("llada2", 4, dllm.load(teacher).mask_id)
    f = FilterSettings(hidden=None, activation="relu", lr=3e-3, weight_decay=0.01, held_out=0.25, accept=0.9)
    path = learn2pd(s, prompts(4), dec=dec, f=f, loop=LoopSettings(2, 16, 2, None), seed=0, dist=one,
                    run_dir=tmp_path / "l2pd", filter_path=tmp_path / "l2pd" / "filter.safetensors", resume=False,
                    tracker=log, shard_size=4, collect_batch=4, eval_tasks=[], accepts=[], taus=[],
                    info={"model": "tiny-llada2"})
    gen = dllm.generate(s, prompts(2), Learn2PD(str(path), accept=0.5), gen_length=8, block_length=4)
    assert all(s.mask_id not in q for q in gen.sequences)


def test_above_or_top_k_on_constructed_scores():
    from dllm.samplers.common import above_or_top_k
    score = torch.tensor([[0.96, 0.97, 0.2, 0.1], [0.99, 0.3, 0.5, 0.95], [0.95, 0.1, 0.2, 0.3]], dtype=torch.float64)
    masked = torch.tensor([[True, True, True, True], [True, True, True, True], [True, False, True, True]])
    k = torch.tensor([2, 3, 1])
    got = above_or_top_k(score, masked, 0.95, k)
    assert got.tolist() == [[True, True, False, False],     # two strictly above 0.95: enough for k = 2
                            [True, False, True, True],      # two above but k = 3: the three best instead
                            [True, False, False, False]]    # 0.95 is not above 0.95: the top-1 masked slot
