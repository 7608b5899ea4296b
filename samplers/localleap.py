"""LocalLeap: anchors propagate local determinism (Kong et al., "Accelerating Diffusion LLM Inference via Local
Determinism Propagation", arXiv 2510.07081; friedrichor/LocalLeap `generate.py`, read through a public mirror).

Slots next to a very confident slot are usually already determined, and that consistency decays with distance.
Each step, the *anchors* are the masked slots of the block with confidence >= threshold (this step's
confidences). A masked slot at distance d from its nearest anchor is committed iff its confidence is
>= tau(d), and the most confident masked slot always is:

    step   (reference): tau(d) = relaxed  if d <= radius else threshold
    linear (extension): tau(d) = relaxed + (threshold - relaxed) * d / (radius + 1)  if d <= radius else threshold

Distances are measured inside the block (the window is clipped to it). tau(d) <= threshold, so the commits are
a superset of Threshold's; relaxed == threshold or radius == 0 (the window is then the anchors alone, which pass
anyway) is Threshold token for token; no anchor this step is Threshold for that step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dllm.protocols import NoState, StepInput, StepOutput

from .common import TEMPERATURE, THRESHOLD, above_or_best, candidates, check_arg, confidence, scores

DECAYS = ("step", "linear")


@dataclass(frozen=True)
class LocalLeap:
    """Local Leap: confident anchors relax the threshold of the slots within `radius` of them, so neighbours of
    a sure token commit together (arXiv 2510.07081).

    Args:
        threshold (`float`, defaults to 0.9): cutoff for anchors and for every slot outside their windows.
        relaxed (`float`, defaults to 0.75): cutoff inside a window; must be <= threshold.
        radius (`int`, defaults to 4): window half-width in slots, >= 0.
        decay (`str`, defaults to "step"): the cutoff inside a window, "step" (the reference) or "linear" in the
            distance to the anchor.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). Stateless (`NoState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import LocalLeap
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], LocalLeap(), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
    threshold: float = 0.9        # tau: anchors, and every slot outside the windows
    relaxed: float = 0.75         # tau_relax: inside a window around an anchor
    radius: int = 4               # r: window half-width in slots
    decay: str = "step"           # tau(d) inside the window: step (reference) | linear
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "threshold", **THRESHOLD)
        check_arg(self, "relaxed", lo=0, lo_open=True, hi=self.threshold, allow_inf=True,
                  desc=f"a number in (0, threshold={self.threshold}]")
        check_arg(self, "radius", "int", lo=0)
        check_arg(self, "decay", "choice", choices=DECAYS)
        check_arg(self, "temperature", **TEMPERATURE)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)   # [B, S]
        score = scores(confidence(inp.logits, tokens), inp.masked)        # [B, S] float64, -inf where not masked
        anchor = score >= self.threshold                                   # [B, S]
        # distance to the nearest anchor of the row: |i - j| over anchors j, inf if none (S <= 64: [B, S, S])
        pos = torch.arange(score.shape[1], device=score.device, dtype=score.dtype)
        gap = (pos[:, None] - pos[None, :]).abs()                          # [S, S]
        dist = torch.where(anchor[:, None, :], gap, float("inf")).amin(-1)  # [B, S]
        # "progressive spatial consistency decay": the reference's hard window, or a ramp back up to threshold
        frac = dist / (self.radius + 1) if self.decay == "linear" else torch.zeros_like(dist)       # [B, S]
        tau = torch.where(dist <= self.radius, self.relaxed + (self.threshold - self.relaxed) * frac,
                          self.threshold)                                  # [B, S] float64
        commit = above_or_best(score, inp.masked, tau)
        return StepOutput(tokens, commit), state
