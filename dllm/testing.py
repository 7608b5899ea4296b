"""Random tiny checkpoints in the exact on-disk format of the real ones, for tests and CPU experiments.

`write_tiny_checkpoint(folder, "llada" | "sdar", ...)` writes config.json (the real config keys),
safetensors weights under the real names (optionally sharded with an index), generation_config.json and
tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json; for SDAR also
added_tokens.json with its differently spelled mask string). Load the result with `dllm.load(folder)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .models import FAMILIES

LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>"]
SDAR_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
LLADA_TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
                  "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
                  "<|end_header_id|>\n\n{% endif %}")
SDAR_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _config(family: str, vocab: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int,
            tie: bool, block_size: int, ids: dict) -> dict:
    if family == "llada":   # every key of GSAI-ML/LLaDA-8B-Instruct's config.json, tiny values
        return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d_model,
                "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "mlp_hidden_size": d_ff,
                "mlp_ratio": 4, "vocab_size": vocab, "embedding_size": vocab, "max_sequence_length": 4096,
                "rope": True, "rope_theta": 500000.0, "rope_full_precision": True, "layer_norm_type": "rms",
                "rms_norm_eps": 1e-05, "layer_norm_with_affine": True, "bias_for_layer_norm": False,
                "activation_type": "silu", "block_type": "llama", "include_bias": False,
                "include_qkv_bias": False, "attention_layer_norm": False, "weight_tying": tie, "alibi": False,
                "block_group_size": 1, "mask_token_id": ids["<|mdm_mask|>"], "eos_token_id": ids["<|endoftext|>"],
                "pad_token_id": ids["<|endoftext|>"], "torch_dtype": "float32", "use_cache": False}
    return {"architectures": ["SDARForCausalLM"], "model_type": "sdar", "hidden_size": d_model,  # Qwen3-style keys
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads,
            "head_dim": d_model // n_heads, "intermediate_size": d_ff, "vocab_size": vocab,
            "rope_theta": 1000000, "rope_scaling": None, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06, "attention_bias": False, "tie_word_embeddings": tie, "hidden_act": "silu",
            "block_size": block_size, "mask_token_id": ids["<|MASK|>"], "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|endoftext|>"], "attn_implementation": "sdpa", "use_sliding_window": False,
            "torch_dtype": "float32"}


def _tokenizer(folder: Path, family: str, vocab: int) -> dict:
    """A word-level tokenizer: the family's special strings, then words w0, w1, ... up to `vocab` ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = LLADA_SPECIALS if family == "llada" else SDAR_SPECIALS
    words = [f"w{i}" for i in range(vocab - len(specials))]
    ids = {t: i for i, t in enumerate(words + specials)}
    tok = Tokenizer(models.WordLevel(ids, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   mask_token="<|mdm_mask|>" if family == "llada" else "<|MASK|>",
                                   additional_special_tokens=[s for s in specials if s not in ("<|endoftext|>",)])
    fast.chat_template = LLADA_TEMPLATE if family == "llada" else SDAR_TEMPLATE
    fast.save_pretrained(folder)
    if family == "sdar":   # the real SDAR files spell the mask "<MASK>" here and "<|MASK|>" in tokenizer_config
        (folder / "added_tokens.json").write_text(json.dumps({"<MASK>": ids["<|MASK|>"],
                                                              "<|im_end|>": ids["<|im_end|>"]}, indent=2))
    return ids


def write_tiny_checkpoint(folder: str | Path, family: str, *, vocab: int = 64, d_model: int = 32,
                          n_layers: int = 2, n_heads: int = 4, n_kv_heads: int | None = None, d_ff: int = 64,
                          tie: bool = False, block_size: int = 4, seed: int = 0, shards: int = 1,
                          logit_scale: float = 4.0) -> Path:
    """Write a random checkpoint; `logit_scale` spreads the output distribution so confidences differ."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(folder, family, vocab)
    cfg = _config(family, vocab, d_model, n_layers, n_heads, n_kv_heads or n_heads, d_ff, tie, block_size, ids)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    stops = [ids["<|endoftext|>"]] + ([ids["<|im_end|>"]] if family == "sdar" else [])
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": stops}, indent=2))
    fam = FAMILIES[family]
    arch = fam.arch(cfg)
    from .model import DiffusionLM
    g = torch.Generator().manual_seed(seed)
    model = DiffusionLM(arch, family, fam.special_ids(cfg, folder), fam.default_cache)
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight"):      # not all ones, so a swapped norm would show in the logits
            t = 1 + 0.2 * torch.randn(p.shape, generator=g)
        elif name == "embed.weight":
            t = torch.randn(p.shape, generator=g)
        else:
            t = torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5
            if name == "head.weight" or (name == "embed.weight" and tie):
                t = t * logit_scale
        state[fam.weight_names(arch)[name]] = t.contiguous()
    _save(folder, state, shards)
    return folder


def _save(folder: Path, state: dict, shards: int) -> None:
    if shards == 1:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        save_file(part, folder / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
