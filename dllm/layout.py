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

from dataclasses import dataclass

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
    """Accept a list of id lists / 1-D tensors, or a 2-D tensor; reject anything else clearly."""
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        if prompts.dim() != 2:
            raise ValueError(f"prompts tensor must be [B, P], got shape {tuple(prompts.shape)}")
        return prompts.tolist()
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    if all(isinstance(t, int) for t in prompts):
        raise ValueError("prompts must be a list of prompts (list of token-id lists); wrap a single prompt in []")
    out = []
    for i, p in enumerate(prompts):
        ids = p.tolist() if isinstance(p, Tensor) else list(p)
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        if not all(isinstance(t, int) for t in ids):
            raise ValueError(f"prompt {i} must contain integer token ids")
        out.append(ids)
    return out


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
