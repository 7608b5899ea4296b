"""The two pretraining losses: masked diffusion (LLaDA, bidirectional) and block diffusion (SDAR / BD3-LM).

Both draw one mask ratio t per sequence and mask every answer-region token independently with probability t;
the prompt is never masked and never scored. The loss is the ELBO weighting of masked diffusion: cross-entropy
on masked tokens divided by t, summed, then divided by the row's answer length and averaged over rows (LLaDA
arXiv 2502.09992 eq. 5 for SFT; BD3-LM arXiv 2503.09573 eq. 8 per block; SDAR's
`fused_linear_diffusion_cross_entropy` divides CE by p_mask the same way). There is no token shift: logits[i]
predicts token i.

t is drawn from U(t_min, t_max), stratified over the batch (row i gets a uniform draw inside the i-th of B equal
strata). Both are BD3-LM's variance reductions (§4, "clipped" noise schedules and a low-discrepancy sampler):
with t near 0 the 1/t weight lets one masked token dominate a small batch's gradient. One t per sequence is
LLaDA's and BD3-LM's choice; a ratio per block would also be a valid estimator.

`rows` restricts the loss to a data-parallel rank's share of the batch after the noise is drawn for all of it;
the loss is a mean over rows, so averaging the ranks' gradients gives the whole batch's gradient.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm.distill.data import Batch
from dllm.model import DiffusionLM


def add_noise(batch: Batch, mask_id: int, generator: torch.Generator, t_min: float = 0.1,
              t_max: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """x_t [B, L], masked [B, L] bool, p_mask [B]: answer tokens masked independently with probability p_mask."""
    if not 0 < t_min <= t_max <= 1:
        raise ValueError(f"need 0 < t_min <= t_max <= 1, got {t_min}, {t_max}")
    B, L = batch.ids.shape
    # drawn on the generator's device (CPU) and moved, so the noise is the same on every device
    strata = (torch.arange(B) + torch.rand(B, generator=generator)) / B      # [B] stratified in [0, 1)
    p_mask = (t_min + (t_max - t_min) * strata[torch.randperm(B, generator=generator)]).to(batch.ids.device)
    u = torch.rand(B, L, generator=generator).to(batch.ids.device)
    masked = (u < p_mask[:, None]) & batch.answer
    x_t = torch.where(masked, mask_id, batch.ids)
    return x_t, masked, p_mask


def weighted_ce(logits: Tensor, batch: Batch, masked: Tensor, p_mask: Tensor) -> Tensor:
    """sum over masked tokens of CE / p_mask, per row divided by the answer length, mean over rows."""
    ce = F.cross_entropy(logits[masked].float(), batch.ids[masked], reduction="none")   # [M]
    row = masked.nonzero()[:, 0]
    per_row = torch.zeros(masked.shape[0], device=logits.device).index_add(0, row, ce / p_mask[row])
    return (per_row / batch.answer.sum(1)).mean()


def rows_of(batch: Batch, x_t: Tensor, masked: Tensor, p_mask: Tensor, rows: slice | None):
    """The batch and its noise restricted to `rows` (a data-parallel rank's share); the noise is always drawn
    for the whole batch first, so every rank sees the rows the one-process run would."""
    if rows is None:
        return batch, x_t, masked, p_mask
    part = Batch(batch.ids[rows], batch.pos[rows], batch.valid[rows], batch.answer[rows])
    return part, x_t[rows], masked[rows], p_mask[rows]


def masked_diffusion_loss(model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                          t_max: float = 1.0, rows: slice | None = None) -> Tensor:
    """LLaDA: the noisy sequence is read with the model's own (bidirectional) attention."""
    x_t, masked, p_mask = add_noise(batch, model.mask_id, generator, t_min, t_max)
    batch, x_t, masked, p_mask = rows_of(batch, x_t, masked, p_mask, rows)
    logits = model(x_t, batch.pos, pad_mask=batch.valid if batch.padded else None).logits   # [B, L, V]
    return weighted_ce(logits, batch, masked, p_mask)


@lru_cache(maxsize=8)
def block_diffusion_mask(L: int, block_size: int, device: torch.device = torch.device("cpu")) -> Tensor:
    """[1, 1, 2L, 2L] bool attention mask of the BD3-LM layout [x_t ; x_0] (True = may attend).

    * noisy -> noisy: same block only, bidirectional inside it (block-diagonal);
    * noisy -> clean: strictly earlier blocks (offset block-causal);
    * clean -> clean: same or earlier blocks (block-causal), so x_0 yields the K/V a block cache would hold;
    * clean -> noisy: never.
    A noisy block thus sees the clean blocks before it and all of itself: exactly the SDAR inference pattern
    `k // bs <= q // bs` with earlier blocks committed (BD3-LM arXiv 2503.09573 §3.2, SDAR `block_diff_mask`).
    """
    blk = torch.arange(2 * L, device=device) % L // block_size     # block index of every slot in both halves
    noisy = torch.arange(2 * L, device=device) < L
    q_blk, k_blk = blk[:, None], blk[None, :]
    q_noisy, k_noisy = noisy[:, None], noisy[None, :]
    mask = (q_noisy & k_noisy & (q_blk == k_blk)) \
        | (q_noisy & ~k_noisy & (k_blk < q_blk)) \
        | (~q_noisy & ~k_noisy & (k_blk <= q_blk))
    return mask[None, None]


def block_diffusion_loss(model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                         t_max: float = 1.0, rows: slice | None = None) -> Tensor:
    """SDAR: one forward over [x_t ; x_0] (length 2L, positions repeated); only the x_t half is scored."""
    if batch.padded:
        raise ValueError("block diffusion batches start at position 0 (left_pad=False): the block grid is absolute")
    x_t, masked, p_mask = add_noise(batch, model.mask_id, generator, t_min, t_max)
    batch, x_t, masked, p_mask = rows_of(batch, x_t, masked, p_mask, rows)
    L = batch.ids.shape[1]
    ids = torch.cat((x_t, batch.ids), dim=1)                       # [B, 2L]
    pos = torch.cat((batch.pos, batch.pos), dim=1)                  # [B, 2L]: the clean copy sits at the same positions
    mask = block_diffusion_mask(L, model.block_size, ids.device)
    logits = model(ids, pos, attn_mask=mask, logits_range=(0, L)).logits   # [B, L, V]
    return weighted_ce(logits, batch, masked, p_mask)


OBJECTIVES = {"llada": masked_diffusion_loss, "sdar": block_diffusion_loss}
