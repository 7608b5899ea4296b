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

from .model import DiffusionLM
from .models import FAMILIES
from .saving import family_config, new_model, save

LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>"]
SDAR_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
LLADA_TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
                  "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
                  "<|end_header_id|>\n\n{% endif %}")
SDAR_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


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


def random_model(family: str, *, vocab: int = 64, d_model: int = 32, n_layers: int = 2, n_heads: int = 4,
                 n_kv_heads: int | None = None, d_ff: int = 64, tie: bool = False, block_size: int = 4,
                 seed: int = 0, logit_scale: float = 4.0, mask_id: int | None = None, eos_id: int | None = None,
                 folder: Path | None = None) -> tuple[DiffusionLM, dict]:
    """An in-memory model with random weights and its config.json dict (the last ids are the specials unless
    given); `logit_scale` spreads the output distribution so confidences differ."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    mask_id = vocab - 1 if mask_id is None else mask_id
    eos_id = vocab - 2 if eos_id is None else eos_id
    cfg = family_config(family, vocab=vocab, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                        n_kv_heads=n_kv_heads or n_heads, d_ff=d_ff, tie=tie,
                        block_size=block_size if family == "sdar" else None,
                        mask_id=mask_id, eos_id=eos_id, pad_id=eos_id)
    model = new_model(cfg, folder)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):      # not all ones, so a swapped norm would show in the logits
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name == "embed.weight":
                p.copy_(torch.randn(p.shape, generator=g) * (logit_scale / d_model ** 0.5 if tie else 1.0))
            else:
                scale = logit_scale if name == "head.weight" else 1.0
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5 * scale)
    return model, cfg


def write_tiny_checkpoint(folder: str | Path, family: str, *, vocab: int = 64, shards: int = 1, **dims) -> Path:
    """Write a random checkpoint with tokenizer files; `dims` as in `random_model`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(folder, family, vocab)
    if family == "sdar":   # SDAR-Chat's generation_config adds <|im_end|> as a stop id
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}))
    model, cfg = random_model(family, vocab=vocab, mask_id=ids["<|mdm_mask|>" if family == "llada" else "<|MASK|>"],
                              eos_id=ids["<|endoftext|>"], folder=folder, **dims)
    return save(model, folder, cfg, shards)
