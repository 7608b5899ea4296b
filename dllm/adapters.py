"""`HFAdapter`: drive any transformers model that returns logits (a masked LM, a remote-code dLLM) with dllm's
loop and samplers. The wrapped model is called on the whole canvas every step (cache="none")."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .protocols import ModelOut


class HFAdapter(nn.Module):
    """`HFAdapter(hf_model, mask_id=..., stop_ids=(...,), pad_id=...)`; the model must accept
    input_ids, attention_mask and position_ids and return `.logits` with logits[:, i] predicting token i."""

    block_causal = False
    block_size = None
    cache_modes = ("none",)
    default_cache = "none"
    kind = "wrapped transformers"

    def __init__(self, model: nn.Module, *, mask_id: int, stop_ids: tuple[int, ...] = (), pad_id: int | None = None,
                 vocab_size: int | None = None):
        super().__init__()
        self.model = model
        self.mask_id, self.stop_ids = int(mask_id), tuple(int(t) for t in stop_ids)
        self.pad_id = int(pad_id if pad_id is not None else (self.stop_ids[0] if self.stop_ids else 0))
        self.vocab_size = int(vocab_size or model.config.vocab_size)
        self.max_length = getattr(model.config, "max_position_embeddings", None)   # checked by dllm.generate

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def forward(self, ids: Tensor, pos: Tensor | None = None, *, pad_mask: Tensor | None = None, cache=None,
                start: int = 0, write: bool = True, logits_range: tuple[int, int] | None = None,
                need_hidden: bool = False, attn_mask: Tensor | None = None,
                causal_before: Tensor | None = None) -> ModelOut:
        if cache is not None or start != 0 or attn_mask is not None or causal_before is not None:
            raise ValueError("HFAdapter runs whole-canvas forwards with the wrapped model's own attention only")
        attn = None if pad_mask is None else pad_mask[:, :ids.shape[1]].long()
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=need_hidden)
        lo, hi = logits_range if logits_range is not None else (0, ids.shape[1])
        hidden = out.hidden_states[-1][:, lo:hi] if need_hidden else None
        return ModelOut(logits=out.logits[:, lo:hi], hidden=hidden)
