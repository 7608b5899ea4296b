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
    """dParallel's entropy threshold: commit the lowest-entropy masked slot and every masked slot whose entropy
    H = -sum p ln p is <= `threshold` nats (Threshold's rule on certainty -H).

    Args:
        threshold (`float`, defaults to 0.5): nats (paper: 0.5; 0.45 on MBPP); below 0 commits one token per step
            in entropy order.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). Stateless (`NoState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import EntropyThreshold
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], EntropyThreshold(0.5), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
    threshold: float = 0.5

    def __post_init__(self):   # an entropy bound: any number (< 0 is one token per step)
        check_arg(self, "threshold", allow_inf=True)
        check_arg(self, "temperature", **TEMPERATURE)

    def certainty(self, logits: Tensor, tokens: Tensor) -> Tensor:
        return -entropy(logits)

    @property
    def cutoff(self) -> float:
        return -self.threshold
