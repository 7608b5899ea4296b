"""Static low-confidence remasking: a fixed number of commits per step (LLaDA, arXiv 2502.09992).

Schedule (ML-GSAI/LLaDA `generate.py`): `steps` are split evenly over the blocks; at the first step of a block
the m0 masked slots are split evenly over its steps, the first `m0 % steps_per_block` steps taking one more.
Each step commits the k highest-confidence masked slots ("low_confidence") or k random ones ("random").

Dream's decoding rules (DreamLM/Dream `generation_utils.py` `_sample`) are options of the same sampler:
* the confidence: `maskgit_plus` is "low_confidence" (top-1 probability), `topk_margin` is "margin" (top-1 minus
  top-2 probability), `entropy` is "entropy" (the negative entropy, higher = more certain);
* `schedule="dream"`: per block, t runs over linspace(1, eps, steps_per_block + 1) and step i commits
  int(m_i * (1 - t_{i+1} / t_i)) of the m_i masked slots, all that are left on the last step. Steps that commit
  nothing under this rule are skipped: Dream spends a forward on them that leaves the canvas unchanged;
* `alg_temp > 0`: the k slots are drawn without replacement with probabilities softmax(confidence / alg_temp)
  (Gumbel-top-k, the same distribution as Dream's `multinomial`) instead of taken greedily.
At temperature 0 this equals Dream's decoding; at temperature > 0 the confidences are those of the untempered
distribution (LLaDA's convention) where Dream uses the tempered one. Dream's `origin` (each masked slot commits
independently with probability 1 - s/t) has no counterpart; "random" commits exactly the scheduled count.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

from dllm.protocols import StepInput, StepOutput

from .common import TEMPERATURE, candidates, check_arg, confidence, margin, scores, top_k_mask
from .entropy import entropy

REMASKING = ("low_confidence", "random", "margin", "entropy")
SCHEDULES = ("even", "dream")


@dataclass
class StaticState:
    base: Tensor            # [B] commits per step in this block
    extra: Tensor           # [B] the first `extra` steps commit one more
    steps_per_block: int
    plan: Tensor | None = None   # [B, n] schedule="dream": commits at each step of the block

    def select(self, rows: Tensor) -> "StaticState":
        return StaticState(self.base[rows], self.extra[rows], self.steps_per_block,
                           None if self.plan is None else self.plan[rows])


def dream_plan(m0: Tensor, steps: int, eps: float) -> Tensor:
    """[B] masked slots at block start -> [B, steps] commits per step under Dream's schedule, the steps that commit
    nothing moved to the end. Float32 arithmetic as Dream's (`num_mask_token * (1 - s / t)`, truncated), so the
    counts agree with its code exactly."""
    t = torch.linspace(1, eps, steps + 1, device=m0.device)
    left, ks = m0.clone(), []
    for i in range(steps):
        k = (left.float() * (1 - t[i + 1] / t[i])).long() if i < steps - 1 else left
        ks.append(k)
        left = left - k
    plan = torch.stack(ks, 1)                                          # [B, steps]
    return plan.gather(1, (plan == 0).long().argsort(dim=1, stable=True))


@dataclass(frozen=True)
class Static:
    """LLaDA's static schedule: a fixed number of commits per step, the most confident masked slots first.

    `steps` are split evenly over the blocks and each block's masked slots evenly over its steps (ML-GSAI/LLaDA);
    `Static(steps=gen_length)` commits one token per step, the exact but slowest baseline.

    Args:
        steps (`int`): total decoding steps over `gen_length`, >= 1; a multiple of the number of blocks keeps the
            split even.
        remasking (`str`, defaults to "low_confidence"): "low_confidence" commits the k most confident masked
            slots, "random" k random ones.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits).
        State: the per-row commit schedule of the current block (`StaticState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Static
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], Static(steps=12), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 5)

    ```
    """
    steps: int                         # total steps over gen_length, split evenly over blocks
    remasking: str = "low_confidence"  # low_confidence | margin | entropy | random
    temperature: float = 0.0
    schedule: str = "even"             # even (LLaDA) | dream (linspace(1, eps, steps + 1) per block)
    eps: float = 1e-3                  # schedule="dream": the last time step
    alg_temp: float = 0.0              # > 0: draw the k slots ~ softmax(confidence / alg_temp) (Dream)
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "steps", "int", lo=1)
        check_arg(self, "remasking", "choice", choices=REMASKING)
        check_arg(self, "temperature", **TEMPERATURE)
        check_arg(self, "schedule", "choice", choices=SCHEDULES)
        check_arg(self, "eps", lo=0, hi=1, lo_open=True, hi_open=True)
        check_arg(self, "alg_temp", lo=0)

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

    def dream_quota(self, masked: Tensor, step: int, state: StaticState) -> tuple[Tensor, StaticState]:
        """[B] commits due at this step of the block under Dream's schedule."""
        if step == 0:
            state = replace(state, plan=dream_plan(masked.sum(1), state.steps_per_block, self.eps))
        if step >= state.plan.shape[1]:
            return torch.zeros_like(state.plan[:, 0]), state
        return state.plan[:, step], state

    def certainty(self, logits: Tensor, tokens: Tensor, generator: torch.Generator) -> Tensor:
        """[B, S] float64 score of the proposals, higher = committed first."""
        if self.remasking == "low_confidence":
            return confidence(logits, tokens)
        if self.remasking == "margin":
            return margin(logits)
        if self.remasking == "entropy":
            return -entropy(logits)
        return torch.rand(tokens.shape, generator=generator, device=tokens.device, dtype=torch.float64)

    def step(self, inp: StepInput, state: StaticState) -> tuple[StepOutput, StaticState]:
        due = self.quota if self.schedule == "even" else self.dream_quota
        k, state = due(inp.masked, inp.step, state)                        # [B]
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        conf = self.certainty(inp.logits, tokens, inp.generator)
        if self.alg_temp > 0:   # Gumbel-top-k: k draws without replacement from softmax(conf / alg_temp)
            u = torch.rand(conf.shape, generator=inp.generator, device=conf.device, dtype=torch.float64)
            conf = conf / self.alg_temp - torch.log(-torch.log(u))
        commit = top_k_mask(scores(conf, inp.masked), k) & inp.masked
        return StepOutput(tokens, commit), state
