"""S2D2's routing policies: decide, per row and before paying for it, whether a verifier forward is worth it
(Han et al., arXiv 2603.25702; phymhan/S2D2 `SDAR/generate_ssd_policy.py` `_decide_do_verify`).

Every router is a small frozen dataclass with `init(batch, device) -> state` (a dict of [B, ...] tensors),
`decide(feats, state) -> (verify [B] bool, state)` and `update(feats, state, verify, reward) -> state`.
The score of a step is the expected number of accepted drafts E[K] = sum_k prod_{i<=k} alpha_i over the span,
minus a cost: `c` (static) or `c * n_high` (dynamic: what plain dynamic decoding would commit anyway).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .common import check_arg

MODES = ("static", "dynamic")


@dataclass
class RouteFeatures:
    span: Tensor          # [B, S] bool: the first contiguous run of masked slots
    alpha: Tensor         # [B, S] estimated probability that the verifier accepts each draft
    n_high: Tensor        # [B] masked slots whose confidence clears the base threshold
    progress: Tensor      # [B] fraction of the block already decoded
    entropy: Tensor       # [B] mean normalised entropy of the masked slots

    @property
    def expected_accepted(self) -> Tensor:
        """[B] E[K] = sum over the span of the prefix products of alpha (the span starts at the first mask)."""
        started = self.span.long().cummax(1).values.bool()
        factor = torch.where(self.span, self.alpha, torch.where(started, 0.0, 1.0).to(self.alpha.dtype))
        return (factor.cumprod(1) * self.span).sum(1)


def score(f: RouteFeatures, cost: float, mode: str) -> Tensor:
    if mode not in MODES:
        raise ValueError(f"score mode must be 'static' or 'dynamic', got {mode!r}")
    return f.expected_accepted - cost * (f.n_high.to(f.alpha.dtype) if mode == "dynamic" else 1.0)


class _Stateless:
    def init(self, batch: int, device: torch.device) -> dict:
        return {}

    def update(self, f: RouteFeatures, state: dict, verify: Tensor, reward: Tensor) -> dict:
        return state


@dataclass(frozen=True)
class Always(_Stateless):
    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        return f.span.any(1), state


@dataclass(frozen=True)
class Never(_Stateless):
    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        return torch.zeros_like(f.span[:, 0]), state


@dataclass(frozen=True)
class SpanLength(_Stateless):
    min_span: int = 1                     # verify iff the masked span is at least this long (1: always)

    def __post_init__(self):
        check_arg(self, "min_span", "int", lo=0)

    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        return f.span.sum(1) >= self.min_span, state


@dataclass(frozen=True)
class ScoreThreshold(_Stateless):
    threshold: float = 0.0                # verify iff score >= threshold
    cost: float = 1.0
    mode: str = "static"

    def __post_init__(self):
        check_arg(self, "threshold", allow_inf=True)
        check_arg(self, "cost", lo=0)
        check_arg(self, "mode", "choice", choices=MODES)

    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        return (score(f, self.cost, self.mode) >= self.threshold) & f.span.any(1), state


@dataclass(frozen=True)
class Hysteresis(_Stateless):
    on: float = 1.0                       # off -> on when score > on
    off: float = -5.0                     # on -> off when score < off (requires on > off)
    cost: float = 1.0
    mode: str = "dynamic"

    def __post_init__(self):
        check_arg(self, "on")
        check_arg(self, "off")
        check_arg(self, "cost", lo=0)
        check_arg(self, "mode", "choice", choices=MODES)
        if self.on <= self.off:
            raise ValueError(f"hysteresis needs on > off, got on={self.on}, off={self.off}")

    def init(self, batch: int, device: torch.device) -> dict:
        return {"on": torch.zeros(batch, dtype=torch.bool, device=device)}

    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        s = score(f, self.cost, self.mode)
        on = torch.where(state["on"], s >= self.off, s > self.on)
        return on & f.span.any(1), {"on": on}


@dataclass(frozen=True)
class UCB:
    """Contextual bandit over {skip, verify}: context = (span-length, block-progress, entropy) bins (2 x 2 x 2);
    pick the larger mu + beta sqrt(ln t / n) (untried = inf, ties verify); reward = tokens committed / cost."""
    beta: float = 1.0

    def __post_init__(self):
        check_arg(self, "beta", lo=0)

    def init(self, batch: int, device: torch.device) -> dict:
        z = torch.zeros(batch, 8, 2, dtype=torch.float64, device=device)
        return {"n": z, "r": z.clone(), "t": torch.zeros(batch, dtype=torch.float64, device=device)}

    @staticmethod
    def context(f: RouteFeatures) -> Tensor:
        S = f.span.shape[1]
        bins = (f.span.sum(1) * 2 >= S, f.progress >= 0.5, f.entropy >= 0.5)
        return bins[0].long() * 4 + bins[1].long() * 2 + bins[2].long()

    def decide(self, f: RouteFeatures, state: dict) -> tuple[Tensor, dict]:
        rows = torch.arange(f.span.shape[0], device=f.span.device)
        ctx = self.context(f)
        n, r = state["n"][rows, ctx], state["r"][rows, ctx]                  # [B, 2]
        bonus = self.beta * torch.sqrt(torch.log(state["t"][:, None] + 1) / n)
        ucb = torch.where(n > 0, r / n.clamp(min=1) + bonus, math.inf)
        return (ucb[:, 1] >= ucb[:, 0]) & f.span.any(1), state

    def update(self, f: RouteFeatures, state: dict, verify: Tensor, reward: Tensor) -> dict:
        rows = torch.arange(f.span.shape[0], device=f.span.device)
        ctx, arm = self.context(f), verify.long()
        n, r = state["n"].clone(), state["r"].clone()
        n[rows, ctx, arm] += 1
        r[rows, ctx, arm] += reward.double()
        return {"n": n, "r": r, "t": state["t"] + 1}
