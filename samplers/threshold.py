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
    """Fast-dLLM's confidence threshold: commit every masked slot whose candidate probability is >= `threshold`,
    and always the most confident one, so every step makes progress (arXiv 2505.22618, Algorithm 1).

    Args:
        threshold (`float`, defaults to 0.9): the cutoff; > 1 commits one token per step, lower commits more per
            forward and risks committing slots that depend on each other.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). Stateless (`NoState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Threshold
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], Threshold(0.9), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
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
