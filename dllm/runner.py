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

A family that shifts its logits (Dream: token i is predicted at position i - 1) has every cached forward start
one position earlier, so the block's first slot gets its prediction from the same forward as the rest; Fast-dLLM's
Dream code instead commits that slot from the refresh forward, which this design does not need.
"""
from __future__ import annotations

import time
import weakref
from collections import Counter

import torch
from torch import Tensor

from .attention import build_mask, verifier_mask
from .cache import CachePolicy
from .layout import Layout
from .model import DiffusionLM
from .protocols import Block, ModelOut


_COMPILED: "weakref.WeakKeyDictionary[DiffusionLM, dict[str, object]]" = weakref.WeakKeyDictionary()


def compiled(model: DiffusionLM, compile: bool | str) -> DiffusionLM:
    """The forward to call: `model` itself when compile is False, else `torch.compile(model)` built once per
    (model, backend); True is inductor, a string names the backend. dynamic=True: the batch shrinks as rows
    finish and the fed span changes with the cache mode, which would otherwise recompile on every new shape.
    "inductor" (fused kernels) is the GPU choice; "cudagraphs" replays captured graphs; "eager" only traces."""
    if not compile:
        return model
    backend = "inductor" if compile is True else compile
    per_model = _COMPILED.setdefault(model, {})
    if backend not in per_model:
        per_model[backend] = torch.compile(model, dynamic=True, backend=backend)
    return per_model[backend]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BlockRunner:
    """`ar_cache` (block-causal models, S2D2's `cache_ver`): everything before the current block is attended
    causally, one block per token, so committed K/V are what the autoregressive verifier expects."""

    def __init__(self, model: DiffusionLM, policy: CachePolicy, layout: Layout, ar_cache: bool = False,
                 timing: bool = False, compile: bool | str = False):
        if getattr(model, "logit_shift", False) and model.block_causal:
            raise ValueError("the block caches do not feed the position before a block: a block-causal family "
                             "with shifted logits is not supported")
        if ar_cache and not model.block_causal:
            raise ValueError("an AR-like cache (ar_cache) needs a block-causal model")
        self.model, self.mode, self.refresh_every, self.ar_cache = model, policy.mode, policy.refresh_every, ar_cache
        # the model call of every step, optionally compiled (`compile=True` is inductor; a string names a backend)
        self.forward = compiled(model, compile)
        B, L = layout.x.shape
        self.length = L
        self.padded = layout.padded
        self.cache = None if self.mode == "none" else model.new_cache(B, L)
        self.clean = 0                    # block-causal modes: cache K/V of [0, clean) hold final tokens
        self.shift = int(getattr(model, "logit_shift", False))   # positions fed before the block (see above)
        self.calls: Counter[str] = Counter()
        self.row_forwards = 0             # sum of batch rows over calls: the compute finished rows stop costing
        self.tokens_evaluated = 0         # positions fed over all calls (drafts multiply it)
        self.timing = timing              # measure the wall time inside model calls (syncs the GPU around each)
        self.forward_seconds = 0.0

    @property
    def nfe(self) -> int:
        return sum(self.calls.values())

    def select(self, rows: Tensor) -> None:
        if self.cache is not None:
            self.cache.select(rows)

    def _call(self, kind: str, ids: Tensor, pos: Tensor, pad: Tensor | None, start: int, lo: int, hi: int,
              write: bool = True, need_hidden: bool = False, causal_before: Tensor | None = None,
              attn_mask: Tensor | None = None, cache: bool = True) -> ModelOut:
        self.calls[kind] += 1
        self.row_forwards += ids.shape[0]
        self.tokens_evaluated += ids.numel()
        if self.timing:
            sync(ids.device)
            t0 = time.perf_counter()
        out = self.forward(ids, pos, pad_mask=pad, cache=self.cache if cache else None, start=start, write=write,
                         logits_range=(lo, hi), need_hidden=need_hidden, causal_before=causal_before,
                         attn_mask=attn_mask)
        if self.timing:
            sync(ids.device)
            self.forward_seconds += time.perf_counter() - t0
        return out

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
        cb = pos[:, s] if self.ar_cache else None
        if self.mode == "none":
            return self._call("denoise", x, pos, pad, 0, s, e, need_hidden=need_hidden, causal_before=cb)
        if self.mode in ("block", "block_fused"):
            c = self.clean
            if c < s and self.mode == "block":
                self._call("commit", x[:, c:s], pos[:, c:s], pad, c, 0, 0, causal_before=cb)   # no logits needed
                c = s
            self.clean = s
            return self._call("denoise", x[:, c:e], pos[:, c:e], pad, c, s - c, e - c, need_hidden=need_hidden,
                              causal_before=cb)
        if self.refresh_due(step):
            return self._call("refresh", x, pos, pad, 0, s, e, need_hidden=need_hidden)
        hi, a = self.length if self.mode == "prefix" else e, s - self.shift
        return self._call("denoise", x[:, a:hi], pos[:, a:hi], pad, a, s - a, e - a, need_hidden=need_hidden)

    def extra(self, x: Tensor, valid: Tensor, pos: Tensor, block: Block) -> "ExtraForward":
        return ExtraForward(self, x, valid, pos, block)


class ExtraForward:
    """The handle samplers use for draft/verify passes (`Forward` in dllm.protocols): nothing is written to the
    cache; block ids [k*B, S] are k candidates per row, row-major (each row's candidates adjacent)."""

    def __init__(self, runner: BlockRunner, x: Tensor, valid: Tensor, pos: Tensor, block: Block):
        self.runner, self.x, self.valid, self.pos, self.block = runner, x, valid, pos, block

    def _expand(self, block_ids: Tensor):
        s, e = self.block.start, self.block.end
        rep = block_ids.shape[0] // self.x.shape[0]
        if block_ids.shape[0] != rep * self.x.shape[0] or block_ids.shape[1] != e - s:
            raise ValueError(f"extra forward expects [k*B, {e - s}] block ids, got {tuple(block_ids.shape)}")
        pad = self.valid.repeat_interleave(rep, 0) if self.runner.padded else None
        return self.x.repeat_interleave(rep, 0), self.pos.repeat_interleave(rep, 0), pad

    def __call__(self, block_ids: Tensor, *, need_hidden: bool = False) -> ModelOut:
        r, (s, e) = self.runner, (self.block.start, self.block.end)
        xr, pr, pad = self._expand(block_ids)
        cb = pr[:, s] if r.ar_cache else None
        if r.mode == "none":
            xr = torch.cat((xr[:, :s], block_ids, xr[:, e:]), dim=1)
            return r._call("extra", xr, pr, pad, 0, s, e, need_hidden=need_hidden, causal_before=cb)
        hi, a = r.length if r.mode == "prefix" else e, s - r.shift
        ids = torch.cat((xr[:, a:s], block_ids, xr[:, e:hi]), dim=1)
        return r._call("extra", ids, pr[:, a:hi], pad, a, s - a, e - a, write=False, need_hidden=need_hidden,
                       causal_before=cb)

    def autoregressive(self, block_ids: Tensor) -> ModelOut:
        """Logits [k*B, S, V] predicting each slot from the slots to its left only (the model with block size 1,
        S2D2's verifier): one forward over [drafts | masks] with the 2L mask of `verifier_mask`."""
        r, (s, e) = self.runner, (self.block.start, self.block.end)
        if not r.model.block_causal:
            raise ValueError("autoregressive verification needs a block-causal model (block size 1 is AR)")
        xr, pr, pad = self._expand(block_ids)
        S = e - s
        ids = torch.cat((block_ids, torch.full_like(block_ids, r.model.mask_id)), dim=1)     # [B', 2S]
        pos2 = torch.cat((pr[:, s:e], pr[:, s:e]), dim=1)
        prefix_valid = pad[:, :s] if pad is not None else torch.ones_like(xr[:, :s], dtype=torch.bool)
        vmask = verifier_mask(prefix_valid, S)                                               # [B', 1, 2S, s+2S]
        if r.mode != "none":
            return r._call("extra", ids, pos2, pad, s, S, 2 * S, write=False, attn_mask=vmask)
        # no cache: the prefix is recomputed in the same forward with its own (block-causal or AR-like) pattern
        cb = pr[:, s] if r.ar_cache else None
        idx = torch.arange(s, device=xr.device)
        head = build_mask(pr[:, :s], pr[:, :s], pad[:, :s] if pad is not None else None, r.model.block_size,
                          idx, idx, cb)
        head = torch.cat((head, torch.zeros_like(head[..., :1]).expand(-1, -1, -1, 2 * S)), dim=3)
        full = torch.cat((head, vmask), dim=2)                                               # [B', 1, s+2S, s+2S]
        return r._call("extra", torch.cat((xr[:, :s], ids), 1), torch.cat((pr[:, :s], pos2), 1), None, 0,
                       s + S, s + 2 * S, attn_mask=full, cache=False)
