"""Entropy-threshold decoding, dParallel's sampler (Chen et al., "dParallel: Learnable Parallel Decoding for dLLMs",
arXiv 2509.26488; czg1225/dParallel `LLaDA/generate.py`).

Per step inside the block: H_i = -sum_v p_v ln p_v of the untempered softmax (float64, natural log) at every
masked slot; commit the lowest-entropy masked slot and every masked slot with H_i <= threshold. A threshold
below 0 commits exactly one token per step, ordered by lowest entropy (not the same order as confidence).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .common import TEMPERATURE, check_arg
from .threshold import Threshold


def entropy(logits: Tensor) -> Tensor:
    """[B, S, V] -> [B, S] float64 natural-log entropy of softmax(logits)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass(frozen=True)
class EntropyThreshold(Threshold):
    """Threshold's commit rule on certainty -H (cutoff -threshold), so a slot commits when H <= threshold."""
    threshold: float = 0.5

    def __post_init__(self):   # an entropy bound: any number (< 0 is one token per step)
        check_arg(self, "threshold", allow_inf=True)
        check_arg(self, "temperature", **TEMPERATURE)

    def certainty(self, logits: Tensor, tokens: Tensor) -> Tensor:
        return -entropy(logits)

    @property
    def cutoff(self) -> float:
        return -self.threshold
