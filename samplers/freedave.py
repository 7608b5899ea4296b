"""FreeDave: lossless parallel decoding by drafting future static states and verifying them in one forward
(Wu & Zhang, "Free Draft-and-Verification", arXiv 2510.00294; cychomatica/FreeDave `generation/core.py`).

The reference decoder is Static with one token per step (temperature 0, highest confidence first). From the
prediction of the current state (carried from the previous verify forward, so no forward re-reads it), draft
D_k = the state with its k + 1 most confident masked slots filled, k < d. One batched forward over all drafts
gives each draft's own prediction; D_{k+1} is accepted iff it equals the static successor of D_k (D_k plus
D_k's own top-1 commit). The longest accepted chain D_best is committed (best + 1 tokens for one forward), and
its logits are carried to the next step, so the output equals Static(steps=gen_length) token for token while
using fewer sequential forwards. Cost: d block evaluations per forward (stats["tokens_evaluated"]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dllm.protocols import ModelOut, NoState, StepInput, StepOutput

from .common import candidates, check_arg, confidence, scores


@dataclass(frozen=True)
class FreeDave:
    """FreeDave: draft the next `draft_steps` states of one-token-per-step Static decoding and verify them in one
    batched forward; the output equals `Static(steps=gen_length)` token for token with fewer forwards
    (arXiv 2510.00294).

    Args:
        draft_steps (`int`, defaults to 4): candidate future states verified per forward, >= 1 (the memory and
            compute budget of a verify forward; it counts as one NFE).

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). Extra forwards go through `inp.forward`. Stateless.

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import FreeDave
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], FreeDave(4), gen_length=12, block_length=4)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe
    ('99 07 45 12', 3)

    ```
    """
    draft_steps: int = 4          # d: candidate future states verified per forward (the memory/compute budget)
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "draft_steps", "int", lo=1)

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> NoState:
        return NoState()

    def step(self, inp: StepInput, state: NoState) -> tuple[StepOutput, NoState]:
        x_blk = inp.x[:, inp.block.start:inp.block.end]                 # [B, S]
        tokens = candidates(inp.logits, 0.0, inp.generator, inp.mask_id)  # [B, S]
        score = scores(confidence(inp.logits, tokens), inp.masked)      # [B, S]
        order = score.argsort(dim=1, descending=True, stable=True)      # [B, S] slots by confidence
        rank = order.argsort(dim=1)                                      # [B, S] rank of each slot
        m = inp.masked.sum(1)                                            # [B]
        # sizing the draft batch needs the host: with at most one mask left the carried prediction suffices
        d = min(self.draft_steps, int(m.max()))
        if d <= 1:
            return StepOutput(tokens, (rank == 0) & inp.masked), state
        B, S = x_blk.shape
        k = torch.arange(d, device=x_blk.device)
        fill = (rank[:, None, :] <= k[None, :, None]) & inp.masked[:, None, :]          # [B, d, S]
        drafts = torch.where(fill, tokens[:, None, :], x_blk[:, None, :])                # [B, d, S]
        out = inp.forward(drafts.reshape(B * d, S))                                      # one NFE
        logits = out.logits.view(B, d, S, -1)                                            # [B, d, S, V]
        d_tok = candidates(logits, 0.0, inp.generator, inp.mask_id)                      # [B, d, S]
        d_score = scores(confidence(logits, d_tok), inp.masked[:, None, :] & ~fill)       # [B, d, S]
        nxt = d_score.argmax(-1)                                                         # [B, d] D_k's top-1 slot
        want = order[:, 1:d]                                                             # [B, d-1] slot added by D_{k+1}
        same_slot = nxt[:, :-1] == want
        same_tok = d_tok[:, :-1].gather(-1, want[..., None]).squeeze(-1) == tokens.gather(1, want)
        exists = k[None, 1:] < m[:, None]                                                # D_{k+1} adds a real slot
        accept = same_slot & same_tok & exists                                           # [B, d-1]
        best = accept.long().cumprod(1).sum(1)                                           # [B] longest chain
        rows = torch.arange(B, device=x_blk.device)
        commit = fill[rows, best]
        carry = ModelOut(logits[rows, best])                                             # prediction of D_best
        return StepOutput(tokens, commit, carry=carry), state
