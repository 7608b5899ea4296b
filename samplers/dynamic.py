"""Dynamic threshold: every masked slot above tau if at least k(step) qualify, else the top-k(step) slots.

The rule of LLaDA2's reference decoder (inclusionAI `modeling_llada2_moe.py`, `LLaDA2MoeModelLM.generate`:
threshold 0.95, steps 32 per block of 32) and of TraDo/SDAR's `low_confidence_dynamic` (Gen-Verse/dLLM-RL,
threshold 0.9, 4 steps per block of 4). k(step) is the reference's fixed schedule over the block length S, not
over the masks left: S // steps per step, the first S % steps steps one more (`_get_num_transfer_tokens`).
Unlike Fast-dLLM's `Threshold` (>= tau, plus the single best), the floor is k(step) and the test is strict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dllm.protocols import NoState, StepInput, StepOutput

from .common import TEMPERATURE, THRESHOLD, above_or_top_k, candidates, check_arg, confidence, scores


@dataclass(frozen=True)
class DynamicThreshold:
    threshold: float = 0.95
    steps: int = 32                    # denoising steps per block: sets the floor k(step)
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "threshold", **THRESHOLD)
        check_arg(self, "steps", "int", lo=1)
        check_arg(self, "temperature", **TEMPERATURE)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def floor(self, block_length: int, step: int) -> int:
        """k(step): commits due at this step of a block of `block_length` slots (at least one, so every step
        progresses; past the schedule, which covers the whole block, everything left)."""
        if step >= self.steps:
            return block_length
        base, extra = divmod(block_length, self.steps)
        return max(1, base + (step < extra))

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        score = scores(confidence(inp.logits, tokens), inp.masked)                      # [B, S]
        B, S = tokens.shape
        k = torch.full((B,), self.floor(S, inp.step), dtype=torch.long, device=tokens.device)
        return StepOutput(tokens, above_or_top_k(score, inp.masked, self.threshold, k)), state
