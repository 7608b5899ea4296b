"""Applies a cache policy for one generation: which canvas range each model call feeds and writes; counts nfe.

* `none`: every call forwards the whole canvas (the reference behaviour of ML-GSAI/LLaDA `generate.py`).
* `block` (block-causal, exact): K/V in `[0, clean)` always hold final tokens. Before a block's first step the
  finished region `[clean, start)` is committed by its own forward (JetAstra/SDAR's extra `store_kv` pass,
  also serving as the prompt prefill), then each step forwards the block alone against the cache.
* `block_fused` (ours): the commit rides along with the first denoising forward of the next block: it feeds
  `[clean, end)`, so clean K/V for the finished region and the next block's logits come from one call,
  saving one forward per block (and the separate prefill). Exact, because later positions are invisible
  to earlier ones in a block-causal model.
* `prefix` / `dual` (bidirectional, approximate; Fast-dLLM arXiv 2505.22618 §3.1-3.2): a refresh forwards
  the whole canvas and rewrites every position at block start (and every `refresh_every` steps); other steps
  feed `[start, L)` (prefix) or only the block (dual) against the stored keys.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import Tensor

from .cache import CachePolicy
from .layout import Layout
from .model import DiffusionLM
from .protocols import Block, Forward, ModelOut


class BlockRunner:
    def __init__(self, model: DiffusionLM, policy: CachePolicy, layout: Layout):
        self.model, self.mode, self.refresh_every = model, policy.mode, policy.refresh_every
        B, L = layout.x.shape
        self.length = L
        self.padded = layout.padded
        self.cache = None if self.mode == "none" else model.new_cache(B, L)
        self.clean = 0                    # block-causal modes: cache K/V of [0, clean) hold final tokens
        self.calls: Counter[str] = Counter()
        self.row_forwards = 0             # sum of batch rows over calls: the compute finished rows stop costing
        self.tokens_evaluated = 0         # positions fed over all calls (drafts multiply it)

    @property
    def nfe(self) -> int:
        return sum(self.calls.values())

    def select(self, rows: Tensor) -> None:
        if self.cache is not None:
            self.cache.select(rows)

    def _call(self, kind: str, ids: Tensor, pos: Tensor, pad: Tensor | None, start: int, lo: int, hi: int,
              write: bool = True, need_hidden: bool = False) -> ModelOut:
        self.calls[kind] += 1
        self.row_forwards += ids.shape[0]
        self.tokens_evaluated += ids.numel()
        return self.model(ids, pos, pad_mask=pad, cache=self.cache, start=start, write=write,
                          logits_range=(lo, hi), need_hidden=need_hidden)

    def refresh_due(self, step: int) -> bool:
        """Whether this step of a block must run the policy's own forward (a carried result cannot stand in)."""
        if self.mode in ("prefix", "dual"):
            return step == 0 or (self.refresh_every is not None and step % self.refresh_every == 0)
        return step == 0

    def block_logits(self, x: Tensor, valid: Tensor, pos: Tensor, block: Block, step: int,
                     need_hidden: bool = False) -> ModelOut:
        """Logits [B, S, V] for the block x[:, start:end] under the policy."""
        s, e = block.start, block.end
        pad = valid if self.padded else None
        if self.mode == "none":
            return self._call("denoise", x, pos, pad, 0, s, e, need_hidden=need_hidden)
        if self.mode in ("block", "block_fused"):
            c = self.clean
            if c < s and self.mode == "block":
                self._call("commit", x[:, c:s], pos[:, c:s], pad, c, 0, 0)   # no logits needed
                c = s
            self.clean = s
            return self._call("denoise", x[:, c:e], pos[:, c:e], pad, c, s - c, e - c, need_hidden=need_hidden)
        if self.refresh_due(step):
            return self._call("refresh", x, pos, pad, 0, s, e, need_hidden=need_hidden)
        hi = self.length if self.mode == "prefix" else e
        return self._call("denoise", x[:, s:hi], pos[:, s:hi], pad, s, 0, e - s, need_hidden=need_hidden)

    def extra(self, x: Tensor, valid: Tensor, pos: Tensor, block: Block) -> Forward:
        """The handle samplers use for draft/verify passes: nothing is written to the cache."""
        s, e = block.start, block.end

        def forward(block_ids: Tensor, *, need_hidden: bool = False) -> ModelOut:
            rep = block_ids.shape[0] // x.shape[0]
            if block_ids.shape[0] != rep * x.shape[0] or block_ids.shape[1] != e - s:
                raise ValueError(f"extra forward expects [k*B, {e - s}] block ids, got {tuple(block_ids.shape)}")
            xr, pr = x.repeat_interleave(rep, 0), pos.repeat_interleave(rep, 0)
            pad = valid.repeat_interleave(rep, 0) if self.padded else None
            if self.mode == "none":
                xr = torch.cat((xr[:, :s], block_ids, xr[:, e:]), dim=1)
                return self._call("extra", xr, pr, pad, 0, s, e, need_hidden=need_hidden)
            hi = self.length if self.mode == "prefix" else e
            ids = torch.cat((block_ids, xr[:, e:hi]), dim=1)
            return self._call("extra", ids, pr[:, s:hi], pad, s, 0, e - s, write=False, need_hidden=need_hidden)

        return forward
