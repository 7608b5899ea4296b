"""Batched helpers shared by every sampler: candidates, confidences, top-k with per-row k.

Conventions (samplers.md §0, ML-GSAI/LLaDA `generate.py`): the candidate is argmax of the logits at
temperature 0, a Gumbel-max sample in float64 otherwise; the confidence is the *untempered* softmax
probability of the candidate, computed in float64 as the reference does.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

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


def check_arg(owner: object, name: str, kind: str = "number", *, lo: float | None = None, hi: float | None = None,
              lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False, optional: bool = False,
              choices: tuple | None = None, desc: str | None = None) -> None:
    """Validate field `name` of a sampler (or router) at construction; the one argument check of every sampler.

    kind: "number" (int or float, never NaN, never +-inf unless allow_inf, within [lo, hi] or the open ends),
    "int" (an integer, not a bool, within the bounds), "bool", or "choice" (one of `choices`). optional: None
    passes. The ValueError names the class, the field, what it must be (`desc` overrides the generated text)
    and the value, e.g. "Threshold: threshold must be a number in (0, 1] or > 1 for one-token-per-step; got -1".
    Hydra passes `sampler.threshold=abc` through as a string: it fails here, not deep inside a step.
    """
    value = getattr(owner, name)
    if optional and value is None:
        return
    if kind == "choice":
        ok, what = isinstance(value, str) and value in choices, f"one of {tuple(choices)}"
    elif kind == "bool":
        ok, what = isinstance(value, bool), "true or false"
    elif kind in ("number", "int"):
        if kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        else:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value) \
                and (allow_inf or not math.isinf(value))
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        what = ("an integer" if kind == "int" else "a number") + _bounds(lo, hi, lo_open, hi_open)
    else:
        raise ValueError(f"check_arg: unknown kind {kind!r}")
    if not ok:
        what = (desc or what) + (" or None" if optional else "")
        raise ValueError(f"{type(owner).__name__}: {name} must be {what}; got {value!r}")


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


TEMPERATURE = dict(lo=0, desc="a number >= 0 (0: greedy)")   # check_arg(self, "temperature", **TEMPERATURE)
THRESHOLD = dict(lo=0, lo_open=True, allow_inf=True, desc="a number in (0, 1] or > 1 for one-token-per-step")
