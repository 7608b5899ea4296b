"""CreditDecoding: trace credits fused into the logits (Wang et al., arXiv 2510.06133; dInfer form,
inclusionAI/dInfer `python/dinfer/decoding/parallel_strategy.py` `CreditThresholdParallelDecoder` @fce4e32).

A correct token is often the top-1 of its slot several steps before its confidence crosses the threshold, and a
plain threshold decoder forgets that history every step. Each row keeps a credit C [B, S, V] over the block:

    C <- decay * C                                  (not on the first step of a block, where C = 0)
    C[i, top1_i] += p_i(top1_i) ** gamma            (masked slots only; gamma < 1 is a concave boost, so a weak
                                                     but repeated winner still earns credit)
    fused = logits + alpha * log(1 + C)

and the Threshold rule (commit every masked slot with confidence >= threshold, always the best one) runs on
the fused logits, so credit can both raise a confidence and flip the winner. alpha = 0 is Threshold token for
token. A constant top-1 of probability m converges to m**gamma / (1 - decay).

The sources disagree on (alpha, decay, gamma): dInfer (0.7, 0.8, 0.2); a re-implementation citing the final
paper's Eq. 6/7 (0.65, 0.7, 0.2); an SGLang port (0.70, 0.65, 0.5). All three are plain fields; the defaults
are dInfer's, chosen by measuring tiny-sdar on the synthetic test suite (200 prompts per task, gen_length 12,
block_length 4, block_fused cache, greedy). Correct of 1600 / decoding steps per example:

    tau    Threshold    dInfer       (0.65,0.7,0.2)  (0.70,0.65,0.5)
    0.3    63 / 6.17    62 / 5.46    61 / 5.52       63 / 5.69
    0.5    63 / 6.65    67 / 6.53    68 / 6.55       67 / 6.57
    0.9    63 / 6.68    67 / 6.67    68 / 6.67       67 / 6.67

The three rows are within two prompts of each other; dInfer's takes the fewest steps, so it is the default.
tiny-sdar is confident almost everywhere (Threshold's steps barely move from tau 0.5 to 0.95), so credit saves
steps only at low tau; threshold stays at Fast-dLLM's 0.9. tiny-llada (1/1600 correct) orders the steps alike.

Memory: the credit is a dense B * S * V float32 tensor (S = 32, V = 126k is 16 MB per row); fine at our sizes,
a sparse top-k-per-slot table would be the approximation for large batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dllm.protocols import StepInput, StepOutput

from .common import TEMPERATURE, THRESHOLD, above_or_best, candidates, check_arg, confidence, scores


@dataclass
class CreditState:
    credit: Tensor          # [B, S, V] float32, zeros at the first step of every block

    def select(self, rows: Tensor) -> "CreditState":
        return CreditState(self.credit[rows])


@dataclass(frozen=True)
class CreditDecoding:
    """CreditDecoding: each row keeps a decaying credit for tokens that stayed top-1 across steps and fuses
    `alpha * log(1 + credit)` into the logits before the Threshold rule (arXiv 2510.06133).

    Args:
        threshold (`float`, defaults to 0.9): the Threshold cutoff on the fused confidence.
        alpha (`float`, defaults to 0.7): fusion weight; 0 is plain Threshold.
        decay (`float`, defaults to 0.8): credit kept per step, in [0, 1].
        gamma (`float`, defaults to 0.2): exponent of the top-1 probability added as credit.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits).
        State: the credit [B, S, V], reset at every block (`CreditState`).

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import CreditDecoding
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], CreditDecoding(), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
    threshold: float = 0.9
    alpha: float = 0.7            # fusion weight of log(1 + credit)
    decay: float = 0.8            # beta: credit kept per step
    gamma: float = 0.2            # exponent of the top-1 probability added as credit
    temperature: float = 0.0
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "threshold", **THRESHOLD)
        check_arg(self, "alpha", lo=0)
        check_arg(self, "decay", lo=0, hi=1)
        check_arg(self, "gamma", lo=0)
        check_arg(self, "temperature", **TEMPERATURE)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> CreditState:
        # S and V are only known from the logits: the first step of every block allocates the credit
        return CreditState(torch.zeros(batch_size, 0, 0, device=device))

    def step(self, inp: StepInput, state: CreditState) -> tuple[StepOutput, CreditState]:
        probs = torch.softmax(inp.logits.float(), dim=-1)                     # [B, S, V] fp32, as dInfer
        credit = torch.zeros_like(probs) if inp.step == 0 else self.decay * state.credit
        top_p, top = probs.max(-1)                                            # [B, S] model's own top-1
        boost = torch.where(inp.masked, top_p ** self.gamma, 0.0)             # [B, S] committed slots earn none
        credit = credit.scatter_add(-1, top[..., None], boost[..., None])     # [B, S, V]
        fused = inp.logits + self.alpha * torch.log1p(credit)                 # [B, S, V]; alpha = 0 is exact
        tokens = candidates(fused, self.temperature, inp.generator, inp.mask_id)           # [B, S]
        score = scores(confidence(fused, tokens), inp.masked)                 # [B, S], -inf where not masked
        commit = above_or_best(score, inp.masked, self.threshold)
        return StepOutput(tokens, commit), CreditState(credit)
