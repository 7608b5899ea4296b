"""Batched helpers shared by every sampler: candidates, confidences, top-k with per-row k.

Conventions (samplers.md §0, ML-GSAI/LLaDA `generate.py`): the candidate is argmax of the logits at
temperature 0, a Gumbel-max sample in float64 otherwise; the confidence is the *untempered* softmax
probability of the candidate, computed in float64 as the reference does.
"""
from __future__ import annotations

import torch
from torch import Tensor

from dllm.checks import check_arg  # noqa: F401  (the samplers' argument check; one implementation in dllm)

NEG_INF = float("-inf")


def candidates(logits: Tensor, temperature: float, generator: torch.Generator, mask_id: int | None = None) -> Tensor:
    """[B, S, V] -> [B, S] proposed ids. T > 0: argmax(l - T*log(-log u)), i.e. a sample of softmax(l / T)
    (the log form of LLaDA's `exp(l) / (-log u)^T`, without its overflow). The mask id is never proposed
    (dInfer's threshold decoder excludes it too): an untrained or tied head can rank it first."""
    if temperature == 0:
        if mask_id is None:
            return logits.argmax(-1)
        top2 = logits.topk(2, dim=-1).indices                    # cheaper than copying [B, S, V] to mask it
        return torch.where(top2[..., 0] == mask_id, top2[..., 1], top2[..., 0])
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    noisy = logits.double() - temperature * torch.log(-torch.log(u))
    if mask_id is not None:
        noisy[..., mask_id] = float("-inf")
    return noisy.argmax(-1)


def confidence(logits: Tensor, tokens: Tensor) -> Tensor:
    """[B, S] float64 probability of `tokens` under softmax(logits)."""
    chosen = logits.gather(-1, tokens[..., None]).squeeze(-1).double()
    return torch.exp(chosen - torch.logsumexp(logits.double(), dim=-1))


def margin(logits: Tensor) -> Tensor:
    """[B, S] float64 top-1 minus top-2 probability of softmax(logits) (Dream's `topk_margin`; Kim et al. 2025)."""
    top2 = torch.softmax(logits.double(), dim=-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def scores(conf: Tensor, masked: Tensor) -> Tensor:
    """Confidences with -inf on slots that are not masked (never eligible)."""
    return torch.where(masked, conf, NEG_INF)


def top_k_mask(score: Tensor, k: Tensor) -> Tensor:
    """[B, S] bool: the k[b] highest scores of each row (ties keep the lower index first)."""
    order = score.argsort(dim=1, descending=True, stable=True)
    ranks = torch.arange(score.shape[1], device=score.device)[None, :] < k[:, None]
    return torch.zeros_like(ranks).scatter(1, order, ranks)


def top1_mask(score: Tensor, masked: Tensor) -> Tensor:
    """[B, S] bool: the single best masked slot of every row that has one (Fast-dLLM's 'at least one')."""
    best = torch.zeros_like(masked).scatter(1, score.argmax(1, keepdim=True), True)
    return best & masked


def above_or_best(score: Tensor, masked: Tensor, threshold: float | Tensor) -> Tensor:
    """[B, S] bool: every masked slot scoring >= threshold, and always the best masked slot of each row.

    The commit rule shared by every threshold sampler (Fast-dLLM Algorithm 1; CreditDecoding, LocalLeap and
    dParallel's entropy rule differ only in the score). `threshold` may be a float or broadcast to [B, S].
    """
    return (masked & (score >= threshold)) | top1_mask(score, masked)


# presets shared by several samplers: check_arg(self, "temperature", **TEMPERATURE)
TEMPERATURE = dict(lo=0, desc="a number >= 0 (0: greedy)")
THRESHOLD = dict(lo=0, lo_open=True, allow_inf=True, desc="a number in (0, 1] or > 1 for one-token-per-step")


def above_or_top_k(score: Tensor, masked: Tensor, threshold: float, k: Tensor) -> Tensor:
    """[B, S] bool: every masked slot scoring strictly above threshold when at least k[b] of them do, else the
    k[b] best masked slots (LLaDA2 `generate()` and TraDo's `low_confidence_dynamic`); k [B] >= 1."""
    above = masked & (score > threshold)
    enough = above.sum(1) >= k
    best = top_k_mask(score, torch.minimum(k, masked.sum(1))) & masked
    return torch.where(enough[:, None], above, best)
