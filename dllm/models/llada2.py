"""LLaDA2.x (inclusionAI/LLaDA2.0-mini, -flash, LLaDA2.1-mini): block diffusion on the Ling 2.0 MoE.

Architecture (inclusionAI `modeling_llada2_moe.py`, `LLaDA2MoeAttention` / `LLaDA2MoeSparseMoeBlock`): a fused
`query_key_value` projection split contiguously `[H | KV | KV]`, per-head q/k RMSNorm *before* partial RoPE
(`partial_rotary_factor` of each head, rotate_half), `dense` output projection, a dense SwiGLU in the first
`first_k_dense_replace` layers and routed experts after (`moe.py`). No logit shift: logits[i] predicts token i.
Attention is block-causal with blocks aligned to position 0 (the reference `generate()` builds
`tril(ones(nb, nb)).repeat_interleave(block_length)`); the prompt tail shares its block with the first masks.

The block length (32), mask id (156895) and EOS id (156892) are `generate()` arguments in the reference, not
config keys: they are read from generation_config.json and the tokenizer files when present, else these defaults;
`dllm.load(path, block_size=..., mask_id=..., stop_ids=...)` overrides them.
"""
from __future__ import annotations

from pathlib import Path

from .family import (HF_DIM_KEYS, Family, SpecialIds, generation_config, id_list, reject, require, token_id,
                     tokenizer_config)
from .moe import MoEConfig
from .transformer import ArchConfig

BLOCK_LENGTH, MASK_ID, EOS_ID = 32, 156895, 156892   # defaults of the reference `LLaDA2MoeModelLM.generate`
MASK_TOKEN, TURN_END = "<|mask|>", "<|role_end|>"
REQUIRED = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
            "intermediate_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size"]
UNSUPPORTED = {   # the reference defaults of use_bias (True) and use_qk_norm (True) apply when a key is absent
    "use_qkv_bias": lambda v: not v,
    "norm_head": lambda v: not v,
    "hidden_act": lambda v: v == "silu",
    "rope_scaling": lambda v: v is None,
    "use_sliding_window": lambda v: not v,
    "score_function": lambda v: v == "sigmoid",
    "router_dtype": lambda v: v in ("fp32", "float32"),
    "tie_word_embeddings": lambda v: not v,
}


def arch(cfg: dict) -> ArchConfig:
    require(cfg, REQUIRED, "llada2")
    reject(cfg, UNSUPPORTED, "llada2")
    if cfg.get("use_bias", True):
        raise ValueError("llada2 config option use_bias (default True) must be false: biased projections are not "
                         "supported by dllm")
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or (hidden // heads if heads else 0)
    factor = float(cfg.get("partial_rotary_factor", 0.5))
    rotary = int(head_dim * factor)
    if "rotary_dim" in cfg and cfg["rotary_dim"] != rotary:
        raise ValueError(f"llada2 config: rotary_dim={cfg['rotary_dim']} disagrees with head_dim * "
                         f"partial_rotary_factor = {rotary} (the reference uses partial_rotary_factor)")
    moe = MoEConfig(n_experts=int(cfg["num_experts"]), top_k=int(cfg["num_experts_per_tok"]),
                    d_expert=int(cfg["moe_intermediate_size"]), n_shared=int(cfg.get("num_shared_experts") or 0),
                    n_group=int(cfg.get("n_group", 8)), topk_group=int(cfg.get("topk_group", 4)),
                    scaling=float(cfg.get("routed_scaling_factor", 2.5)),
                    first_dense=int(cfg.get("first_k_dense_replace", 0)))
    return ArchConfig(
        vocab_size=cfg["vocab_size"], d_model=hidden, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg["num_key_value_heads"] or heads, head_dim=head_dim, d_ff=cfg["intermediate_size"],
        rope_theta=float(cfg.get("rope_theta", 10000.0)), norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        qk_norm=bool(cfg.get("use_qk_norm", True)), tie_embeddings=False, block_size=BLOCK_LENGTH,
        rotary_dim=rotary, fused_qkv=True, moe=moe)


def weight_names(a: ArchConfig) -> dict[str, str]:
    names = {"embed.weight": "model.word_embeddings.weight", "norm.weight": "model.norm.weight",
             "head.weight": "lm_head.weight"}
    attn = {"attn_norm.weight": "input_layernorm.weight", "attn.qkv.weight": "attention.query_key_value.weight",
            "attn.o.weight": "attention.dense.weight", "mlp_norm.weight": "post_attention_layernorm.weight"}
    if a.qk_norm:
        attn |= {"attn.q_norm.weight": "attention.query_layernorm.weight",
                 "attn.k_norm.weight": "attention.key_layernorm.weight"}
    swiglu = {"gate.weight": "gate_proj.weight", "up.weight": "up_proj.weight", "down.weight": "down_proj.weight"}
    for i in range(a.n_layers):
        layer = dict(attn)
        if i < a.moe.first_dense:
            layer |= {f"mlp.{m}": f"mlp.{t}" for m, t in swiglu.items()}
        else:
            layer |= {"mlp.router.weight": "mlp.gate.weight", "mlp.router.expert_bias": "mlp.gate.expert_bias"}
            for e in range(a.moe.n_experts):
                layer |= {f"mlp.experts.{e}.{m}": f"mlp.experts.{e}.{t}" for m, t in swiglu.items()}
            if a.moe.n_shared:
                layer |= {f"mlp.shared.{m}": f"mlp.shared_experts.{t}" for m, t in swiglu.items()}
        names |= {f"layers.{i}.{m}": f"model.layers.{i}.{t}" for m, t in layer.items()}
    return names


def block_size(cfg: dict, folder: Path) -> int:
    """generation_config.json `block_length` (or `block_size`) when a checkpoint ships one, else 32."""
    gen = generation_config(folder)
    return int(gen.get("block_length") or gen.get("block_size") or BLOCK_LENGTH)


def special_ids(cfg: dict, folder: Path) -> SpecialIds:
    gen, tok = generation_config(folder), tokenizer_config(folder)
    mask = cfg.get("mask_token_id", gen.get("mask_token_id"))
    if mask is None:
        text = tok.get("mask_token") if isinstance(tok.get("mask_token"), str) else MASK_TOKEN
        mask = token_id(folder, text)
    eos = id_list(cfg.get("eos_token_id")) + id_list(gen.get("eos_token_id"))
    if not eos and isinstance(tok.get("eos_token"), str):
        eos = id_list(token_id(folder, tok["eos_token"]))
    stops = eos or [EOS_ID]
    turn_end = token_id(folder, TURN_END)   # end of an assistant turn in the Ling chat template
    if turn_end is not None:
        stops.append(turn_end)
    pad = cfg.get("pad_token_id")
    return SpecialIds(mask_id=int(MASK_ID if mask is None else mask), pad_id=int(stops[0] if pad is None else pad),
                      stop_ids=tuple(dict.fromkeys(stops)))


FAMILY = Family("llada2", arch, weight_names, special_ids, default_cache="block_fused", block_size=block_size,
                dim_keys=HF_DIM_KEYS)
