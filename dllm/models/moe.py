"""Routed-expert MLP of Ling / LLaDA2 (inclusionAI `modeling_llada2_moe.py`: `LLaDA2MoeGate`,
`LLaDA2MoeSparseMoeBlock`): a sigmoid router with group-limited top-k, SwiGLU experts and shared experts.

Routing (DeepSeek-V3-style "aux-loss-free" balancing, arXiv 2412.19437 §2.1.2): the learned `expert_bias` is added
to the sigmoid scores only to *choose* experts; the mixing weights are the unbiased scores of the chosen ones,
renormalised to sum to 1 when top_k > 1, times `routed_scaling_factor`. Experts are first limited to the
`topk_group` best of `n_group` groups, a group scoring the sum of its two best (biased) experts.

The experts run grouped: the (token, expert) pairs are sorted by expert, each expert runs once on its contiguous
slice, and the outputs are put back in token order and mixed. The loop is over experts, never over tokens;
`per_token_reference` is the plain loop it is tested and benchmarked against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MoEConfig:
    n_experts: int          # num_experts
    top_k: int              # num_experts_per_tok
    d_expert: int           # moe_intermediate_size
    n_shared: int           # num_shared_experts (0: none); one SwiGLU of width d_expert * n_shared
    n_group: int            # experts are split into n_group equal groups ...
    topk_group: int         # ... and only the topk_group best groups may be chosen
    scaling: float          # routed_scaling_factor
    first_dense: int        # first_k_dense_replace: layers [0, first_dense) keep the dense MLP


class Router(nn.Module):
    """x [N, D] -> expert ids [N, k] and mixing weights [N, k] (fp32, as the reference's `router_dtype`)."""

    def __init__(self, cfg: MoEConfig, d_model: int):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_experts, d_model))
        self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))   # persistent: it is in the checkpoint

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = self.cfg
        N = x.shape[0]
        scores = torch.sigmoid(x.float() @ self.weight.float().T)            # [N, E]
        biased = scores + self.expert_bias.float()                           # selection only
        groups = biased.view(N, c.n_group, c.n_experts // c.n_group)         # [N, G, E/G] (N may be 0)
        group_score = groups.topk(2, dim=-1).values.sum(-1)                  # [N, G]
        keep = torch.zeros_like(group_score, dtype=torch.bool).scatter(
            1, group_score.topk(c.topk_group, dim=-1).indices, True)
        allowed = keep[:, :, None].expand_as(groups).reshape(N, c.n_experts)   # [N, E]
        idx = biased.masked_fill(~allowed, float("-inf")).topk(c.top_k, dim=-1).indices   # [N, k]
        w = scores.gather(1, idx)                                            # unbiased scores of the chosen
        if c.top_k > 1:                                                      # the reference never reads norm_topk_prob
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return idx, w * c.scaling


class MoE(nn.Module):
    """h [B, S, D] -> [B, S, D]: routed experts plus the shared expert. `mlp(d_model, d_ff)` builds one SwiGLU."""

    def __init__(self, cfg: MoEConfig, d_model: int, mlp: Callable[[int, int], nn.Module]):
        super().__init__()
        self.cfg = cfg
        self.router = Router(cfg, d_model)
        self.experts = nn.ModuleList(mlp(d_model, cfg.d_expert) for _ in range(cfg.n_experts))
        self.shared = mlp(d_model, cfg.d_expert * cfg.n_shared) if cfg.n_shared else None

    def forward(self, h: Tensor) -> Tensor:
        x = h.reshape(-1, h.shape[-1])                                       # [N, D]
        idx, w = self.router(x)                                              # [N, k]
        y = self.routed(x, idx, w)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(h.shape)

    def routed(self, x: Tensor, idx: Tensor, w: Tensor) -> Tensor:
        """Tokens grouped by expert: x [N, D], idx/w [N, k] -> sum_j w[:, j] * expert_idx[:, j](x)  [N, D]."""
        N, k = idx.shape
        flat = idx.reshape(-1)                                               # [N*k] pair -> expert
        order = flat.argsort(stable=True)                                    # pairs sorted by expert
        # one host sync per MoE layer: the slice bounds (the reference's `tokens_per_expert.cpu()`)
        counts = torch.bincount(flat, minlength=self.cfg.n_experts).tolist()
        xs = x[order // k]                                                   # [N*k, D] contiguous per expert
        out = torch.empty_like(xs)
        start = 0
        for e, n in enumerate(counts):
            if n:
                out[start:start + n] = self.experts[e](xs[start:start + n])
                start += n
        pairs = torch.empty_like(out)
        pairs[order] = out                                                   # back to token-major pairs
        # mix in fp32 and sum over k in a fixed order: deterministic, no scatter-add atomics
        return (pairs.view(N, k, x.shape[1]).float() * w[..., None]).sum(1).to(x.dtype)


def per_token_reference(moe: MoE, h: Tensor) -> Tensor:
    """The same MoE as a Python loop over tokens and their experts (slow; for tests and `dllm-bench`)."""
    x = h.reshape(-1, h.shape[-1])
    idx, w = moe.router(x)
    rows = []
    for t in range(x.shape[0]):
        acc = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
        for j in range(idx.shape[1]):
            acc = acc + w[t, j] * moe.experts[int(idx[t, j])](x[t:t + 1])[0].float()
        rows.append(acc.to(x.dtype))
    y = torch.stack(rows)
    if moe.shared is not None:
        y = y + moe.shared(x)
    return y.view(h.shape)
