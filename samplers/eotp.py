"""End-of-Text Prediction (EoTP) as a wrapper around any sampler (Bao et al., "Learning to Parallel", arXiv
2509.25188; ims-kdks/Learning-to-Parallel-Decoding `generate_l2p_eot`).

Once a row commits a stop id at slot p, everything after it is padding: the reference truncates the sequence
right after p. Here the base sampler decides as usual and EoTP sets `fill_from = p + 1` for the first stop id the
row commits in this step, so the loop turns the row's remaining masked slots after p into the stop id. The
remaining steps of the block go only to the slots before p, and the loop drops the row (no further forwards)
as soon as none is left. As with the reference truncation, the filled slots read as EOS rather than mask from
then on, so later predictions in the row may differ from the base sampler's.

Optional `eos_confidence`: also *predict* the end from the current block, committing a masked slot as a stop id
when its argmax is one with top-1 probability >= eos_confidence, even if the base would not commit it yet.
The reference's aggressive variant (truncate after the masked slot anywhere in the remaining sequence with the
highest EOS confidence) needs whole-sequence logits, which the block loop does not compute (cached steps only
forward the block), so it is not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from dllm.checks import require_sampler
from dllm.protocols import Sampler, SamplerState, StepInput, StepOutput

from .common import check_arg, confidence


@dataclass(frozen=True)
class EoTP:
    """End-of-text prediction around any sampler: once a row commits a stop id, the loop fills the row's remaining
    masked slots after it with the stop id and drops the row as soon as nothing before it is masked
    (arXiv 2509.25188).

    Args:
        base (`Sampler`): the sampler that decides every commit; EoTP keeps its state.
        eos_confidence (`float | None`, defaults to None): also commit a masked slot as a stop id when its argmax
            is one with top-1 probability >= eos_confidence; None: off.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). The base sampler's state.

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import EoTP, Threshold
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], EoTP(Threshold(0.9)), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 2)

    ```
    """
    base: Sampler                       # any sampler; EoTP's state is the base's state
    eos_confidence: float | None = None  # None: off; else commit masked slots predicting a stop id this confidently

    def __post_init__(self):
        require_sampler(self.base, "EoTP: base")
        check_arg(self, "eos_confidence", lo=0, hi=1, optional=True)

    @property
    def needs_hidden(self) -> bool:
        return self.base.needs_hidden

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> SamplerState:
        return self.base.init_state(batch_size, num_blocks, device)

    def step(self, inp: StepInput, state: SamplerState) -> tuple[StepOutput, SamplerState]:
        out, state = self.base.step(inp, state)
        if not inp.stop_ids:
            return out, state
        stop_ids = torch.tensor(inp.stop_ids, device=inp.logits.device)
        tokens, commit = out.tokens, out.commit                                       # [B, S]
        if self.eos_confidence is not None:
            top = inp.logits.argmax(-1)                                               # [B, S]
            eos = inp.masked & torch.isin(top, stop_ids) & (confidence(inp.logits, top) >= self.eos_confidence)
            tokens, commit = torch.where(eos, top, tokens), commit | eos
        stop = commit & torch.isin(tokens, stop_ids)                                  # [B, S]
        L = inp.x.shape[1]
        fill_from = torch.where(stop.any(1), inp.block.start + stop.int().argmax(1) + 1, L)   # [B], L: no fill
        if out.fill_from is not None:
            fill_from = torch.minimum(fill_from, out.fill_from)
        carry = out.carry
        if carry is not None:   # carried logits describe the block as the base left it; stale if EoTP changed it
            col = inp.block.start + torch.arange(inp.masked.shape[1], device=commit.device)
            filled = inp.masked & ~commit & (col[None, :] >= fill_from[:, None])
            if bool((filled | (commit != out.commit)).any()):   # host sync only for carrying bases
                carry = None
        return replace(out, tokens=tokens, commit=commit, carry=carry, fill_from=fill_from), state
