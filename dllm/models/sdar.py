"""SDAR (JetLM/SDAR-*-Chat): block-causal block-diffusion model in Qwen3 naming (GQA, per-head q/k RMSNorm).

Attention is block-causal with blocks of `block_size` aligned to position 0 (JetAstra/SDAR `generate.py`);
no logit shift. The mask id comes from config.json (`mask_token_id` 151669): `tokenizer_config.json` spells it
`<|MASK|>` while `added_tokens.json` spells `<MASK>`, so strings are only a fallback.
"""
from __future__ import annotations

from pathlib import Path

from .family import (Family, SpecialIds, generation_config, id_list, reject, require, token_id,
                     tokenizer_config)
from .transformer import ArchConfig

REQUIRED = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
            "block_size"]
UNSUPPORTED = {
    "attention_bias": lambda v: not v,
    "rope_scaling": lambda v: v is None,
    "use_sliding_window": lambda v: not v,
    "hidden_act": lambda v: v == "silu",
}


def arch(cfg: dict) -> ArchConfig:
    require(cfg, REQUIRED, "sdar")
    reject(cfg, UNSUPPORTED, "sdar")
    heads = cfg["num_attention_heads"]
    if not cfg.get("head_dim") and (heads < 1 or cfg["hidden_size"] % heads):
        raise ValueError(f"sdar config: without head_dim, hidden_size={cfg['hidden_size']} must be a positive "
                         f"multiple of num_attention_heads={heads}")
    if int(cfg["block_size"]) < 1:
        raise ValueError(f"sdar block_size must be >= 1, got {cfg['block_size']}")
    return ArchConfig(
        vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"],
        n_heads=heads, n_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, d_ff=cfg["intermediate_size"],
        rope_theta=float(cfg.get("rope_theta", 1e6)), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        qk_norm=True, tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        block_size=int(cfg["block_size"]))


def weight_names(a: ArchConfig) -> dict[str, str]:
    names = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not a.tie_embeddings:
        names["head.weight"] = "lm_head.weight"
    ours = {"attn_norm.weight": "input_layernorm", "attn.q.weight": "self_attn.q_proj",
            "attn.k.weight": "self_attn.k_proj", "attn.v.weight": "self_attn.v_proj",
            "attn.o.weight": "self_attn.o_proj", "attn.q_norm.weight": "self_attn.q_norm",
            "attn.k_norm.weight": "self_attn.k_norm", "mlp_norm.weight": "post_attention_layernorm",
            "mlp.gate.weight": "mlp.gate_proj", "mlp.up.weight": "mlp.up_proj", "mlp.down.weight": "mlp.down_proj"}
    for i in range(a.n_layers):
        for mine, theirs in ours.items():
            names[f"layers.{i}.{mine}"] = f"model.layers.{i}.{theirs}.weight"
    return names


def special_ids(cfg: dict, folder: Path) -> SpecialIds:
    mask = cfg.get("mask_token_id")
    if mask is None:
        text = tokenizer_config(folder).get("mask_token")
        mask = token_id(folder, text) if isinstance(text, str) else None
    if mask is None:
        raise ValueError("sdar checkpoint has no mask_token_id in config.json and no resolvable mask_token")
    eos = id_list(cfg.get("eos_token_id"))
    stops = eos + id_list(generation_config(folder).get("eos_token_id"))  # adds <|im_end|> 151645 on SDAR-Chat
    if not stops:
        raise ValueError("sdar checkpoint declares no eos_token_id (config.json or generation_config.json)")
    pad = cfg.get("pad_token_id")
    return SpecialIds(mask_id=int(mask), pad_id=int(pad if pad is not None else stops[0]),
                      stop_ids=tuple(dict.fromkeys(stops)))


FAMILY = Family("sdar", arch, weight_names, special_ids, default_cache="block_fused")
