"""`dllm.load` / `dllm.load_tokenizer`: config.json + safetensors (never pickle) from a folder, a shipped name
(`tiny-sdar`, `tiny-llada`) or a hub id (downloaded through huggingface_hub only when not local)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .cache import BIDIRECTIONAL_MODES, BLOCK_CAUSAL_MODES
from .model import DiffusionLM
from .models import ArchConfig, Family, SpecialIds, check_dims, check_ids, detect_family
from .models.family import generation_config

DEFAULT_CACHE_KEY = "dllm_default_cache"   # generation_config.json: the checkpoint's cache="auto"

SHIPPED = Path(__file__).parent / "checkpoints"      # embedded checkpoints, package data
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


def resolve(name_or_path: str | Path) -> Path:
    """A local folder for a folder path, a shipped name or a hub id (downloaded)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{name_or_path} is a file; dllm.load expects a checkpoint folder")
    shipped = SHIPPED / str(name_or_path)
    if shipped.is_dir():
        return shipped
    text = str(name_or_path)
    if text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"no checkpoint folder at {text!r} (and it is not a hub id 'owner/name' "
                                f"or a shipped name: {sorted(p.name for p in SHIPPED.glob('*') if p.is_dir())})")
    return _download(text)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown repo, gated repo: say what to do instead of a deep traceback
        raise OSError(f"could not fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
                      "If this machine is offline, download the checkpoint elsewhere and pass its local folder, "
                      "or set HF_HOME to a cache that already holds it.") from None


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None: float32 on CPU, bfloat16 on GPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if not isinstance(dtype, str) or dtype.lower() not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype.lower()]


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but no CUDA device is available")
    return device


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def weight_files(folder: Path) -> dict[str, Path]:
    """Checkpoint weight name -> the safetensors file holding it (single file or sharded index).

    Without an index, the weights are `model*.safetensors` (transformers' names for one file or unindexed
    shards); other safetensors files beside them (a Learn2PD filter, LoRA adapters) are not model weights."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index} is not a valid shard index ({type(e).__name__}: {e}); the download or export "
                             "was cut or corrupted: re-download or re-export the checkpoint") from None
        files = {name: folder / shard for name, shard in mapping.items()}
        absent = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if absent:
            raise FileNotFoundError(f"{folder}: shards listed in model.safetensors.index.json are missing: {absent}")
        return files
    shards = sorted(folder.glob("model*.safetensors"))
    if not shards:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = f" (found pickle files {pickles}; dllm never unpickles: convert them to safetensors)" if pickles else ""
        raise FileNotFoundError(f"{folder} has no model*.safetensors weights{hint}")
    files = {}
    for shard in shards:
        with _reading(shard), safe_open(shard, framework="pt") as f:
            files.update({name: shard for name in f.keys()})
    return files


def weights_fingerprint(files) -> str:
    """A short content hash of weight files: each file's size and its first and last MiB. Reading 2 MiB per shard
    keeps it instant on an 8B checkpoint, and retrained weights differ everywhere, so an evaluation folder can
    tell a re-exported or retrained checkpoint under the same name from the one its rows came from
    (`dllm.eval.evaluate.run_identity`). A copy of the same files keeps the fingerprint."""
    h = hashlib.sha256()
    for path in sorted({Path(f) for f in files}, key=lambda p: p.name):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read())
    return h.hexdigest()[:16]


def default_cache(folder: Path, family, arch) -> str:
    """What cache="auto" means for this checkpoint: generation_config.json's `dllm_default_cache` when set, else
    the family's default. A checkpoint sets it when the family's default is not measured to be harmless on it
    (the shipped tiny-llada: the approximate prefix cache loses points, so its `auto` is `none`)."""
    mode = generation_config(folder).get(DEFAULT_CACHE_KEY)
    if mode is None:
        return family.default_cache
    allowed = BLOCK_CAUSAL_MODES if arch.block_size is not None else BIDIRECTIONAL_MODES
    if mode not in allowed:
        raise ValueError(f"{folder / 'generation_config.json'}: {DEFAULT_CACHE_KEY}={mode!r} is not a cache mode of "
                         f"a {family.name} model; use one of {allowed} or remove the key (the family default)")
    return mode


@contextmanager
def _reading(path: Path):
    """Turn a safetensors/OS error while reading `path` into a ValueError that names the file and the remedy."""
    try:
        yield
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); the download or "
                         "export was cut or corrupted: re-download or re-export the checkpoint") from None


def with_overrides(family: Family, arch: ArchConfig, ids: SpecialIds, cfg: dict, folder: Path,
                   mask_id: int | None, stop_ids, block_size: int | None) -> tuple[ArchConfig, SpecialIds]:
    """The family's resolved block length and special ids, replaced by the caller's where given, then checked."""
    if block_size is None and family.block_size is not None:
        block_size = family.block_size(cfg, folder)
    if block_size is not None:
        if arch.block_size is None:
            raise ValueError(f"block_size={block_size}: {family.name} models are bidirectional (no attention "
                             "blocks); pick the decoding block with generate(block_length=...)")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
        arch = replace(arch, block_size=block_size)
    if mask_id is not None:
        ids = replace(ids, mask_id=int(mask_id))
    if stop_ids is not None:
        stops = tuple(int(t) for t in ([stop_ids] if isinstance(stop_ids, int) else stop_ids))
        if not stops:
            raise ValueError("stop_ids must name at least one token id")
        ids = replace(ids, stop_ids=stops)
    check_dims(arch, family)
    check_ids(ids, arch.vocab_size, family.name)
    return arch, ids


def load(name_or_path: str | Path, dtype: str | torch.dtype | None = None,
         device: str | torch.device | None = None, attention: str = "sdpa", check_finite: bool = True, *,
         mask_id: int | None = None, stop_ids: int | list[int] | None = None,
         block_size: int | None = None) -> DiffusionLM:
    """Load a diffusion LM; every expected weight must be present and every present weight used.

    attention: "sdpa" (default: SDPA, flash-attn for mask-free forwards when installed) or "flex" (masked
    forwards through flex-attention's block-sparse kernel; compiled on CUDA).
    check_finite: refuse a checkpoint with a NaN or inf in any weight (False skips the scan on huge models).
    mask_id, stop_ids, block_size: replace what the checkpoint's files give (or the family defaults, for LLaDA2,
    whose config has none of them); block_size applies to block-causal families only. Config dimensions and
    special ids are checked before any weight is read."""
    folder = resolve(name_or_path)
    device = parse_device(device)
    dtype = parse_dtype(dtype, device)
    cfg = read_config(folder)
    family = detect_family(cfg)
    arch, ids = with_overrides(family, family.arch(cfg), family.special_ids(cfg, folder), cfg, folder,
                               mask_id, stop_ids, block_size)
    names = family.weight_names(arch)
    files = weight_files(folder)
    # A tied head is the embedding; a stray lm_head.weight beside it is ignored, as transformers' tie_weights does.
    present = set(files) - ({"lm_head.weight"} if arch.tie_embeddings and family.name == "sdar" else set())
    missing, unexpected = sorted(set(names.values()) - present), sorted(present - set(names.values()))
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint weights do not match the {family.name} config: "
                         f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    with torch.device("meta"):
        model = DiffusionLM(arch, family.name, ids, default_cache(folder, family, arch), str(name_or_path))
    model.attention = attention    # validated before any weight is read
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = {}
    for mine, theirs in names.items():
        with _reading(files[theirs]), safe_open(files[theirs], framework="pt", device=str(device)) as f:
            tensor = f.get_tensor(theirs)
        if tensor.shape != expected[mine]:
            raise ValueError(f"{folder}: weight {theirs} has shape {tuple(tensor.shape)}, "
                             f"the config implies {tuple(expected[mine])} (check config.json's dimension keys: "
                             f"{', '.join(sorted(set(family.dim_keys.values())))})")
        state[mine] = tensor.to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    check_loaded(model, cfg, folder, {mine: (theirs, files[theirs]) for mine, theirs in names.items()}, check_finite)
    model.weights_id = weights_fingerprint(files[theirs] for theirs in names.values())
    return model.eval()


def _tokenizer_class(folder: Path) -> str | None:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text()).get("tokenizer_class") if path.is_file() else None


def context_length(cfg: dict) -> int | None:
    """The model's context in positions: SDAR/Qwen `max_position_embeddings`, LLaDA `max_sequence_length`."""
    n = cfg.get("max_position_embeddings") or cfg.get("max_sequence_length")
    return int(n) if n else None


