"""The pretraining losses: masked diffusion (LLaDA, bidirectional), block diffusion (SDAR / BD3-LM, at the model's
block size or at one drawn per batch) and causal next-token prediction (the autoregressive start of
`dllm.distill.ar`).

The two diffusion losses draw one mask ratio t per sequence and mask every answer-region token independently with probability t;
the prompt is never masked and never scored. The loss is the ELBO weighting of masked diffusion: cross-entropy
on masked tokens divided by t, summed, then divided by the row's answer length and averaged over rows (LLaDA
arXiv 2502.09992 eq. 5 for SFT; BD3-LM arXiv 2503.09573 eq. 8 per block; SDAR's
`fused_linear_diffusion_cross_entropy` divides CE by p_mask the same way). There is no token shift: logits[i]
predicts token i.

t is drawn from U(t_min, t_max), stratified over the batch (row i gets a uniform draw inside the i-th of B equal
strata). Both are BD3-LM's variance reductions (§4, "clipped" noise schedules and a low-discrepancy sampler):
with t near 0 the 1/t weight lets one masked token dominate a small batch's gradient. One t per sequence is
LLaDA's and BD3-LM's choice; a ratio per block would also be a valid estimator.

With `exact=True` (the default) the item slots of set-valued rows are scored against their exact posterior given
what the query sees instead of the one sampled order (`dllm.distill.targets`): the same loss in expectation,
without the gradient noise of an arbitrary order.

`rows` restricts the loss to a data-parallel rank's share of the batch after the noise is drawn for all of it;
the loss is a mean over rows, so averaging the ranks' gradients gives the whole batch's gradient.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm.attention import build_mask
from dllm.distill.data import Batch
from dllm.distill.targets import cross_entropy, permutation_posterior
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


def weighted_ce(logits: Tensor, batch: Batch, masked: Tensor, p_mask: Tensor, first: int = 0,
                sees: Tensor | None = None) -> Tensor:
    """sum over masked tokens of CE / p_mask, per row divided by the answer length, mean over rows.

    logits [B, L - first, V] cover columns [first, L); every masked column must lie there (`answer_start`).
    sees [B, L, L] bool (query sees key's clean token): given, set-valued slots get their exact target."""
    ids, hit = batch.ids[:, first:], masked[:, first:]
    posterior = slot = None
    if sees is not None and batch.excluded is not None and bool((batch.excluded >= 0).any()):
        posterior = permutation_posterior(batch.ids, batch.excluded, sees, logits.shape[-1])[:, first:][hit]
        slot = (batch.excluded[:, first:] >= 0)[hit]
    ce = cross_entropy(logits[hit].float(), ids[hit], posterior, slot)      # [M]
    row = hit.nonzero()[:, 0]
    per_row = torch.zeros(masked.shape[0], device=logits.device).index_add(0, row, ce / p_mask[row])
    return (per_row / batch.answer.sum(1)).mean()


def answer_start(batch: Batch) -> int:
    """The first column holding an answer token in any row (one host sync per training step): columns before it
    are prompt everywhere, so they are never masked or scored and the LM head and the last layer's queries can
    skip them (`logits_range`)."""
    return int(batch.answer.int().argmax(1).min())


def rows_of(batch: Batch, x_t: Tensor, masked: Tensor, p_mask: Tensor, rows: slice | None):
    """The batch and its noise restricted to `rows` (a data-parallel rank's share); the noise is always drawn
    for the whole batch first, so every rank sees the rows the one-process run would."""
    if rows is None:
        return batch, x_t, masked, p_mask
    return batch.rows(rows), x_t[rows], masked[rows], p_mask[rows]


def masked_diffusion_loss(model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                          t_max: float = 1.0, rows: slice | None = None, exact: bool = True) -> Tensor:
    """LLaDA: the noisy sequence is read with the model's own (bidirectional) attention."""
    x_t, masked, p_mask = add_noise(batch, model.mask_id, generator, t_min, t_max)
    batch, x_t, masked, p_mask = rows_of(batch, x_t, masked, p_mask, rows)
    first, L = answer_start(batch), batch.ids.shape[1]
    logits = model(x_t, batch.pos, pad_mask=batch.valid if batch.padded else None,
                   logits_range=(first, L)).logits                                   # [B, L - first, V]
    sees = (~masked)[:, None, :].expand(-1, L, -1) if exact else None        # [B, L, L] every unmasked token
    return weighted_ce(logits, batch, masked, p_mask, first, sees)


@dataclass(frozen=True)
class BlockwiseMasking:
    """Masked diffusion with one active block per row (Blockwise SFT, arXiv 2508.19529): the answer is cut into
    blocks of `block` slots counted from its first slot, one block per row is drawn uniformly, the blocks before
    it stay clean, its tokens are masked with the row's ratio t (`add_noise`) and every later slot is a mask.
    Only the active block is scored (CE / t over its masked slots, divided by its length).

    Why: a bidirectional model decoded semi-autoregressively (LLaDA's block_length) always sees a clean prefix,
    a partly masked current block and an all-mask future. Whole-answer masking (`masked_diffusion_loss`)
    trains it on noisy prefixes and visible future tokens instead, a pattern decoding never shows it; the paper
    reports gains on GSM8K from aligning the two. An autoregressive start converted to `llada` needs that pattern
    most: its features were built for a clean left context."""
    block: int

    def __post_init__(self):
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"the active block length must be an int >= 1, got {self.block!r}")

    def noise(self, batch: Batch, mask_id: int, generator: torch.Generator, t_min: float, t_max: float):
        """x_t [B, L], scored [B, L] bool, p_mask [B], active [B, L] bool (the drawn block's answer slots)."""
        _, masked, p_mask = add_noise(batch, mask_id, generator, t_min, t_max)
        slot = batch.answer.long().cumsum(1) - 1                     # [B, L] index inside the answer region
        n_blocks = (batch.answer.sum(1) + self.block - 1) // self.block               # [B]
        k = (torch.rand(len(n_blocks), generator=generator).to(n_blocks.device) * n_blocks).long()   # [B]
        blk = torch.where(batch.answer, slot // self.block, -1)      # [B, L] answer block of a slot, -1: prompt
        active, future = blk == k[:, None], blk > k[:, None]
        scored = masked & active
        x_t = torch.where(scored | future, mask_id, batch.ids)
        return x_t, scored, p_mask, active

    def __call__(self, model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                 t_max: float = 1.0, rows: slice | None = None, exact: bool = True) -> Tensor:
        x_t, scored, p_mask, active = self.noise(batch, model.mask_id, generator, t_min, t_max)
        if rows is not None:
            batch, x_t, scored, p_mask, active = batch.rows(rows), x_t[rows], scored[rows], p_mask[rows], active[rows]
        first, L = int(active.int().argmax(1).min()), batch.ids.shape[1]
        logits = model(x_t, batch.pos, pad_mask=batch.valid if batch.padded else None,
                       logits_range=(first, L)).logits                               # [B, L - first, V]
        sees = (x_t != model.mask_id)[:, None, :].expand(-1, L, -1) if exact else None   # [B, L, L]
        scoring = Batch(batch.ids, batch.pos, batch.valid, active, batch.excluded)   # normalised by the block
        return weighted_ce(logits, scoring, scored, p_mask, first, sees)


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


@lru_cache(maxsize=64)
def trimmed_layout(L: int, block_size: int, first_block: int, device: torch.device = torch.device("cpu")):
    """(kept [S'] column indices into [x_t ; x_0], mask [1, 1, S', S']) of the BD3-LM layout without the slots
    no scored query depends on: noisy blocks before `first_block` (prompt in every row: never masked, never
    scored, and no other noisy block sees them) and the last clean block (a noisy block sees only strictly
    earlier clean blocks; clean blocks are seen by later ones only). The remaining logits are those of the full
    layout (`tests/test_pretrain.py`); for the tiny models this drops 8 of 56 slots."""
    n_blocks = L // block_size
    kept = torch.cat((torch.arange(first_block * block_size, L), L + torch.arange((n_blocks - 1) * block_size)))
    mask = block_diffusion_mask(L, block_size)[:, :, kept][:, :, :, kept]
    return kept.to(device), mask.to(device)


def block_diffusion_loss(model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                         t_max: float = 1.0, rows: slice | None = None, exact: bool = True,
                         block_size: int | None = None) -> Tensor:
    """SDAR: one forward over [x_t ; x_0] (positions repeated, `trimmed_layout`); only the x_t half is scored.
    block_size: the training block (None: the model's); the layout's mask carries it, the config is unchanged."""
    if batch.padded:
        raise ValueError("block diffusion batches start at position 0 (left_pad=False): the block grid is absolute")
    x_t, masked, p_mask = add_noise(batch, model.mask_id, generator, t_min, t_max)
    batch, x_t, masked, p_mask = rows_of(batch, x_t, masked, p_mask, rows)
    L, bs = batch.ids.shape[1], block_size or model.block_size
    if L % bs:
        raise ValueError(f"block diffusion rows must be a whole number of blocks: length {L}, block size {bs}")
    first_block = answer_start(batch) // bs
    kept, mask = trimmed_layout(L, bs, first_block, batch.ids.device)
    ids = torch.cat((x_t, batch.ids), dim=1)[:, kept]                # [B, S']
    pos = torch.cat((batch.pos, batch.pos), dim=1)[:, kept]           # the clean copy sits at the same positions
    n_noisy = L - first_block * bs
    logits = model(ids, pos, attn_mask=mask, logits_range=(0, n_noisy)).logits   # [B, n_noisy, V]
    sees = None
    if exact:   # [B, L, L] clean earlier blocks, and the unmasked tokens of the query's own block
        blk = torch.arange(L, device=masked.device) // bs
        sees = (blk[None, :] < blk[:, None]) | ((blk[None, :] == blk[:, None]) & ~masked[:, None, :])
    return weighted_ce(logits, batch, masked, p_mask, first_block * bs, sees)


@dataclass(frozen=True)
class DrawnBlockSize:
    """`block_diffusion_loss` at a block size drawn per batch from `sizes` with the step's noise generator, so the
    draw is a function of (seed, step) and a resumed run replays it. A set holding 1 keeps the autoregressive
    pattern in distribution: block size 1 is what S2D2 verifies with (arXiv 2603.25702), and a converted model
    trained only at its decode block size never sees it. Row lengths must be a multiple of every size
    (`Batches(multiple_of=lcm(sizes))`)."""
    sizes: tuple[int, ...]

    def __post_init__(self):
        if not self.sizes or any(not isinstance(b, int) or b < 1 for b in self.sizes):
            raise ValueError(f"block sizes must be a non-empty list of ints >= 1, got {self.sizes!r}")

    def draw(self, generator: torch.Generator) -> int:
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=generator))]

    def __call__(self, model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                 t_max: float = 1.0, rows: slice | None = None, exact: bool = True) -> Tensor:
        return block_diffusion_loss(model, batch, generator, t_min, t_max, rows, exact, self.draw(generator))


