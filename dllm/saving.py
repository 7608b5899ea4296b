"""Write checkpoints in the real on-disk formats: config.json with the family's keys, safetensors weights under
the family's names (optionally sharded with an index), generation_config.json with the stop ids (and the
model's default cache when it is not the family's).

`dllm.load` reads them back; training pipelines and `dllm.testing` both write through here. Exports write a whole
folder through `staged`, so a kill at any moment never leaves weights without their config under the final name.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from safetensors.torch import save_file

from .loading import DEFAULT_CACHE_KEY, context_length
from .model import DiffusionLM
from .models import FAMILIES, detect_family


def family_config(family: str, *, vocab: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int,
                  d_ff: int, tie: bool, block_size: int | None, mask_id: int, eos_id: int, pad_id: int,
                  qk_norm: bool = False, logit_shift: bool = False) -> dict:
    """A config.json dict with the real keys of GSAI-ML/LLaDA-8B-Instruct, JetLM/SDAR-*-Chat or Dream-org/Dream-v0-*-7B.

    qk_norm (llada): add per-head q/k RMSNorm (dllm's `qk_norm` key, see `dllm.models.llada`); sdar always has it.
    logit_shift (llada): token i predicted at position i - 1 (dllm's `logit_shift` key, Dream's convention)."""
    if logit_shift and family != "llada":
        raise ValueError(f"logit_shift is a llada key (dream always shifts, sdar never does), not {family!r}'s")
    if family == "llada":
        return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": d_model,
                "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "mlp_hidden_size": d_ff,
                "mlp_ratio": 4, "vocab_size": vocab, "embedding_size": vocab, "max_sequence_length": 4096,
                "rope": True, "rope_theta": 500000.0, "rope_full_precision": True, "layer_norm_type": "rms",
                "rms_norm_eps": 1e-05, "layer_norm_with_affine": True, "bias_for_layer_norm": False,
                "activation_type": "silu", "block_type": "llama", "include_bias": False,
                "include_qkv_bias": False, "attention_layer_norm": False, "weight_tying": tie, "alibi": False,
                "block_group_size": 1, "mask_token_id": mask_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
                "torch_dtype": "float32", "use_cache": False, **({"qk_norm": True} if qk_norm else {}),
                **({"logit_shift": True} if logit_shift else {})}
    if family == "sdar":
        return {"architectures": ["SDARForCausalLM"], "model_type": "sdar", "hidden_size": d_model,
                "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads,
                "head_dim": d_model // n_heads, "intermediate_size": d_ff, "vocab_size": vocab,
                "rope_theta": 1000000, "rope_scaling": None, "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-06, "attention_bias": False, "tie_word_embeddings": tie, "hidden_act": "silu",
                "block_size": block_size, "mask_token_id": mask_id, "bos_token_id": eos_id, "eos_token_id": eos_id,
                "pad_token_id": pad_id, "attn_implementation": "sdpa", "use_sliding_window": False,
                "torch_dtype": "float32"}
    if family == "dream":   # the keys of Dream-org/Dream-v0-Instruct-7B's config.json
        return {"architectures": ["DreamModel"], "model_type": "Dream",
                "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
                "hidden_size": d_model, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
                "num_key_value_heads": n_kv_heads, "intermediate_size": d_ff, "vocab_size": vocab,
                "hidden_act": "silu", "max_position_embeddings": 131072, "max_window_layers": n_layers,
                "rope_theta": 1000000.0, "rope_scaling": None, "rms_norm_eps": 1e-06, "attention_dropout": 0.0,
                "initializer_range": 0.02, "tie_word_embeddings": tie, "use_sliding_window": False,
                "sliding_window": None, "use_mrope": False, "use_cache": True, "mask_token_id": mask_id,
                "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "torch_dtype": "float32"}
    raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")


def new_model(config: dict, folder: str | Path | None = None) -> DiffusionLM:
    """A freshly initialised model for a config dict (special ids may also read tokenizer files in `folder`)."""
    family = detect_family(config)
    arch = family.arch(config)
    ids = family.special_ids(config, Path(folder) if folder else Path("."))
    model = DiffusionLM(arch, family.name, ids, family.default_cache)
    model.max_length = context_length(config)
    return model


@contextmanager
def staged(folder: str | Path) -> Iterator[Path]:
    """Build a checkpoint folder in a temporary sibling and rename it to `folder` once the block completes.

    A kill while writing leaves the previous `folder` (or none) and a `.<name>.*` temporary, never a
    half-written model under the final name; an exception removes the temporary. Replacing an existing folder
    keeps the files the new export does not write (a Learn2PD filter beside the weights), except old weights
    (`model*`), which are replaced as a set; between the two renames the name is briefly absent, never partial.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp, aside = (folder.with_name(f".{folder.name}.{kind}-{os.getpid()}") for kind in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)   # left by a killed process that had this pid
    tmp.mkdir()                              # (mkdir, not mkdtemp: the folder keeps the usual permissions)
    try:
        yield tmp
        if folder.is_dir():
            for old in folder.iterdir():
                if not (tmp / old.name).exists() and not old.name.startswith(("model", ".")):
                    (shutil.copytree if old.is_dir() else shutil.copy2)(old, tmp / old.name)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(folder, aside)
            os.replace(tmp, folder)
            shutil.rmtree(aside)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(model: DiffusionLM, folder: str | Path, config: dict, shards: int = 1) -> Path:
    """Write config.json, generation_config.json and the weights under the family's checkpoint names.

    Files are written to temporary names and renamed, so no file is ever torn; for a whole checkpoint that
    appears complete or not at all, save inside `staged`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    family = detect_family(config)
    names = family.weight_names(family.arch(config))
    state = {names[k]: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    files: dict[str, dict] = {}
    if shards == 1:
        files["model.safetensors"] = state
    else:
        order = sorted(state)
        for i in range(shards):
            files[f"model-{i + 1:05d}-of-{shards:05d}.safetensors"] = {n: state[n] for n in order[i::shards]}
    for file, part in files.items():
        save_file(part, folder / f".{file}.tmp", metadata={"format": "pt"})
    generation = {"eos_token_id": list(model.stop_ids)}
    if family.block_size is not None:   # LLaDA2: the block length lives here, not in config.json
        generation["block_length"] = model.block_size
    if model.default_cache != family.default_cache:   # the checkpoint's own cache="auto" (`dllm.loading.default_cache`)
        generation[DEFAULT_CACHE_KEY] = model.default_cache
    texts = {"config.json": config, "generation_config.json": generation}
    if shards > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        texts["model.safetensors.index.json"] = {
            "metadata": {"total_size": total},
            "weight_map": {n: file for file, part in files.items() for n in part}}
    for name, obj in texts.items():
        (folder / f".{name}.tmp").write_text(json.dumps(obj, indent=2))
    for name in [*files, *texts]:
        os.replace(folder / f".{name}.tmp", folder / name)
    return folder
