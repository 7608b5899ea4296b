"""Learn2PD: a learned filter commits slots whose prediction is already final, on top of the static schedule
(Bao et al., "Learning to Parallel", arXiv 2509.25188 §3; ims-kdks/Learning-to-Parallel-Decoding
`generate_learn2parallel`).

Per step: a = sigmoid(filter(top-1 probabilities of the whole block)); commit the masked slots with a > accept,
plus the static schedule's k_t most confident masked slots (LLaDA low-confidence remasking, composed from
`Static` rather than copied). So every step commits at least what Static would and NFE never exceeds Static's;
accept >= 1 (a sigmoid never exceeds 1) reproduces Static token for token. End-of-text prediction is the
separate wrapper `EoTP(Learn2PD(...))`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

from dllm.protocols import StepInput, StepOutput

from .common import TEMPERATURE, check_arg
from .policy import FilterNet, features, load_filter
from .static import Static, StaticState


@dataclass(frozen=True)
class Learn2PD:
    """Learn2PD: a ~2K-parameter filter reads the block's top-1 probabilities and commits the slots it predicts are
    already final, on top of the Static schedule, so NFE never exceeds Static's (arXiv 2509.25188).

    Args:
        filter (`str | FilterNet`): a file written by `save_filter` (`dllm-distill pipeline=learn2pd`; the tiny
            models ship `"tiny-sdar/learn2pd_filter.safetensors"` and `"tiny-llada/..."`), or a FilterNet. A filter
            belongs to one model and block length.
        accept (`float`, defaults to 0.96): commit a masked slot when sigmoid(filter) > accept; >= 1 is Static.
        steps (`int | None`, defaults to None): the Static schedule's total steps; None: one per step.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). State: Static's schedule.

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Learn2PD
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], Learn2PD("tiny-sdar/learn2pd_filter.safetensors"), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 3)

    ```
    """
    filter: str | FilterNet            # a `save_filter` file, or an in-memory FilterNet (tests, distillation)
    accept: float = 0.96               # tau_f: commit a masked slot when sigmoid(filter) > accept (paper: 0.96)
    steps: int | None = None           # static schedule's total steps; None: one per step (S = G, the paper's)
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False
    net: FilterNet = field(init=False, repr=False, compare=False)
    static: Static = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.filter, (str, os.PathLike, FilterNet)):
            raise ValueError(f"Learn2PD: filter must be a save_filter file path or a FilterNet; "
                             f"got {type(self.filter).__name__}")
        check_arg(self, "accept", lo=0, allow_inf=True, desc="a number >= 0 (>= 1: the filter never commits)")
        check_arg(self, "steps", "int", lo=1, optional=True)
        check_arg(self, "temperature", **TEMPERATURE)
        net = self.filter if isinstance(self.filter, FilterNet) else load_filter(self.filter)
        object.__setattr__(self, "net", net.eval())
        # Static.step reads its schedule from the state; its `steps` only sizes init_state (unused when None)
        object.__setattr__(self, "static", Static(self.steps or 1, "low_confidence", self.temperature))

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> StaticState:
        if next(self.net.parameters()).device != device:
            self.net.to(device)        # the filter is ~2K parameters; keep it beside the logits
        if self.steps is None:         # one commit per step: steps_per_block = the block length, set at step 0
            zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
            return StaticState(zeros, zeros, 0)
        return self.static.init_state(batch_size, num_blocks, device)

    def step(self, inp: StepInput, state: StaticState) -> tuple[StepOutput, StaticState]:
        S, n = inp.block.length, self.net.block_length
        if inp.step == 0:
            if inp.block.index == 0 and S != n:   # the first block always has the decoding block length
                raise ValueError(f"filter trained for block_length {n}, decoding with {S}")
            if self.steps is None:
                state = replace(state, steps_per_block=S)
        quota, state = self.static.step(inp, state)          # tokens [B, S], commit = static top-k_t
        x_blk = inp.x[:, inp.block.start:inp.block.end]      # [B, S]
        feat = features(inp.logits, x_blk, inp.masked)       # [B, S] top-1 prob at every slot, decoded included
        # a last block cut short by the canvas end (block-causal layouts, or gen_length % block_length): the
        # missing slots are fed as settled (probability 1, like decoded ones) and their outputs dropped
        feat = F.pad(feat, (0, n - S), value=1.0)            # [B, n]
        w = next(self.net.parameters())
        a = torch.sigmoid(self.net(feat.to(w.dtype)))[:, :S]  # [B, S] P(prediction is final)
        commit = quota.commit | (inp.masked & (a > self.accept))
        return StepOutput(quota.tokens, commit), state
