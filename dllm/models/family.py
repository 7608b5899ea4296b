"""What a model family declares: how to read its config and weight names, and its special tokens."""
from __future__ import annotations

import json
from dataclasses import dataclass
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
