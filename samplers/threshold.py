"""Confidence-threshold parallel decoding (Fast-dLLM, arXiv 2505.22618 §3.3, Algorithm 1).

Commit every masked slot of the block whose confidence is >= tau, and always the most confident one.
Theorem 1 of the paper: if the n chosen marginals each exceed 1 - eps with (n + 1) eps <= 1, the product of
marginals has the same argmax as the joint. tau > 1 gives one token per step (static with steps = gen_length).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dllm.protocols import NoState, StepInput, StepOutput

from .common import TEMPERATURE, THRESHOLD, above_or_best, candidates, check_arg, confidence, scores


@dataclass(frozen=True)
class Threshold:
    threshold: float = 0.9
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "threshold", **THRESHOLD)
        check_arg(self, "temperature", **TEMPERATURE)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def certainty(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """[B, S] score that must reach `cutoff` (higher = more certain): the candidate's probability."""
        return confidence(logits, tokens)

    @property
    def cutoff(self) -> float:
        return self.threshold

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        score = scores(self.certainty(inp.logits, tokens), inp.masked)    # [B, S], -inf where not masked
        commit = above_or_best(score, inp.masked, self.cutoff)
        return StepOutput(tokens, commit), state
