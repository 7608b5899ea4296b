"""What a model family declares: how to read its config and weight names, and its special tokens."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .transformer import ArchConfig


@dataclass(frozen=True)
class SpecialIds:
    mask_id: int
    pad_id: int
    stop_ids: tuple[int, ...]      # generation of a row ends at the first of these


@dataclass(frozen=True)
class Family:
    name: str
    arch: Callable[[dict], ArchConfig]                  # config.json -> ArchConfig (ValueError on unsupported keys)
    weight_names: Callable[[ArchConfig], dict[str, str]]  # our parameter name -> checkpoint weight name
    special_ids: Callable[[dict, Path], SpecialIds]
    default_cache: str                                  # what cache="auto" means for this family
    # block-causal families whose block length is not a config key (LLaDA2: a `generate()` argument) resolve it
    # from the checkpoint folder; None: ArchConfig.block_size as `arch` set it
    block_size: Callable[[dict, Path], int] | None = None
    # the config.json key behind each ArchConfig dimension, named by the shape checks of `check_dims`
    dim_keys: dict[str, str] = field(default_factory=lambda: dict(HF_DIM_KEYS), compare=False)


HF_DIM_KEYS = {"n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "d_model": "hidden_size",
               "head_dim": "head_dim", "n_layers": "num_hidden_layers", "vocab_size": "vocab_size",
               "d_ff": "intermediate_size", "rotary_dim": "partial_rotary_factor"}


def check_dims(arch: ArchConfig, family: Family) -> None:
    """Shape rules the forward relies on, checked before any weight is read or any forward runs: a ValueError
    names the config key (SDPA would otherwise fail deep inside, or GQA silently mis-share heads)."""
    key = family.dim_keys
    for dim in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "d_ff"):
        if getattr(arch, dim) < 1:
            raise ValueError(f"{family.name} config: {key[dim]} must be >= 1, got {getattr(arch, dim)}")
    if arch.n_heads % arch.n_kv_heads:
        raise ValueError(f"{family.name} config: {key['n_heads']}={arch.n_heads} is not a multiple of "
                         f"{key['n_kv_heads']}={arch.n_kv_heads} (each key/value head serves a whole group of "
                         "query heads)")
    rd = arch.rotary_dim or arch.head_dim
    if rd % 2 or not 0 < rd <= arch.head_dim:
        source = key["head_dim"] if arch.rotary_dim is None else f"{key['rotary_dim']} x {key['head_dim']}"
        raise ValueError(f"{family.name} config: the rotary dimension {rd} (from {source}) must be even and within "
                         f"head_dim={arch.head_dim} (RoPE rotates pairs of dimensions)")
    moe = arch.moe
    if moe is not None:
        group = moe.n_experts // max(moe.n_group, 1)
        rules = [(moe.n_experts >= 1 and moe.n_group >= 1 and moe.n_experts % moe.n_group == 0, "n_group",
                  f"num_experts={moe.n_experts} must split into n_group={moe.n_group} equal groups"),
                 (group >= 2, "n_group", f"each of the n_group={moe.n_group} groups needs >= 2 experts "
                                         "(a group scores the sum of its two best)"),
                 (1 <= moe.topk_group <= moe.n_group, "topk_group",
                  f"topk_group={moe.topk_group} must be in [1, n_group={moe.n_group}]"),
                 (1 <= moe.top_k <= moe.topk_group * group, "num_experts_per_tok",
                  f"num_experts_per_tok={moe.top_k} must be in [1, topk_group * experts per group = "
                  f"{moe.topk_group * group}]"),
                 (moe.d_expert >= 1 and moe.n_shared >= 0, "moe_intermediate_size",
                  f"moe_intermediate_size={moe.d_expert} must be >= 1 and num_shared_experts={moe.n_shared} >= 0"),
                 (0 <= moe.first_dense <= arch.n_layers, "first_k_dense_replace",
                  f"first_k_dense_replace={moe.first_dense} must be in [0, num_hidden_layers={arch.n_layers}]")]
        for ok, name, why in rules:
            if not ok:
                raise ValueError(f"{family.name} config key {name}: {why}")


def check_ids(ids: SpecialIds, vocab_size: int, family: str) -> None:
    """Special ids must be rows of the embedding (a mask id past the vocabulary fails at the first embedding)."""
    for name, values in (("mask_id", [ids.mask_id]), ("pad_id", [ids.pad_id]), ("stop_ids", list(ids.stop_ids))):
        bad = [v for v in values if not 0 <= v < vocab_size]
        if bad:
            raise ValueError(f"{family}: {name} {bad} lies outside the vocabulary [0, {vocab_size}) (config.json "
                             "mask_token_id / pad_token_id / eos_token_id, or the tokenizer's special tokens); "
                             f"pass dllm.load(..., {name}=...) or fix the checkpoint's config")
    if ids.mask_id in ids.stop_ids:
        raise ValueError(f"{family}: the mask id {ids.mask_id} is also a stop id; pass stop_ids=... to dllm.load")


def require(cfg: dict, keys: list[str], family: str) -> None:
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ValueError(f"{family} config.json is missing required keys: {missing}")


def reject(cfg: dict, unsupported: dict, family: str) -> None:
    """Fail loudly on config options the native implementation does not implement."""
    for key, ok in unsupported.items():
        if key in cfg and not ok(cfg[key]):
            raise ValueError(f"{family} config option {key}={cfg[key]!r} is not supported by dllm")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def token_id(folder: Path, text: str) -> int | None:
    """Id of a special token string from tokenizer.json / added_tokens.json, without building a tokenizer."""
    for entry in _json(folder / "tokenizer.json").get("added_tokens", []):
        if entry.get("content") == text:
            return int(entry["id"])
    found = _json(folder / "added_tokens.json").get(text)
    return None if found is None else int(found)


def id_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def generation_config(folder: Path) -> dict:
    return _json(folder / "generation_config.json")


def tokenizer_config(folder: Path) -> dict:
    return _json(folder / "tokenizer_config.json")
