"""KV cache storage (preallocated, written by absolute canvas position) and the cache policy names.

The cache stores; it does not decide. Which positions are written when is the loop's policy
(`dllm/runner.py`): an exact block cache for block-causal models, Fast-dLLM's prefix and dual caches
(arXiv 2505.22618 §3.1-3.2) for bidirectional ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("none", "block", "block_fused", "prefix", "dual")
BLOCK_CAUSAL_MODES = ("none", "block", "block_fused")
BIDIRECTIONAL_MODES = ("none", "prefix", "dual")


class KVCache:
    """k, v [n_layers, B, H_kv, L, hd] and key position ids [B, L], allocated once per generation."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, length: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (n_layers, batch, n_kv_heads, length, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = torch.zeros(batch, length, dtype=torch.long, device=device)

    @property
    def length(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def positions(self, start: int, pos: Tensor, kv_end: int, write: bool) -> Tensor:
        """Key position ids [B', kv_end] once pos [B', S] is placed at [start, start + S)."""
        S = pos.shape[1]
        if write:
            self.pos[:, start:start + S] = pos
            return self.pos[:, :kv_end]
        rep = pos.shape[0] // self.batch
        return torch.cat((self.pos[:, :start].repeat_interleave(rep, 0), pos,
                          self.pos[:, start + S:kv_end].repeat_interleave(rep, 0)), dim=1)

    def update(self, layer: int, start: int, k: Tensor, v: Tensor, kv_end: int, write: bool) -> tuple[Tensor, Tensor]:
        """Place k, v [B', H_kv, S, hd] at [start, start + S) and return keys/values [B', H_kv, kv_end, hd].

        write=False (draft/verify passes) leaves the storage untouched and returns a spliced copy; B' may
        then be a multiple of the cache batch (row-major repeats of each row, for batched drafts).
        """
        S = k.shape[2]
        if write:
            self.k[layer, :, :, start:start + S] = k
            self.v[layer, :, :, start:start + S] = v
            return self.k[layer, :, :, :kv_end], self.v[layer, :, :, :kv_end]
        rep = k.shape[0] // self.batch

        def splice(buf: Tensor, new: Tensor) -> Tensor:
            return torch.cat((buf[:, :, :start].repeat_interleave(rep, 0), new,
                              buf[:, :, start + S:kv_end].repeat_interleave(rep, 0)), dim=2)

        return splice(self.k[layer], k), splice(self.v[layer], v)

    def select(self, rows: Tensor) -> None:
        """Keep only these batch rows (finished rows are dropped; HF `batch_select_indices`)."""
        self.k, self.v, self.pos = self.k[:, rows], self.v[:, rows], self.pos[rows]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2 + self.pos.numel() * 8


@dataclass(frozen=True)
class CachePolicy:
    mode: str = "auto"                 # none | block | block_fused | prefix | dual | auto
    refresh_every: int | None = None   # prefix/dual: also refresh every k steps inside a block (None: block start only)

    def resolve(self, allowed: tuple[str, ...], default: str, kind: str) -> "CachePolicy":
        """The concrete policy for a model; a mode the model cannot use is a clear ValueError."""
        mode = default if self.mode == "auto" else self.mode
        if mode not in MODES:
            raise ValueError(f"unknown cache mode {self.mode!r}; choose one of {MODES + ('auto',)}")
        if mode not in allowed:
            raise ValueError(f"cache mode {mode!r} does not apply to a {kind} model; use one of {allowed} or 'auto'")
        if self.refresh_every is not None:
            if mode not in ("prefix", "dual"):
                raise ValueError(f"refresh_every applies to the prefix/dual caches, not to cache={mode!r}")
            if self.refresh_every < 1:
                raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")
        return CachePolicy(mode, self.refresh_every)


def as_policy(cache: "str | CachePolicy", refresh_every: int | None = None) -> CachePolicy:
    if isinstance(cache, CachePolicy):
        return cache
    if not isinstance(cache, str):
        raise ValueError(f"cache must be a mode name or a CachePolicy, got {type(cache).__name__}")
    return CachePolicy(cache.replace("-", "_"), refresh_every)
