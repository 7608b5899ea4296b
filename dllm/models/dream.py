"""Dream (Dream-org/Dream-v0-Instruct-7B, -Base-7B, Dream-Coder-v0-Instruct-7B): a bidirectional masked-diffusion
model adapted from Qwen2.5, in Qwen2 naming (`model_type: Dream`, `DreamModel`).

Differences from Qwen2 (the hub's `modeling_dream.py`): attention is never causal; q/k/v projections carry biases,
o_proj does not; RoPE base from config. Dream predicts token i from the hidden state at i - 1 (its generation
code shifts the logits by one, DreamLM/Dream issue #31); here that shift is the family's `logit_shift`, applied
inside the forward, so `model(ids).logits[:, i]` still predicts token i.

Special ids come from config.json (`mask_token_id` 151666, `eos_token_id` = `pad_token_id` 151643) and
`generation_config.json` when present; `<|im_end|>` (151645), the end of a chat turn, is also a stop id.
"""
from __future__ import annotations

from pathlib import Path

from .family import Family, SpecialIds, generation_config, id_list, reject, require, token_id, tokenizer_config
from .transformer import ArchConfig

REQUIRED = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
            "rope_theta", "rms_norm_eps"]
UNSUPPORTED = {
    "rope_scaling": lambda v: v is None,
    "use_sliding_window": lambda v: not v,
    "use_mrope": lambda v: not v,
    "hidden_act": lambda v: v == "silu",
}


def arch(cfg: dict) -> ArchConfig:
    require(cfg, REQUIRED, "dream")
    reject(cfg, UNSUPPORTED, "dream")
    d, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    return ArchConfig(
        vocab_size=cfg["vocab_size"], d_model=d, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=d // heads, d_ff=cfg["intermediate_size"],
        rope_theta=float(cfg["rope_theta"]), norm_eps=float(cfg["rms_norm_eps"]), qk_norm=False,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), block_size=None, qkv_bias=True,
        logit_shift=True)


def weight_names(a: ArchConfig) -> dict[str, str]:
    names = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not a.tie_embeddings:
        names["head.weight"] = "lm_head.weight"
    ours = {"attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
            "attn.o.weight": "self_attn.o_proj.weight", "mlp.gate.weight": "mlp.gate_proj.weight",
            "mlp.up.weight": "mlp.up_proj.weight", "mlp.down.weight": "mlp.down_proj.weight"}
    for p in ("q", "k", "v"):
        for kind in ("weight", "bias"):
            ours[f"attn.{p}.{kind}"] = f"self_attn.{p}_proj.{kind}"
    for i in range(a.n_layers):
        for mine, theirs in ours.items():
            names[f"layers.{i}.{mine}"] = f"model.layers.{i}.{theirs}"
    return names


def special_ids(cfg: dict, folder: Path) -> SpecialIds:
    gen = generation_config(folder)
    mask = cfg.get("mask_token_id")
    if mask is None:   # generation_config.json writes null here; the tokenizer names the token
        text = tokenizer_config(folder).get("mask_token")
        mask = token_id(folder, text) if isinstance(text, str) else None
    if mask is None:
        raise ValueError("dream checkpoint has no mask_token_id in config.json and no resolvable mask_token")
    stops = id_list(cfg.get("eos_token_id")) + id_list(gen.get("eos_token_id"))
    if not stops:
        raise ValueError("dream checkpoint declares no eos_token_id (config.json or generation_config.json)")
    turn_end = token_id(folder, "<|im_end|>")   # the chat template ends every turn with it
    if turn_end is not None:
        stops.append(turn_end)
    pad = cfg.get("pad_token_id", gen.get("pad_token_id"))
    return SpecialIds(mask_id=int(mask), pad_id=int(pad if pad is not None else stops[0]),
                      stop_ids=tuple(dict.fromkeys(stops)))


FAMILY = Family("dream", arch, weight_names, special_ids, default_cache="prefix")
