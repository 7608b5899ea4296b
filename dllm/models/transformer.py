"""One pre-norm transformer for every family: RMSNorm, RoPE, GQA attention (optional per-head q/k norm), SwiGLU.

Families (`llada.py`, `sdar.py`, `dream.py`, `llada2.py`) only translate their config keys and weight names into
`ArchConfig` and these module names; the attention pattern comes from `ArchConfig.block_size` (None = bidirectional),
the logit shift from `ArchConfig.logit_shift`. Ling (LLaDA2) adds three options: a fused `[H | KV | KV]` projection,
partial RoPE and routed experts (`moe.py`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import attend, build_mask, check_attention, to_flex
from ..cache import KVCache
from ..protocols import ModelOut
from .moe import MoE, MoEConfig


@dataclass(frozen=True)
class ArchConfig:
    vocab_size: int            # rows of the embedding and the LM head
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rope_theta: float
    norm_eps: float
    qk_norm: bool              # per-head RMSNorm on q and k before RoPE (Qwen3 / SDAR)
    tie_embeddings: bool
    block_size: int | None     # None: bidirectional; k: block-causal, blocks of k aligned to position 0
    qkv_bias: bool = False     # biases on the q/k/v projections (Qwen2 / Dream; o_proj never has one)
    logit_shift: bool = False  # the hidden state at i - 1 predicts token i (Dream, adapted from an AR model)
    rotary_dim: int | None = None   # RoPE on the first rotary_dim dims of each head, the rest pass (None: all)
    fused_qkv: bool = False    # one projection whose heads split contiguously [H | KV | KV] (Ling `query_key_value`)
    moe: MoEConfig | None = None    # routed experts in layers >= moe.first_dense (Ling MoE)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32, cast back, then scale (same order as LLaDA's RMSLayerNorm and Qwen3RMSNorm)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(pos: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin [B, 1, S, hd] in fp32 for position ids pos [B, S] (non-interleaved halves, `rotate_half`)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim))
    freqs = pos[..., None].float() * inv_freq                     # [B, S, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]              # [B, 1, S, hd]
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # in fp32 (LLaDA `rope_full_precision`; SDAR computes cos/sin in fp32 too), then back to the model dtype
    rd = cos.shape[-1]
    if rd < x.shape[-1]:   # partial RoPE (Ling): rotate_half over the first rd dims, the rest unchanged
        return torch.cat((apply_rope(x[..., :rd], cos, sin), x[..., rd:]), dim=-1)
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        if cfg.fused_qkv:
            self.qkv = nn.Linear(cfg.d_model, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd, bias=cfg.qkv_bias)
        else:
            self.q = nn.Linear(cfg.d_model, cfg.n_heads * hd, bias=cfg.qkv_bias)
            self.k = nn.Linear(cfg.d_model, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
            self.v = nn.Linear(cfg.d_model, cfg.n_kv_heads * hd, bias=cfg.qkv_bias)
        self.o = nn.Linear(cfg.n_heads * hd, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: KVCache | None, layer: int, start: int, kv_end: int, write: bool,
                queries: slice = slice(None)) -> Tensor:
        """h [B, S, d] -> [B, Sq, d] for the fed positions `queries` (every fed position gives keys and values)."""
        B, S, _ = h.shape
        hd = self.cfg.head_dim
        hq = h[:, queries]
        Sq = hq.shape[1]
        if self.cfg.fused_qkv:
            H, KV = self.cfg.n_heads, self.cfg.n_kv_heads
            q, k, v = self.qkv(h).view(B, S, H + 2 * KV, hd).split([H, KV, KV], dim=2)
            q, k, v = q[:, queries].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        else:
            q = self.q(hq).view(B, Sq, self.cfg.n_heads, hd).transpose(1, 2)   # [B, Hq, Sq, hd] (Sq may be 0)
            k = self.k(h).view(B, S, -1, hd).transpose(1, 2)      # [B, Hkv, S, hd]
            v = self.v(h).view(B, S, -1, hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, cos[:, :, queries], sin[:, :, queries])
        k = apply_rope(k, cos, sin)                               # keys are cached after RoPE
        if cache is not None:
            k, v = cache.update(layer, start, k, v, kv_end, write)  # [B, Hkv, kv_end, hd]
        if mask is not None and queries != slice(None):
            mask = mask[:, :, queries]                            # rows of the kept queries (dense masks only)
        out = attend(q, k, v, mask)                               # [B, Hq, Sq, hd]
        return self.o(out.transpose(1, 2).reshape(B, Sq, self.cfg.n_heads * hd))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(h)) * self.up(h))


class Layer(nn.Module):
    def __init__(self, cfg: ArchConfig, index: int = 0):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        moe = cfg.moe is not None and index >= cfg.moe.first_dense
        self.mlp = MoE(cfg.moe, cfg.d_model, MLP) if moe else MLP(cfg.d_model, cfg.d_ff)

    def forward(self, h, cos, sin, mask, cache, layer, start, kv_end, write, queries: slice = slice(None)):
        """h [B, S, d] -> [B, Sq, d]: the residual stream of the positions `queries` only."""
        h_q = h[:, queries]
        h_q = h_q + self.attn(self.attn_norm(h), cos, sin, mask, cache, layer, start, kv_end, write, queries)
        return h_q + self.mlp(self.mlp_norm(h_q))


class Transformer(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._attention = "sdpa"

    @property
    def attention(self) -> str:
        """"sdpa" (default) or "flex": masked forwards through flex-attention (`dllm.attention.to_flex`)."""
        return self._attention

    @attention.setter
    def attention(self, name: str) -> None:
        self._attention = check_attention(name)

    def forward(self, ids: Tensor, pos: Tensor, pad_mask: Tensor | None = None, cache: KVCache | None = None,
                start: int = 0, write: bool = True, logits_range: tuple[int, int] | None = None,
                need_hidden: bool = False, attn_mask: Tensor | None = None,
                causal_before: Tensor | None = None, block_size: int | None = None) -> ModelOut:
        """ids, pos [B, S] at canvas positions [start, start + S); pad_mask [B, >= kv_end] (None: no padding).

        With a cache, the fed keys are written at their absolute positions (unless write=False) and the
        queries attend to cache[0:kv_end): kv_end = start + S for block-causal models (nothing later is
        visible), the whole cache for bidirectional ones. logits_range (lo, hi) limits the LM head to fed
        positions [lo, hi) (None: all). attn_mask [B, 1, S, S] bool replaces the family pattern (no cache):
        training layouts such as BD3-LM's [x_t ; x_0] build their own. causal_before [B] (block-causal only):
        positions before it attend causally, one block per token (S2D2's AR-like cache). block_size (block-causal
        only) replaces the config's for this forward: 1 is causal attention, the pattern of AR pretraining and of
        S2D2's verifier (`dllm.distill.ar`).
        """
        B, S = ids.shape
        bs = self._block_size(block_size)
        q_index = torch.arange(start, start + S, device=ids.device)
        if cache is None:
            kv_end, k_pos, k_index = S, pos, q_index
        else:
            kv_end = start + S if bs is not None else cache.length
            k_pos = cache.positions(start, pos, kv_end, write)    # [B, kv_end]
            k_index = torch.arange(kv_end, device=ids.device)
        k_valid = None if pad_mask is None else pad_mask[:, :kv_end]
        if attn_mask is not None:
            mask = attn_mask
        elif self._one_block_on_cache(bs, cache, pad_mask, causal_before, start, S):
            mask = None     # the pattern allows every key: SDPA's (and flash-attn's) mask-free kernels apply
        else:
            mask = build_mask(pos, k_pos, k_valid, bs, q_index, k_index, causal_before)
        cos, sin = rope_tables(pos, self.cfg.rotary_dim or self.cfg.head_dim, self.cfg.rope_theta)
        flex = mask is not None and self._attention == "flex"
        if flex:
            mask = to_flex(mask)
        h = self.embed(ids)
        # the last layer's keys and values come from every fed position, but its queries, attention output and
        # MLP are needed only where logits are read: BD3-LM's clean half and a full-canvas forward's
        # non-block positions skip them (a flex BlockMask is not sliced by rows: flex keeps every query)
        rows, own_first = self._logit_rows(logits_range, start, S)
        last = slice(None) if flex else rows
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, cache, i, start, kv_end, write,
                      last if i == len(self.layers) - 1 else slice(None))
        if flex:
            h = h[:, rows]
        if own_first:   # the canvas's first position keeps its own row (Dream's generation_utils.py shift)
            hi = S if logits_range is None else logits_range[1]
            h = torch.cat((h[:, :1], h[:, :hi - 1]), dim=1)
        h = self.norm(h)
        logits = h @ self.embed.weight.T if self.head is None else self.head(h)
        return ModelOut(logits=logits, hidden=h if need_hidden else None)

    def _block_size(self, block_size: int | None) -> int | None:
        if block_size is None:
            return self.cfg.block_size
        if self.cfg.block_size is None:
            raise ValueError(f"block_size={block_size} overrides a block-causal pattern; this model is bidirectional")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        return block_size

    def _logit_rows(self, logits_range: tuple[int, int] | None, start: int, S: int) -> tuple[slice, bool]:
        """The fed rows whose final hidden states give the logits of fed positions [lo, hi), and whether the
        first of them is position 0 predicting itself. Without a shift: [lo, hi). With one (Dream predicts token
        i from the hidden state at i - 1; DreamLM/Dream issue #31): [lo - 1, hi - 1), so every caller still gets
        logits[:, i] predicting token i; position 0 of the canvas keeps its own row, as Dream's generation code
        does. A cached forward must therefore feed the position before its first predicted one."""
        if not self.cfg.logit_shift:
            return (slice(None) if logits_range is None else slice(*logits_range)), False
        lo, hi = logits_range if logits_range is not None else (0, S)
        if lo > 0 or hi == lo:
            return slice(max(lo - 1, 0), max(hi - 1, 0)), False
        if start > 0:
            raise ValueError(f"this family shifts its logits (token i is predicted at position i - 1): a forward "
                             f"starting at canvas position {start} must also feed position {start - 1} and "
                             "read logits from fed index 1 (logits_range)")
        return slice(0, max(hi - 1, 1)), True

    def _one_block_on_cache(self, bs: int | None, cache: KVCache | None, pad_mask: Tensor | None,
                            causal_before: Tensor | None, start: int, S: int) -> bool:
        """A block-causal forward that feeds one aligned block against the cache, with no padding: every key in
        [0, start + S) sits in the query block or before it, so the block-causal mask is all True. This is every
        cached denoising step but a block's first, the hot path of SDAR decoding. Decided from host ints only
        (no sync): without padding, position ids are canvas indices (`dllm.layout`)."""
        return (bs is not None and cache is not None and pad_mask is None and causal_before is None
                and start // bs == (start + S - 1) // bs)
