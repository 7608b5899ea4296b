"""Training-state checkpoints (resume) and the export of a finished model (weights, tokenizer, model card).

A training state is one file, `state.pt`: model, optimizer, scheduler and RNG states, the step counter and the
loss history. It is written to a temporary name and renamed (`os.replace` is atomic on POSIX), so a run killed
at any moment leaves either the previous state or the new one, never a torn file. Resuming loads it with
`weights_only=True` (tensors and plain containers only, no arbitrary unpickling); a file that does not load (0
bytes, garbage, cut by a copy) is a ValueError naming it, and resume=true without a state says it starts afresh.
An export is written to a temporary folder renamed into place (`dllm.saving.staged`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from dllm.distill.tokenizer import save_tokenizer
from dllm.model import DiffusionLM
from dllm.saving import save, staged

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
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:   # EOFError (0 bytes), RuntimeError (cut zip), UnpicklingError, KeyError, OSError...
        state, why = None, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
    else:
        why = "not a training state (no step counter)"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{path} is unreadable ({why}); it was cut or overwritten. Delete it to start this run "
                         "from step 0, or restore a copy, then resume again") from None
    return state


def resume_state(folder: str | Path, steps: int) -> dict | None:
    """The state a resume=true run continues from; None, with a warning, when `folder` has none yet.

    A state already past `steps` is refused: training would stop at once and export the longer run under a
    card that names `steps`."""
    state = load_state(folder)
    if state is None:
        warnings.warn(f"resume=true but {Path(folder) / STATE} does not exist: starting from step 0", stacklevel=2)
    elif state["step"] > steps:
        raise ValueError(f"{Path(folder) / STATE} is at step {state['step']}, beyond pipeline.steps={steps}: resume "
                         f"with pipeline.steps >= {state['step']}, or train {steps} steps from scratch in another run "
                         "directory (resume=false)")
    return state


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
    with staged(folder) as tmp:
        save(model, tmp, config)
        save_tokenizer(tmp, tokenizer)
        (tmp / "README.md").write_text(card)
    return Path(folder)
