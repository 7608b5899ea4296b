"""Fast-dLLM's factor rule (NVlabs/Fast-dLLM `llada/generate.py` `get_transfer_index_dynamic`).

Sort the masked confidences c(1) >= ... >= c(m) and commit the longest prefix whose every rank j satisfies
c(j) >= 1 - f / (j + 1) (rank 1 always passes): Theorem 1's (n + 1)(1 - c) <= 1 with the 1 relaxed to f.
The reference also takes all m slots when the first failing rank is the last one (so two remaining masks are
always committed together); `reference_compat=True` reproduces that, the default is the rule as stated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dllm.protocols import NoState, StepInput, StepOutput

from .common import TEMPERATURE, candidates, check_arg, confidence, scores, top_k_mask


@dataclass(frozen=True)
class Factor:
    factor: float = 1.0
    temperature: float = 0.0
    reference_compat: bool = False
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "factor", lo=0)
        check_arg(self, "temperature", **TEMPERATURE)
        check_arg(self, "reference_compat", "bool")

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        score = scores(confidence(inp.logits, tokens), inp.masked)
        ranked = score.sort(dim=1, descending=True).values                # [B, S], -inf after the m masked
        j = torch.arange(1, score.shape[1] + 1, device=score.device, dtype=torch.float64)
        bound = 1 - self.factor / (j + 1)
        bound[0] = float("-inf")                                           # at least one commit
        m = inp.masked.sum(1)                                              # [B]
        passes = (ranked >= bound) & (j[None, :] <= m[:, None])
        n = passes.long().cumprod(1).sum(1)                                # longest passing prefix
        if self.reference_compat:
            n = torch.where(n == m - 1, m, n)
        commit = top_k_mask(score, n) & inp.masked
        return StepOutput(tokens, commit), state
