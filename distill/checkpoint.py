"""Training-state checkpoints (resume) and the export of a finished model (weights, tokenizer, model card).

A training state is one file, `state.pt`: model, optimizer, scheduler and RNG states, the step counter and the
loss history. It is written to a temporary name and renamed (`os.replace` is atomic on POSIX), so a run killed
at any moment leaves either the previous state or the new one, never a torn file. Resuming loads it with
`weights_only=True` (tensors and plain containers only, no arbitrary unpickling).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from dllm.distill.tokenizer import save_tokenizer
from dllm.model import DiffusionLM
from dllm.saving import save

STATE = "state.pt"


def save_state(folder: str | Path, state: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE)
    return folder / STATE


def load_state(folder: str | Path) -> dict | None:
    """The latest training state in `folder`, or None when there is none yet."""
    path = Path(folder) / STATE
    return torch.load(path, weights_only=True) if path.is_file() else None


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def export(model: DiffusionLM, config: dict, folder: str | Path, card: str, tokenizer: str = "words") -> Path:
    """Write a folder `dllm.load` and `dllm.load_tokenizer` read: config, safetensors, tokenizer, README.md.
    `tokenizer` is a key of `dllm.distill.tokenizer.TOKENIZERS` (the model's vocabulary must match it)."""
    folder = Path(folder)
    save(model, folder, config)
    save_tokenizer(folder, tokenizer)
    tmp = folder / ".README.md.tmp"
    tmp.write_text(card)
    os.replace(tmp, folder / "README.md")
    return folder
