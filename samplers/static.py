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

from .common import TEMPERATURE, candidates, check_arg, confidence, scores, top_k_mask

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
    steps: int                         # total steps over gen_length, split evenly over blocks
    remasking: str = "low_confidence"  # low_confidence | random
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "steps", "int", lo=1)
        check_arg(self, "remasking", "choice", choices=REMASKING)
        check_arg(self, "temperature", **TEMPERATURE)

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