def next_token_loss(model: DiffusionLM, batch: Batch, generator: torch.Generator | None = None,
                    t_min: float | None = None, t_max: float | None = None, rows: slice | None = None,
                    exact: bool | None = None) -> Tensor:
    """Causal language modelling: logits[:, i] under causal attention (block size 1) predict ids[:, i + 1].

    Every real token after a row's first is a target, prompt and answer alike (the EOS fill too: it is what the
    converted models must produce after an answer), so every token gets a gradient where the diffusion losses
    score only masked answer tokens; targets after left padding are excluded. The loss is the mean over target
    tokens. The noise arguments of the diffusion losses' signature are unused. Under data parallelism each rank
    means over its own rows' tokens; rows aligned to position 0 (`left_pad=False`) all hold L - 1 targets, so
    the average over ranks is the whole batch's mean.
    """
    if rows is not None:
        batch = batch.rows(rows)
    L = batch.ids.shape[1]
    if model.block_causal:
        logits = model(batch.ids, batch.pos, pad_mask=batch.valid if batch.padded else None, block_size=1,
                       logits_range=(0, L - 1)).logits                           # [B, L - 1, V]
    elif model.logit_shift:   # the model predicts token i at i - 1 itself: read positions 1..L-1
        idx = torch.arange(L, device=batch.ids.device)
        mask = build_mask(batch.pos, batch.pos, batch.valid if batch.padded else None, 1, idx, idx)  # causal
        logits = model(batch.ids, batch.pos, attn_mask=mask, logits_range=(1, L)).logits   # [B, L - 1, V]
    else:
        raise ValueError("the causal next-token loss needs a block-causal model (block size 1) or a bidirectional "
                         "one with logit_shift (token i predicted at i - 1); an unshifted bidirectional model "
                         "predicts token i at i, and next-token targets would train the opposite alignment")
    scored = batch.valid[:, :-1]                                                 # [B, L - 1] input is a real token
    return F.cross_entropy(logits[scored].float(), batch.ids[:, 1:][scored])


