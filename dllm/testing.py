"""Random tiny checkpoints in the exact on-disk format of the real ones, for tests and CPU experiments.

`write_tiny_checkpoint(folder, "llada" | "sdar" | "dream", ...)` writes config.json (the real config keys),
safetensors weights under the real names (optionally sharded with an index), generation_config.json and
tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json; for SDAR also
added_tokens.json with its differently spelled mask string; for Dream the slow-tokenizer layout of the hub repo:
vocab.json + merges.txt of a byte-level BPE, added_tokens.json, no tokenizer.json). `write_tiny_llada2(folder, ...)`
does the same for LLaDA2 (Ling MoE; config.json without block length or mask id, as the hub files). Load the result with
`dllm.load(folder)`.
"""
from __future__ import annotations

import json
from pathlib import Path

from dataclasses import replace

import torch

from .model import DiffusionLM
from .models import FAMILIES, detect_family
from .saving import family_config, new_model, save

LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>"]
SDAR_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|MASK|>"]
LLADA_TEMPLATE = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
                  "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
                  "<|end_header_id|>\n\n{% endif %}")
SDAR_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def word_tokenizer(folder: Path, vocab: int, specials: list[str], mask: str, template: str) -> dict:
    """Save a word-level tokenizer: words w0, w1, ... then the special strings, `vocab` ids in all; EOS and pad
    are `<|endoftext|>`. Returns string -> id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab - len(specials))]
    ids = {t: i for i, t in enumerate(words + specials)}
    tok = Tokenizer(models.WordLevel(ids, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   mask_token=mask,
                                   additional_special_tokens=[s for s in specials if s not in ("<|endoftext|>",)])
    fast.chat_template = template
    fast.save_pretrained(folder)
    return ids


def _tokenizer(folder: Path, family: str, vocab: int) -> dict:
    """A word-level tokenizer: the family's special strings, then words w0, w1, ... up to `vocab` ids."""
    llada = family == "llada"
    ids = word_tokenizer(folder, vocab, LLADA_SPECIALS if llada else SDAR_SPECIALS,
                         "<|mdm_mask|>" if llada else "<|MASK|>", LLADA_TEMPLATE if llada else SDAR_TEMPLATE)
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
    fill_random(model, seed, logit_scale)
    return model, cfg


def fill_random(model: DiffusionLM, seed: int, logit_scale: float) -> None:
    """Seeded random weights: norms near 1, projections ~ 1/sqrt(fan_in), the head scaled by `logit_scale`, a
    random router expert bias (so selection differs from the unbiased scores)."""
    dev = model.embed.weight.device        # drawn where the weights live (fast for real shapes on a GPU)
    if dev.type == "meta":                 # shapes only (no storage to fill): checks of the real architectures
        return
    g = torch.Generator(device=dev).manual_seed(seed)
    tie = model.head is None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):      # not all ones, so a swapped norm would show in the logits
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, device=dev))
            elif name == "embed.weight":
                p.copy_(torch.randn(p.shape, generator=g, device=dev) * (logit_scale / p.shape[1] ** 0.5 if tie else 1.0))
            else:
                scale = logit_scale if name == "head.weight" else 1.0
                p.copy_(torch.randn(p.shape, generator=g, device=dev) / p.shape[-1] ** 0.5 * scale)
        for name, b in model.named_buffers():
            if name.endswith("expert_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g, device=dev))


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


LING_SPECIALS = ["<|endoftext|>", "<role>", "</role>", "<|role_end|>", "<|mask|>"]
LING_TEMPLATE = ("{% for m in messages %}<role>{{ {'user': 'HUMAN', 'assistant': 'ASSISTANT', 'system': 'SYSTEM'}"
                 "[m['role']] }}</role>{{ m['content'] }}<|role_end|>{% endfor %}"
                 "{% if add_generation_prompt %}<role>ASSISTANT</role>{% endif %}")


def llada2_config(*, vocab: int = 64, d_model: int = 32, n_layers: int = 3, n_heads: int = 4, n_kv_heads: int = 2,
                  head_dim: int | None = None, d_ff: int = 64, n_experts: int = 8, top_k: int = 2,
                  n_group: int = 2, topk_group: int = 1, d_expert: int = 16, n_shared: int = 1,
                  first_dense: int = 1, rotary_factor: float = 0.5, pad_id: int | None = None) -> dict:
    """config.json of inclusionAI/LLaDA2.0-mini (its keys and fixed options) at tiny dimensions."""
    return {"architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
            "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                         "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                         "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
            "vocab_size": vocab, "hidden_size": d_model, "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads,
            "head_dim": head_dim or d_model // n_heads, "intermediate_size": d_ff, "hidden_act": "silu",
            "first_k_dense_replace": first_dense, "num_experts": n_experts, "num_experts_per_tok": top_k,
            "num_shared_experts": n_shared, "moe_intermediate_size": d_expert, "n_group": n_group,
            "topk_group": topk_group, "routed_scaling_factor": 2.5, "score_function": "sigmoid",
            "moe_router_enable_expert_bias": True, "norm_topk_prob": True, "router_dtype": "fp32",
            "partial_rotary_factor": rotary_factor, "rope_theta": 600000, "rope_scaling": None,
            "max_position_embeddings": 16384, "rms_norm_eps": 1e-06, "use_qkv_bias": False, "use_bias": False,
            "use_qk_norm": True, "norm_head": False, "tie_word_embeddings": False, "use_sliding_window": False,
            "pad_token_id": vocab - len(LING_SPECIALS) if pad_id is None else pad_id, "use_cache": False,
            "torch_dtype": "bfloat16", "transformers_version": "4.52.3"}


def random_llada2(*, seed: int = 0, logit_scale: float = 4.0, block_size: int = 4, mask_id: int | None = None,
                  stop_ids: tuple[int, ...] | None = None, **dims) -> tuple[DiffusionLM, dict]:
    """An in-memory LLaDA2 model with random weights (ids as `write_tiny_llada2` lays them out unless given)."""
    cfg = llada2_config(**dims)
    family = detect_family(cfg)
    vocab = cfg["vocab_size"]
    ids = family.special_ids(cfg, Path("."))
    ids = replace(ids, mask_id=vocab - 1 if mask_id is None else mask_id,
                  stop_ids=(cfg["pad_token_id"],) if stop_ids is None else tuple(stop_ids))
    arch = replace(family.arch(cfg), block_size=block_size)
    model = DiffusionLM(arch, family.name, ids, family.default_cache)
    fill_random(model, seed, logit_scale)
    return model, cfg


def write_tiny_llada2(folder: str | Path, *, shards: int = 1, block_length: int | None = 4, seed: int = 0,
                      logit_scale: float = 4.0, **dims) -> Path:
    """A random LLaDA2 checkpoint with a Ling-style tokenizer (`<|mask|>`, `<|role_end|>`, `<role>` chat format).
    block_length goes to generation_config.json (None: left out, so the family default 32 applies)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = dims.get("vocab", 64)
    ids = word_tokenizer(folder, vocab, LING_SPECIALS, "<|mask|>", LING_TEMPLATE)
    model, cfg = random_llada2(seed=seed, logit_scale=logit_scale, block_size=block_length or 32,
                               mask_id=ids["<|mask|>"], stop_ids=(ids["<|endoftext|>"], ids["<|role_end|>"]), **dims)
    save(model, folder, cfg, shards)
    gen = {"eos_token_id": ids["<|endoftext|>"]}
    if block_length is not None:
        gen["block_length"] = block_length
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return folder
