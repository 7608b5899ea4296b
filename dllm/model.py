"""`DiffusionLM`: the native transformer plus the family settings the loop needs (ids, attention kind)."""
from __future__ import annotations

import torch
from torch import Tensor

from .cache import BIDIRECTIONAL_MODES, BLOCK_CAUSAL_MODES, KVCache
from .models import ArchConfig, SpecialIds, Transformer
from .protocols import ModelOut


class DiffusionLM(Transformer):
    """A masked-diffusion LM. `model.forward(ids).logits` is [B, L, V] with the family's attention pattern."""

    max_length: int | None = None   # context in positions (config.json, set by dllm.load); None: not checked

    def __init__(self, arch: ArchConfig, family: str, ids: SpecialIds, default_cache: str, name: str = ""):
        super().__init__(arch)
        self.family = family
        self.mask_id, self.pad_id, self.stop_ids = ids.mask_id, ids.pad_id, ids.stop_ids
        self.default_cache = default_cache
        self.name_or_path = name
        self.weights_id = ""              # dllm.load: a content hash of the weight files (evaluation identity)

    @property
    def block_causal(self) -> bool:
        """True: committed blocks never attend forward, so a block KV cache is exact."""
        return self.cfg.block_size is not None

    @property
    def block_size(self) -> int | None:
        return self.cfg.block_size

    @property
    def logit_shift(self) -> bool:
        """True: token i is predicted at position i - 1 (Dream); the forward shifts, so cached forwards feed the
        position before the block (`dllm.runner`)."""
        return self.cfg.logit_shift

    @property
    def kind(self) -> str:
        return "block-causal" if self.block_causal else "bidirectional"

    @property
    def cache_modes(self) -> tuple[str, ...]:
        return BLOCK_CAUSAL_MODES if self.block_causal else BIDIRECTIONAL_MODES

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def forward(self, ids: Tensor, pos: Tensor | None = None, *, pad_mask: Tensor | None = None,
                cache: KVCache | None = None, start: int = 0, write: bool = True,
                logits_range: tuple[int, int] | None = None, need_hidden: bool = False,
                attn_mask: Tensor | None = None, causal_before: Tensor | None = None,
                block_size: int | None = None) -> ModelOut:
        if ids.dim() != 2:
            raise ValueError(f"ids must be [B, L] token ids, got shape {tuple(ids.shape)}")
        if pos is None:
            pos = torch.arange(start, start + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        return super().forward(ids, pos, pad_mask, cache, start, write, logits_range, need_hidden, attn_mask,
                               causal_before, block_size)

    def new_cache(self, batch_size: int, length: int) -> KVCache:
        c = self.cfg
        return KVCache(c.n_layers, batch_size, c.n_kv_heads, length, c.head_dim, self.dtype, self.device)

    def extra_repr(self) -> str:
        return f"family={self.family}, mask_id={self.mask_id}, stop_ids={self.stop_ids}"