def check_loaded(model: DiffusionLM, cfg: dict, folder: Path, sources: dict[str, tuple[str, Path]],
                 check_finite: bool) -> None:
    """Every weight finite (special ids were checked before loading, `check_ids`); records the context for
    `dllm.generate`.

    sources: our parameter name -> (checkpoint name, file), for messages that say where the bad weight is."""
    model.max_length = context_length(cfg)
    if not check_finite:
        return
    params = dict(model.named_parameters())
    # one float32 sum per weight is finite iff every element is (NaN and inf propagate); a sum that overflows
    # (never for trained weights) falls back to the exact elementwise test, so no finite checkpoint is refused
    sums = torch.stack([p.detach().sum(dtype=torch.float32) for p in params.values()])
    for name, finite in zip(params, torch.isfinite(sums).tolist()):
        if not finite and not bool(torch.isfinite(params[name].detach()).all()):
            weight, file = sources[name]
            raise ValueError(f"{folder}: weight {weight} (in {file.name}) holds NaN or inf values; the checkpoint is "
                             "corrupt (re-download or re-export it), or pass check_finite=False to load it anyway")


def load_tokenizer(name_or_path: str | Path):
    """The checkpoint's transformers tokenizer; applying the chat template is the caller's choice."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    folder = resolve(name_or_path)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
    # AutoTokenizer reads config.json to pick a class and warns that it does not know our model types
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():   # and transformers' deprecation notes about config keys it does not use
            warnings.simplefilter("ignore", FutureWarning)
            if _tokenizer_class(folder) == "DreamTokenizer":
                # Dream ships remote code for a tokenizer that is Qwen2's byte-level BPE (same regex, NFC,
                # vocab.json + merges.txt): the built-in class reads the same files without running that code
                from transformers import Qwen2Tokenizer
                return Qwen2Tokenizer.from_pretrained(folder)
            # never the checkpoint's own code: a config.json auto_map (LLaDA2) would otherwise prompt for it
            return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(level)
