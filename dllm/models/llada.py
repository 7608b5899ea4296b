"""LLaDA (GSAI-ML/LLaDA-8B-Instruct): bidirectional masked-diffusion transformer in OLMo-style naming.

Config keys and weight names follow the hub checkpoint (module tree `model.transformer.{wte, blocks, ln_f,
ff_out}` in NVlabs/Fast-dLLM `llada/model/modeling_llada.py`); MLP = ff_out(silu(ff_proj(x)) * up_proj(x)).
Special tokens: `<|mdm_mask|>` 126336, `<|endoftext|>` 126081 (EOS and pad), `<|eot_id|>` 126348.

`qk_norm: true` (a dllm key, absent from GSAI-ML checkpoints) adds Qwen3's per-head q/k RMSNorm as
`blocks.{i}.{q,k}_norm.weight` [head_dim], so a model converted from a Qwen3-layout AR base keeps every weight
(`dllm.distill.convert`). OLMo's `attention_layer_norm` is a different norm (over the full width) and stays refused.

`logit_shift: true` (a dllm key as well) predicts token i from the hidden state at i - 1, Dream's convention
(`dllm.models.dream`): what a masked-diffusion model converted from an autoregressive base keeps when it keeps
the base's next-token alignment (`dllm.distill.convert`). GSAI-ML's LLaDA, trained from scratch, has no shift.
"""
from __future__ import annotations

from pathlib import Path

from .family import Family, SpecialIds, generation_config, id_list, reject, require, token_id
from .transformer import ArchConfig

REQUIRED = ["d_model", "n_layers", "n_heads", "vocab_size", "rope_theta", "rms_norm_eps", "mask_token_id",
            "eos_token_id"]
UNSUPPORTED = {
    "alibi": lambda v: not v,
    "rope": lambda v: bool(v),
    "include_bias": lambda v: not v,
    "include_qkv_bias": lambda v: not v,
    "attention_layer_norm": lambda v: not v,
    "block_type": lambda v: v == "llama",
    "layer_norm_type": lambda v: v == "rms",
    "activation_type": lambda v: v in ("silu", "swiglu"),
    "block_group_size": lambda v: v == 1,
}


def arch(cfg: dict) -> ArchConfig:
    require(cfg, REQUIRED, "llada")
    reject(cfg, UNSUPPORTED, "llada")
    d, heads = cfg["d_model"], cfg["n_heads"]
    if heads < 1 or d % heads:
        raise ValueError(f"llada config: d_model={d} must be a positive multiple of n_heads={heads} "
                         "(head_dim = d_model / n_heads)")
    d_ff = cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * d
    return ArchConfig(
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"], d_model=d, n_layers=cfg["n_layers"],
        n_heads=heads, n_kv_heads=cfg.get("n_kv_heads") or heads, head_dim=d // heads, d_ff=d_ff,
        rope_theta=float(cfg["rope_theta"]), norm_eps=float(cfg["rms_norm_eps"]),
        qk_norm=bool(cfg.get("qk_norm", False)),
        tie_embeddings=bool(cfg.get("weight_tying", False)), block_size=None,
        logit_shift=bool(cfg.get("logit_shift", False)))


def weight_names(a: ArchConfig) -> dict[str, str]:
    t = "model.transformer"
    names = {"embed.weight": f"{t}.wte.weight", "norm.weight": f"{t}.ln_f.weight"}
    if not a.tie_embeddings:
        names["head.weight"] = f"{t}.ff_out.weight"
    ours = {"attn_norm.weight": "attn_norm", "attn.q.weight": "q_proj", "attn.k.weight": "k_proj",
            "attn.v.weight": "v_proj", "attn.o.weight": "attn_out", "mlp_norm.weight": "ff_norm",
            "mlp.gate.weight": "ff_proj", "mlp.up.weight": "up_proj", "mlp.down.weight": "ff_out"}
    if a.qk_norm:
        ours |= {"attn.q_norm.weight": "q_norm", "attn.k_norm.weight": "k_norm"}
    for i in range(a.n_layers):
        for mine, theirs in ours.items():
            names[f"layers.{i}.{mine}"] = f"{t}.blocks.{i}.{theirs}.weight"
    return names


def special_ids(cfg: dict, folder: Path) -> SpecialIds:
    eos = int(cfg["eos_token_id"])
    stops = [eos, *id_list(generation_config(folder).get("eos_token_id"))]
    eot = token_id(folder, "<|eot_id|>")        # end of an assistant turn in the chat template
    if eot is not None:
        stops.append(eot)
    pad = int(cfg.get("pad_token_id", eos))
    return SpecialIds(mask_id=int(cfg["mask_token_id"]), pad_id=pad, stop_ids=tuple(dict.fromkeys(stops)))


DIM_KEYS = {"n_heads": "n_heads", "n_kv_heads": "n_kv_heads", "d_model": "d_model", "head_dim": "d_model / n_heads",
            "n_layers": "n_layers", "vocab_size": "embedding_size / vocab_size", "d_ff": "mlp_hidden_size",
            "rotary_dim": "d_model / n_heads"}
FAMILY = Family("llada", arch, weight_names, special_ids, default_cache="prefix", dim_keys=DIM_KEYS)