@dataclass(frozen=True)
class CausalBatches:
    """`base` (a diffusion loss) on most batches and the causal next-token loss on a `share` of them, drawn per
    batch with the step's noise generator (a function of (seed, step), so a resumed run replays it).

    Why: a masked-diffusion model converted from an AR start forgets how to compute. On tiny-llada-v2's
    conversion, the AR weights read bidirectionally with every later slot masked predict a GSM step's result 98%
    right; after 2500 steps of whole-answer masking, 37%. With only that slot masked it is 100%: random masks
    nearly always leave another copy of the result visible, so the loss rewards copying it (README). Block
    diffusion keeps the skill by drawing block size 1, the causal pattern, on a share of its batches
    (`DrawnBlockSize`); this is the same idea for bidirectional attention, where causal attention must be forced
    by a mask and the model must predict token i at i - 1 (`logit_shift`), the AR start's own alignment."""
    base: Callable
    share: float

    def __post_init__(self):
        if not 0 < self.share < 1:
            raise ValueError(f"the share of causal batches must be in (0, 1), got {self.share!r}")

    @property
    def __name__(self) -> str:
        return f"{getattr(self.base, '__name__', type(self.base).__name__)}+causal({self.share:g})"

    def __call__(self, model: DiffusionLM, batch: Batch, generator: torch.Generator, t_min: float = 0.1,
                 t_max: float = 1.0, rows: slice | None = None, exact: bool = True) -> Tensor:
        if float(torch.rand(1, generator=generator)) < self.share:
            return next_token_loss(model, batch, rows=rows)
        return self.base(model, batch, generator, t_min, t_max, rows=rows, exact=exact)


OBJECTIVES = {"llada": masked_diffusion_loss, "sdar": block_diffusion_loss}
