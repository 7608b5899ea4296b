"""Attention masks and the attention call (SDPA everywhere; flash-attn when installed and the shapes allow;
flex-attention on request).

Masks are built once per forward from *position ids* (not canvas indices), so the family's pattern holds per
row under any left padding: bidirectional (LLaDA) or block-causal aligned to position 0 (SDAR:
`allowed[q, k] = k // bs <= q // bs`, JetAstra/SDAR `generate.py`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional: `pip install dllm[gpu]`; the import is guarded so CPU machines never need it
    from flash_attn import flash_attn_func
except Exception:  # ImportError, or a broken CUDA build
    flash_attn_func = None

try:  # torch >= 2.5; guarded like flash-attn so an older or stripped torch still imports dllm
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except Exception:
    BlockMask = create_block_mask = flex_attention = None

ATTENTION = ("sdpa", "flex")     # `model.attention`: the kernel family for masked forwards
_compiled_flex = None


def check_attention(name: str) -> str:
    if name not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {name!r}")
    return name


def block_ids(pos: Tensor, block_size: int, causal_before: Tensor | None) -> Tensor:
    """Attention block of each position: pos // block_size, or one block per position before `causal_before`
    ([B] position ids; S2D2's AR-like cache, arXiv 2603.25702). Monotone, so `k_id <= q_id` is the pattern."""
    ids = pos // block_size
    if causal_before is None:
        return ids
    cb = causal_before[:, None]
    return torch.where(pos < cb, pos, cb + ids - cb // block_size)


def build_mask(q_pos: Tensor, k_pos: Tensor, k_valid: Tensor | None, block_size: int | None,
               q_index: Tensor, k_index: Tensor, causal_before: Tensor | None = None) -> Tensor | None:
    """Boolean attention mask [B, 1, Sq, Sk] (True = may attend), or None when everything is allowed.

    q_pos [B, Sq], k_pos [B, Sk]: position ids; k_valid [B, Sk]: key is a real token (not padding);
    q_index [Sq], k_index [Sk]: canvas indices, used only to let padding queries see themselves so no row is
    fully masked (a fully masked row gives NaN in CUDA SDPA kernels); causal_before [B]: see `block_ids`.
    """
    allowed = None
    if block_size is not None:
        allowed = block_ids(k_pos, block_size, causal_before)[:, None, :] <= \
            block_ids(q_pos, block_size, causal_before)[:, :, None]                     # [B, Sq, Sk]
    if k_valid is not None:  # callers pass None when no row is padded (no host sync here)
        valid = k_valid[:, None, :].expand(-1, q_pos.shape[1], -1)
        allowed = valid if allowed is None else allowed & valid
        allowed = allowed | (q_index[:, None] == k_index[None, :])
    return None if allowed is None else allowed[:, None]


def verifier_mask(prefix_valid: Tensor, S: int) -> Tensor:
    """Keys [prefix | drafts | masks], queries [drafts | masks]: the 2L verifier of S2D2 (arXiv 2603.25702).

    Draft slot i sees the prefix and drafts j <= i (causal); mask slot i sees the prefix, drafts j < i and itself,
    so it predicts slot i autoregressively from the drafts to its left in one forward. prefix_valid [B, P]
    (padding is never visible) -> [B, 1, 2S, P + 2S].
    """
    B, P = prefix_valid.shape
    i = torch.arange(S, device=prefix_valid.device)
    causal = i[None, :] <= i[:, None]
    none = torch.zeros(S, S, dtype=torch.bool, device=prefix_valid.device)
    block = torch.cat((torch.cat((causal, none), 1),
                       torch.cat((i[None, :] < i[:, None], torch.eye(S, dtype=torch.bool, device=i.device)), 1)), 0)
    prefix = prefix_valid[:, None, :].expand(B, 2 * S, P)
    return torch.cat((prefix, block[None].expand(B, -1, -1)), 2)[:, None]


def to_flex(mask: Tensor) -> "BlockMask":
    """A dense bool mask [B or 1, 1, Sq, Sk] as flex-attention's `BlockMask`: tiles with no allowed pair are
    skipped by the kernel, so a block-causal or BD3-LM pattern costs about the work of its allowed part
    (flex-attention, arXiv 2412.05496), where SDPA with a mask computes every score. Built once per forward
    and shared by the layers."""
    if flex_attention is None:
        raise RuntimeError("attention='flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
    dense = mask[:, 0]                                                    # [B or 1, Sq, Sk]

    def allowed(b, h, q, k):
        return dense[b, q, k]

    return create_block_mask(allowed, dense.shape[0], None, dense.shape[1], dense.shape[2], device=mask.device)


def flex(q: Tensor, k: Tensor, v: Tensor, mask: "BlockMask") -> Tensor:
    """Compiled on CUDA (flex-attention's fused kernel exists only compiled); eager elsewhere, which is the
    reference implementation the CPU tests compare against SDPA."""
    global _compiled_flex
    fn = flex_attention
    if q.is_cuda:
        _compiled_flex = _compiled_flex or torch.compile(flex_attention, dynamic=True)
        fn = _compiled_flex
    return fn(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def attend(q: Tensor, k: Tensor, v: Tensor, mask: "Tensor | BlockMask | None") -> Tensor:
    """q [B, Hq, Sq, hd], k/v [B, Hkv, Sk, hd] -> [B, Hq, Sq, hd]; grouped-query heads are shared."""
    if BlockMask is not None and isinstance(mask, BlockMask):
        return flex(q, k, v, mask)
    if flash_attn_func is not None and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=False)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
