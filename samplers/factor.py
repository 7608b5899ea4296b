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
    """Fast-dLLM's factor rule: sort the masked confidences and commit the longest prefix whose rank-j confidence
    is >= 1 - factor / (j + 1); the top one always commits.

    Args:
        factor (`float`, defaults to 1.0): >= 0; larger commits more per forward.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.
        reference_compat (`bool`, defaults to False): reproduce the reference's off-by-one (it also commits
            every slot when only the last rank fails).

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). Stateless (`NoState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Factor
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], Factor(1.0), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
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
