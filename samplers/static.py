"""Static low-confidence remasking: a fixed number of commits per step (LLaDA, arXiv 2502.09992).

Schedule (ML-GSAI/LLaDA `generate.py`): `steps` are split evenly over the blocks; at the first step of a block
the m0 masked slots are split evenly over its steps, the first `m0 % steps_per_block` steps taking one more.
Each step commits the k highest-confidence masked slots ("low_confidence") or k random ones ("random").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dllm.protocols import StepInput, StepOutput

from .common import candidates, check_temperature, confidence, scores, top_k_mask

REMASKING = ("low_confidence", "random")


@dataclass
class StaticState:
    base: Tensor            # [B] commits per step in this block
    extra: Tensor           # [B] the first `extra` steps commit one more
    steps_per_block: int

    def select(self, rows: Tensor) -> "StaticState":
        return StaticState(self.base[rows], self.extra[rows], self.steps_per_block)


@dataclass(frozen=True)
class Static:
    """LLaDA's static schedule: a fixed number of commits per step, the most confident masked slots first.

    `steps` are split evenly over the blocks and each block's masked slots evenly over its steps (ML-GSAI/LLaDA);
    `Static(steps=gen_length)` commits one token per step, the exact but slowest baseline.

    Args:
        steps (`int`): total decoding steps over `gen_length`, >= 1; a multiple of the number of blocks keeps the
            split even.
        remasking (`str`, defaults to "low_confidence"): "low_confidence" commits the k most confident masked
            slots, "random" k random ones.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits).
        State: the per-row commit schedule of the current block (`StaticState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Static
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], Static(steps=12), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 5)

    ```
    """
    steps: int                         # total steps over gen_length, split evenly over blocks
    remasking: str = "low_confidence"  # low_confidence | random
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {REMASKING}, got {self.remasking!r}")
        check_temperature(self.temperature)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> StaticState:
        if self.steps % num_blocks:
            raise ValueError(f"Static(steps={self.steps}) must be a multiple of the number of blocks ({num_blocks} "
                             "= gen_length / block_length), as LLaDA splits steps evenly over blocks")
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return StaticState(zeros, zeros, self.steps // num_blocks)

    @staticmethod
    def quota(masked: Tensor, step: int, state: StaticState) -> tuple[Tensor, StaticState]:
        """[B] commits due at this step of the block (other samplers use it as their floor)."""
        if step == 0:   # per-row quota from the masked count at block start
            m0 = masked.sum(1)
            state = StaticState(m0 // state.steps_per_block, m0 % state.steps_per_block, state.steps_per_block)
        return state.base + (step < state.extra).long(), state

    def step(self, inp: StepInput, state: StaticState) -> tuple[StepOutput, StaticState]:
        k, state = self.quota(inp.masked, inp.step, state)                 # [B]
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        if self.remasking == "low_confidence":
            conf = confidence(inp.logits, tokens)
        else:
            conf = torch.rand(tokens.shape, generator=inp.generator, device=tokens.device, dtype=torch.float64)
        commit = top_k_mask(scores(conf, inp.masked), k) & inp.masked
        return StepOutput(tokens, commit), state
