"""Random tiny checkpoints in the exact on-disk format of the real ones, for tests and CPU experiments.

`write_tiny_checkpoint(folder, "llada" | "sdar" | "dream", ...)` writes config.json (the real config keys),
safetensors weights under the real names (optionally sharded with an index), generation_config.json and
tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json; for SDAR also
added_tokens.json with its differently spelled mask string; for Dream the slow-tokenizer layout of the hub repo:
vocab.json + merges.txt of a byte-level BPE, added_tokens.json, no tokenizer.json). Load the result with
`dllm.load(folder)`.
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


DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]  # in hub id order
DREAM_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
QWEN_TEMPLATE = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_chars() -> list[str]:
    """GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest map to code points 256 + n."""
    printable = set(range(33, 127)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, n = [], 0
    for b in range(256):
        out.append(chr(b) if b in printable else chr(256 + n))
        n += b not in printable
    return out


def _dream_tokenizer(folder: Path) -> dict:
    """Dream's tokenizer files (Qwen2 byte-level BPE as vocab.json + merges.txt, specials after the BPE vocabulary,
    `tokenizer_class: DreamTokenizer` with its auto_map), with 256 byte tokens and a few merges."""
    vocab = {c: i for i, c in enumerate(_byte_chars())}
    for a, b in DREAM_MERGES:
        vocab[a + b] = len(vocab)
    ids = {t: len(vocab) + i for i, t in enumerate(DREAM_SPECIALS)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in DREAM_MERGES))
    (folder / "added_tokens.json").write_text(json.dumps(ids, indent=2))
    special = {k: {"content": v, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
               for k, v in (("bos_token", "<|beginoftext|>"), ("eos_token", "<|endoftext|>"),
                            ("mask_token", "<|mask|>"), ("pad_token", "<|endoftext|>"))}
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"additional_special_tokens": ["<|beginoftext|>", "<|mask|>"], **special}, indent=2))
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for t, i in ids.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|beginoftext|>", "<|mask|>"],
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "chat_template": QWEN_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "mask_token": "<|mask|>", "model_max_length": 131072,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "DreamTokenizer",
        "unk_token": None}, indent=2))
    return ids


def dream_generation_config(ids: dict) -> dict:
    """Dream-v0-Instruct-7B's generation_config.json (decoding defaults of its `diffusion_generate`)."""
    eos = ids["<|endoftext|>"]
    return {"_from_model_config": True, "alg": "origin", "alg_temp": None, "bos_token_id": eos, "eos_token_id": eos,
            "eps": 0.001, "mask_token_id": None, "output_history": False, "pad_token_id": eos, "steps": 512,
            "temperature": 0.0, "top_k": None, "top_p": None}


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
    if family == "dream":   # vocab: embedding rows, at least the tokenizer's (the hub model also has spare rows)
        ids = _dream_tokenizer(folder)
        model, cfg = random_model(family, vocab=max(vocab, -(-(max(ids.values()) + 1) // 16) * 16),
                                  mask_id=ids["<|mask|>"], eos_id=ids["<|endoftext|>"], folder=folder, **dims)
        save(model, folder, cfg, shards)
        (folder / "generation_config.json").write_text(json.dumps(dream_generation_config(ids), indent=2))
        return folder
    ids = _tokenizer(folder, family, vocab)
    if family == "sdar":   # SDAR-Chat's generation_config adds <|im_end|> as a stop id
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}))
    model, cfg = random_model(family, vocab=vocab, mask_id=ids["<|mdm_mask|>" if family == "llada" else "<|MASK|>"],
                              eos_id=ids["<|endoftext|>"], folder=folder, **dims)
    return save(model, folder, cfg, shards)
