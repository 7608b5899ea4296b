"""Entropy-threshold decoding, dParallel's sampler (Chen et al., "dParallel: Learnable Parallel Decoding for dLLMs",
arXiv 2509.26488; czg1225/dParallel `LLaDA/generate.py`).

Per step inside the block: H_i = -sum_v p_v ln p_v of the untempered softmax (float64, natural log) at every
masked slot; commit the lowest-entropy masked slot and every masked slot with H_i <= threshold. A threshold
below 0 commits exactly one token per step, ordered by lowest entropy (not the same order as confidence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dllm.protocols import NoState, StepInput, StepOutput

from .common import NEG_INF, above_or_best, candidates, check_temperature


def entropy(logits: Tensor) -> Tensor:
    """[B, S, V] -> [B, S] float64 natural-log entropy of softmax(logits)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass(frozen=True)
class EntropyThreshold:
    threshold: float = 0.5
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_temperature(self.temperature)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        h = entropy(inp.logits)                                                          # [B, S]
        score = torch.where(inp.masked, -h, NEG_INF)      # higher = more certain; -inf where not masked
        commit = above_or_best(score, inp.masked, -self.threshold)   # -H >= -threshold
        return StepOutput(tokens, commit), state
