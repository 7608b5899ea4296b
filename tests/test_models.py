"""Each family's logits equal a plain-torch forward written independently here from the checkpoint's own
weight names (GQA, tied and untied heads), and padding/positions make a padded row equal the row alone."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import dllm
from dllm.samplers import Threshold

from conftest import prompts


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, theta):                       # x [B, H, L, hd], positions 0..L-1, non-interleaved halves
    L, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(L).float(), inv)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    half = hd // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def attention(q, k, v, allowed):          # q [B,H,L,hd], k/v [B,Hkv,L,hd], allowed [L,L]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return s.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def reference_llada(folder, ids):
    cfg = json.loads((folder / "config.json").read_text())
    w = load_file(folder / "model.safetensors")
    t = "model.transformer"
    H, Hkv, eps = cfg["n_heads"], cfg["n_kv_heads"], cfg["rms_norm_eps"]
    hd = cfg["d_model"] // H
    x = w[f"{t}.wte.weight"][ids]
    B, L, _ = x.shape
    for i in range(cfg["n_layers"]):
        p = f"{t}.blocks.{i}."
        h = rms(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "q_proj.weight"].T).view(B, L, H, hd).transpose(1, 2)
        k = (h @ w[p + "k_proj.weight"].T).view(B, L, Hkv, hd).transpose(1, 2)
        v = (h @ w[p + "v_proj.weight"].T).view(B, L, Hkv, hd).transpose(1, 2)
        q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
        o = attention(q, k, v, torch.ones(L, L, dtype=torch.bool)).transpose(1, 2).reshape(B, L, -1)
        x = x + o @ w[p + "attn_out.weight"].T
        h = rms(x, w[p + "ff_norm.weight"], eps)
        x = x + (torch.nn.functional.silu(h @ w[p + "ff_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)) \
            @ w[p + "ff_out.weight"].T
    x = rms(x, w[f"{t}.ln_f.weight"], eps)
    head = w[f"{t}.wte.weight"] if cfg["weight_tying"] else w[f"{t}.ff_out.weight"]
    return x @ head.T


def reference_sdar(folder, ids):
    cfg = json.loads((folder / "config.json").read_text())
    w = {}
    for f in sorted(folder.glob("*.safetensors")):
        w.update(load_file(f))
    H, Hkv, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    bs = cfg["block_size"]
    x = w["model.embed_tokens.weight"][ids]
    B, L, _ = x.shape
    blk = torch.arange(L) // bs
    allowed = blk[None, :] <= blk[:, None]            # block-causal, blocks aligned to position 0
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, L, H, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, L, Hkv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, L, Hkv, hd).transpose(1, 2)
        q, k = rms(q, w[p + "self_attn.q_norm.weight"], eps), rms(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
        o = attention(q, k, v, allowed).transpose(1, 2).reshape(B, L, -1)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


@pytest.mark.parametrize("family,kw", [
    ("llada", {"n_kv_heads": 4}), ("llada", {"n_kv_heads": 2}), ("llada", {"tie": True}),
    ("sdar", {"n_kv_heads": 2}), ("sdar", {"n_kv_heads": 1, "tie": True}), ("sdar", {"block_size": 3, "shards": 3}),
])
def test_logits_match_plain_torch_reference(ckpt_dir, family, kw):
    folder = ckpt_dir(family, **kw)
    model = dllm.load(folder)
    ids = torch.randint(0, 60, (2, 13), generator=torch.Generator().manual_seed(1))
    ref = (reference_llada if family == "llada" else reference_sdar)(folder, ids)
    got = model(ids).logits
    assert got.shape == (2, 13, json.loads((folder / "config.json").read_text())["vocab_size"])
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=2e-5)


def test_sdar_is_block_causal_and_llada_bidirectional(llada, sdar):
    ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 9] = (changed[0, 9] + 1) % 50                    # a token in SDAR block [8, 12)
    a, b = sdar(ids).logits, sdar(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=0, rtol=0)   # earlier blocks cannot see it
    assert not torch.allclose(a[:, 8:], b[:, 8:])                     # its own block can (bidirectional inside)
    assert not torch.allclose(llada(ids).logits[:, :8], llada(changed).logits[:, :8])


def test_left_padding_with_positions_equals_row_alone(model):
    ids = torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(3))
    pad = 4 if model.block_causal else 3
    padded = torch.cat([torch.full((1, pad), model.pad_id), ids], 1)
    pos = (torch.arange(padded.shape[1]) - pad).clamp(min=0)[None]
    valid = torch.arange(padded.shape[1])[None] >= pad
    out = model(padded, pos, pad_mask=valid).logits[:, pad:]
    torch.testing.assert_close(out, model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lo,hi", [(0, 12), (4, 8), (9, 12), (5, 5)])
def test_logits_range_equals_slice_of_full_forward(model, lo, hi):
    """The last layer computes queries, attention output and MLP only for [lo, hi): same logits as slicing."""
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(4))
    pos = torch.arange(12).repeat(2, 1)
    full = model(ids, pos).logits
    part = model(ids, pos, logits_range=(lo, hi)).logits
    assert part.shape == (2, hi - lo, full.shape[-1])
    torch.testing.assert_close(part, full[:, lo:hi], atol=1e-5, rtol=1e-5)


def test_attention_choice_is_validated(ckpt_dir):
    assert dllm.load(ckpt_dir("sdar"), attention="flex").attention == "flex"
    with pytest.raises(ValueError, match="attention must be one of"):
        dllm.load(ckpt_dir("sdar"), attention="flash")


@pytest.mark.skipif(dllm.attention.flex_attention is None, reason="this torch has no flex-attention")
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_equals_sdpa(model):
    """attention='flex' turns the same dense mask into a BlockMask: same logits under padding and the family's
    pattern, and the same tokens through a cached decode (eager flex on CPU; compiled on CUDA)."""
    flex = copy.deepcopy(model)
    flex.attention = "flex"
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(6))
    pos = torch.tensor([[0] * 3 + list(range(9)), list(range(12))])
    valid = torch.tensor([[False] * 3 + [True] * 9, [True] * 12])
    with torch.no_grad():
        for kw in ({}, {"logits_range": (5, 9)}):
            torch.testing.assert_close(flex(ids, pos, pad_mask=valid, **kw).logits,
                                       model(ids, pos, pad_mask=valid, **kw).logits, atol=1e-5, rtol=1e-5)
    ps = prompts(3)
    for cache in ("none", model.default_cache):
        a = dllm.generate(model, ps, Threshold(0.5), gen_length=16, block_length=4, cache=cache)
        b = dllm.generate(flex, ps, Threshold(0.5), gen_length=16, block_length=4, cache=cache)
        assert a.sequences == b.sequences
