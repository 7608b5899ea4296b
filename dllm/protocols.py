"""The contracts between models, samplers and the generation loop.

Vocabulary (used everywhere): B batch, L canvas length, S block length, V vocabulary, D hidden size.
The *canvas* `x [B, L]` is the left-padded prompt followed by generation slots; *masked* slots hold the
model's mask id; a sampler proposes tokens and a *commit* mask; only the loop writes the canvas.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class ModelOut:
    logits: Tensor                # [B, S, V]; logits[:, i] predicts the token at fed position i (a family whose
                                  # model predicts at i - 1, Dream, shifts inside its forward)
    hidden: Tensor | None = None  # [B, S, D] final normed hidden states the logits come from, only when need_hidden=True


@dataclass(frozen=True)
class Block:
    start: int                    # absolute canvas index, shared by all rows
    end: int                      # exclusive
    index: int = 0                # which block of the generation (0-based)

    @property
    def length(self) -> int:
        return self.end - self.start


class Forward(Protocol):
    """An extra model pass bound by the loop to the current cache, positions and padding (counted in nfe)."""

    def __call__(self, block_ids: Tensor, *, need_hidden: bool = False) -> ModelOut: ...
        # block_ids [B', S] candidate contents of the active block, B' a multiple of B (row-major repeats)

    def autoregressive(self, block_ids: Tensor) -> ModelOut: ...
        # block-causal models: logits [B', S, V] predicting each slot from the slots to its left only


@dataclass
class StepInput:
    """Read-only view handed to a sampler each step. A sampler must not write to any of these tensors."""
    x: Tensor                     # [B, L] canvas
    logits: Tensor                # [B, S, V] for x[:, block.start:block.end]
    masked: Tensor                # [B, S] bool, still mask_id (only generation slots can be masked)
    block: Block
    step: int                     # 0 on the first step of every block
    generator: torch.Generator    # the only RNG a sampler may use
    forward: Forward              # extra model passes (counted in nfe)
    mask_id: int
    stop_ids: tuple[int, ...] = ()
    hidden: Tensor | None = None  # [B, S, D] iff sampler.needs_hidden


@dataclass
class StepOutput:
    tokens: Tensor                # [B, S] proposed ids (read only where commit)
    commit: Tensor                # [B, S] bool, subset of masked; >= 1 True per row that still has a mask
    carry: ModelOut | None = None  # logits [B, S, V] of the block *after* this commit, from an extra forward;
                                  # the loop uses them for the next step of the block instead of forwarding again
    fill_from: Tensor | None = None  # [B] canvas index: masked slots of the row at or after it become the first
                                  # stop id (end-of-text prediction); a value >= L leaves the row alone


@runtime_checkable
class SamplerState(Protocol):
    def select(self, rows: Tensor) -> "SamplerState": ...   # keep only these rows (finished rows dropped)


@dataclass(frozen=True)
class NoState:
    """State of a stateless sampler."""

    def select(self, rows: Tensor) -> "NoState":
        return self


@runtime_checkable
class Sampler(Protocol):
    needs_hidden: ClassVar[bool]

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> SamplerState: ...

    def step(self, inp: StepInput, state: SamplerState) -> tuple[StepOutput, SamplerState]: ...


@dataclass
class StepRecord:
    """What the loop reports to `on_step` after every commit (traces, distillation data, visualisation)."""
    block: Block
    step: int
    rows: Tensor                  # [B] index of each active row in the caller's prompt list
    logits: Tensor                # [B, S, V] the logits the sampler saw
    masked: Tensor                # [B, S] before the commit
    tokens: Tensor                # [B, S] proposed tokens
    commit: Tensor                # [B, S] committed slots
    x: Tensor                     # [B, L] canvas after the commit (do not modify)
    nfe: int                      # forwards so far
    extra: dict = field(default_factory=dict)


OnStep = Callable[[StepRecord], None]
