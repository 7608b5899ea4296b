"""The canvas: left-padded prompts followed by mask slots, cut into decode blocks shared by every row.

Two alignments (a family setting, `DiffusionLM.block_causal`):
* bidirectional (LLaDA): every prompt ends at the same canvas index P and blocks are [P + kS, P + (k+1)S)
  (ML-GSAI/LLaDA `generate.py`);
* block-causal (SDAR): blocks are aligned to position 0 of each row (JetAstra/SDAR `generate.py`: the prompt
  tail sits inside the first decode block). Rows are left-padded by multiples of S so that canvas and
  position ids agree modulo S and every prompt ends inside the same canvas block; rows whose generation
  ends earlier get padding slots on the right.
Position ids are canvas indices minus the row's left padding, so a row in a batch sees exactly what it
would see alone.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .protocols import Block


@dataclass
class Layout:
    x: Tensor             # [B, L] canvas: pad | prompt | mask slots | pad
    valid: Tensor         # [B, L] bool: prompt or generation slot (False = padding)
    pos: Tensor           # [B, L] position ids
    gen_start: Tensor     # [B] first generation slot (canvas index)
    gen_end: Tensor       # [B] one past the last generation slot
    blocks: list[Block]   # decode blocks, shared by every row
    padded: bool          # any padding at all (attention masks can be skipped when False)

    @property
    def prefix_end(self) -> int:
        """Everything before the first decode block is clean prompt."""
        return self.blocks[0].start


def as_id_lists(prompts) -> list[list[int]]:
    """Accept a list of id lists (Python or numpy integers) or of 1-D integer tensors/arrays, or one 2-D (or 1-D)
    integer tensor/array; reject floats, bools, empty prompts and anything else with a ValueError saying why."""
    if isinstance(prompts, (Tensor, np.ndarray)):
        ids = _integer_tensor(prompts, "prompts")
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(f"prompts tensor must be a non-empty [B, P] (or [P]) tensor of token ids, got shape "
                             f"{tuple(ids.shape)}")
        return ids.tolist()
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists (or a [B, P] integer tensor); got "
                         + (repr(prompts) if isinstance(prompts, (list, tuple)) else type(prompts).__name__))
    if all(_is_int(t) for t in prompts):
        raise ValueError("prompts must be a list of prompts (list of token-id lists); wrap a single prompt in []")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, (Tensor, np.ndarray)):
            p = _integer_tensor(p, f"prompt {i}")
            if p.dim() != 1:
                raise ValueError(f"prompt {i} must be 1-D token ids, got shape {tuple(p.shape)}")
            p = p.tolist()
        elif not isinstance(p, (list, tuple)):
            raise ValueError(f"prompt {i} must be a list of token ids (tokenize text first); got {type(p).__name__}")
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if not all(_is_int(t) for t in p):
            bad = next(t for t in p if not _is_int(t))
            raise ValueError(f"prompt {i} must contain integer token ids; found {bad!r}")
        out.append([int(t) for t in p])
    return out


def _is_int(t) -> bool:
    return isinstance(t, numbers.Integral) and not isinstance(t, bool)


def _integer_tensor(t: "Tensor | np.ndarray", what: str) -> Tensor:
    """A numpy array or tensor of token ids as a long tensor; float / bool / complex dtypes are a ValueError
    (a float prompt is usually an embedding or a mistake, never ids to round)."""
    dtype = t.dtype
    integer = dtype.kind in "iu" if isinstance(t, np.ndarray) else \
        not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    if not integer:
        raise ValueError(f"{what} must hold integer token ids, got dtype {dtype}")
    return torch.as_tensor(t.astype(np.int64) if isinstance(t, np.ndarray) else t).long()


def make_layout(prompts: list[list[int]], gen_length: int, block_length: int, *, mask_id: int, pad_id: int,
                vocab_size: int, block_causal: bool, device: torch.device) -> Layout:
    if gen_length < 1 or block_length < 1:
        raise ValueError(f"gen_length and block_length must be >= 1, got {gen_length}, {block_length}")
    for i, p in enumerate(prompts):
        bad = [t for t in p if not 0 <= t < vocab_size or t == mask_id]
        if bad:
            raise ValueError(f"prompt {i} holds ids outside the vocabulary [0, {vocab_size}) or the mask id: {bad[:5]}")
    lens = torch.tensor([len(p) for p in prompts])
    S = block_length
    if block_causal:
        left = S * (lens // S).max() - S * (lens // S)           # multiples of S: positions agree mod S
        first = int(S * (lens // S).max())
    else:
        left = lens.max() - lens
        first = int(lens.max())
    gen_start = left + lens
    gen_end = gen_start + gen_length
    L = int(gen_end.max())
    B = len(prompts)
    col = torch.arange(L)
    x = torch.full((B, L), pad_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        x[r, left[r]:gen_start[r]] = torch.tensor(p)
    gen = (col >= gen_start[:, None]) & (col < gen_end[:, None])
    x[gen] = mask_id
    valid = (col >= left[:, None]) & (col < gen_end[:, None])
    pos = (col - left[:, None]).clamp(min=0)
    blocks = [Block(s, min(s + S, L), k) for k, s in enumerate(range(first, L, S))]
    return Layout(x.to(device), valid.to(device), pos.to(device), gen_start.to(device), gen_end.to(device),
                  blocks, padded=bool((~valid).any()))
