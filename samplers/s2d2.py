"""S2D2: a block-causal diffusion LM verifying its own drafts as an autoregressive model (block size 1)
(Han et al., "S2D2: Fast Decoding for Diffusion LLMs via Training-Free Self-Speculation", arXiv 2603.25702;
phymhan/S2D2 `SDAR/generate_ssd_policy.py`).

Per step: the diffusion forward drafts every masked slot; a router decides per row whether to verify; if any row
does, one extra forward (`inp.forward.autoregressive`, the 2L trick) gives q_i, the AR prediction of slot i from
the drafts to its left. Along the span (the first run of masked slots) drafts are accepted left to right --
`stochastic`: U < min(1, (q_i(x_i) / p_i(x_i))^rho), the rejected slot resampled from normalize(max(q - p, 0));
`greedy` (deterministic, ours; also what the ratio test becomes at temperature 0): accept iff
argmax q_i == x_i, the rejected slot takes argmax q_i. If fewer than
the step's floor of slots were decided, the base dynamic rule fills the rest (SDAR `low_confidence_dynamic`:
all masked slots with confidence > threshold if there are enough of them, else the top ones).
With `ar_cache` the committed prefix is attended causally (the paper's `cache_ver`), so greedy + always-verify
+ one slot per step reproduces greedy AR decoding. Cost: 1 forward per step, +1 on steps that verify.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import math

import torch
from torch import Tensor

from dllm.protocols import StepInput, StepOutput

from .common import TEMPERATURE, THRESHOLD, candidates, check_arg, confidence, scores, top_k_mask
from .routing import RouteFeatures, ScoreThreshold
from .static import Static, StaticState

ESTIMATORS = ("soft_entropy", "hard_margin")
ACCEPTANCE = ("stochastic", "greedy")


@dataclass
class S2D2State:
    router: dict                      # the router's [B, ...] tensors
    static: StaticState | None        # the floor's schedule, when `steps` is set

    def select(self, rows: Tensor) -> "S2D2State":
        return S2D2State({k: v[rows] for k, v in self.router.items()},
                         None if self.static is None else self.static.select(rows))


def span_of(masked: Tensor) -> Tensor:
    """[B, S] the first contiguous run of masked slots of each row."""
    started = masked.long().cummax(1).values.bool()
    broken = (started & ~masked).long().cummax(1).values.bool()
    return started & ~broken


@dataclass(frozen=True)
class S2D2:
    """S2D2: a block-causal model verifies its own parallel drafts with block size 1 (an AR-like pass), and a
    router decides per step whether verification is worth its forward (arXiv 2603.25702). Block-causal models
    only (`ar_cache`); on bidirectional ones the CLI skips it.

    Args:
        threshold (`float`, defaults to 0.85): confidence cutoff of the drafting rule.
        steps (`int | None`, defaults to None): a Static(steps) floor on commits per step; None: at least one.
        acceptance (`str`, defaults to "stochastic"): "stochastic" (the paper's ratio test) or "greedy".
        ratio_power (`float`, defaults to 1.0): rho, the exponent of the acceptance ratio.
        router (defaults to `ScoreThreshold()`): when to verify: `Always`, `Never`, `SpanLength`, `ScoreThreshold`,
            `Hysteresis` or `UCB` (all in `dllm.samplers`).
        estimator (`str`, defaults to "soft_entropy"): the acceptance estimate routers read ("soft_entropy" or
            "hard_margin"); entropy_temperature and margin tune them.
        temperature (`float`, defaults to 0.0): 0 takes each slot's argmax; > 0 samples with Gumbel-max from the
            loop's seeded generator.

    Returns:
        `step(inp, state)` returns `(StepOutput(tokens [B, S], commit [B, S]), state)`: proposed ids and the slots to
        commit, a subset of `inp.masked` with at least one per row that still has a mask; inputs are never
        modified (the loop commits). State: the router's per-row tensors and the floor's schedule.

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import S2D2
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> prompt = tok("reverse : 12 45 07 99 =").input_ids
    >>> out = dllm.generate(model, [prompt], S2D2(), gen_length=12, block_length=4)
    >>> out.nfe
    6

    ```
    """
    threshold: float = 0.85           # base dynamic rule's confidence threshold (SDAR default)
    steps: int | None = None          # floor schedule as Static(steps); None: at least one slot per step
    acceptance: str = "stochastic"    # stochastic (the paper's ratio test) | greedy (deterministic)
    ratio_power: float = 1.0          # rho
    router: object = field(default_factory=ScoreThreshold)
    estimator: str = "soft_entropy"   # acceptance estimate for routing: soft_entropy | hard_margin
    entropy_temperature: float = 1.0  # T_H in alpha = exp(-T_H H / ln V)
    margin: float = 0.05              # hard_margin: alpha = [top1 - top2 > margin]
    temperature: float = 0.0
    ar_cache: bool = True             # attend the committed prefix causally, as the verifier expects
    needs_hidden: ClassVar[bool] = False

    def __post_init__(self):
        check_arg(self, "threshold", **THRESHOLD)
        check_arg(self, "steps", "int", lo=1, optional=True)
        check_arg(self, "acceptance", "choice", choices=ACCEPTANCE)
        check_arg(self, "ratio_power", lo=0, lo_open=True)
        check_arg(self, "estimator", "choice", choices=ESTIMATORS)
        check_arg(self, "entropy_temperature", lo=0)
        check_arg(self, "margin", lo=0, hi=1)
        check_arg(self, "temperature", **TEMPERATURE)
        check_arg(self, "ar_cache", "bool")
        if isinstance(self.router, type) or not all(callable(getattr(self.router, m, None))
                                                    for m in ("init", "decide", "update")):
            raise ValueError("S2D2: router must be a router instance with init(), decide() and update() "
                             f"(e.g. ScoreThreshold()); got {self.router!r}")

    def init_state(self, batch_size: int, num_blocks: int, device: torch.device) -> S2D2State:
        static = None if self.steps is None else Static(self.steps).init_state(batch_size, num_blocks, device)
        return S2D2State(self.router.init(batch_size, device), static)

    def _alpha(self, probs: Tensor) -> Tensor:
        if self.estimator == "soft_entropy":
            ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
            return torch.exp(-self.entropy_temperature * ent / math.log(probs.shape[-1]))
        top2 = probs.topk(2, dim=-1).values
        return ((top2[..., 0] - top2[..., 1]) > self.margin).to(probs.dtype)

    def _verify(self, inp: StepInput, drafts: Tensor, span: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
        """(decided [B, S], tokens [B, S]): the accepted span prefix plus the corrected first rejection."""
        q = inp.forward.autoregressive(drafts).logits.double()                     # [B, S, V]
        q[..., inp.mask_id] = float("-inf")                                        # never propose the mask
        if self.acceptance == "greedy" or self.temperature == 0:
            # at temperature 0 drafter and verifier are point masses: the ratio test is an exact-match test
            # (the reference still draws U there; we do not reproduce that)
            ok, fix = q.argmax(-1) == drafts, q.argmax(-1)
        else:
            qp = (q / self.temperature).softmax(-1)
            pick = lambda t: t.gather(-1, drafts[..., None]).squeeze(-1)
            ratio = (pick(qp) / pick(probs).clamp_min(1e-30)).pow(self.ratio_power).clamp(max=1)
            u = torch.rand(ratio.shape, generator=inp.generator, device=ratio.device, dtype=torch.float64)
            ok = u < ratio
            resid = (qp - probs).clamp(min=0)
            resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, qp)          # fallback: sample q
            g = torch.rand(resid.shape, generator=inp.generator, device=resid.device, dtype=torch.float64)
            fix = (resid.log() - torch.log(-torch.log(g))).argmax(-1)
        run = torch.where(span, ok, True).long().cumprod(1).bool()                 # all accepted so far
        before = torch.cat((torch.ones_like(run[:, :1]), run[:, :-1]), 1)
        accepted, rejected = span & run, span & before & ~ok
        return accepted | rejected, torch.where(rejected, fix, drafts)

    def step(self, inp: StepInput, state: S2D2State) -> tuple[StepOutput, S2D2State]:
        masked = inp.masked                                                        # [B, S]
        x_blk = inp.x[:, inp.block.start:inp.block.end]
        tokens = candidates(inp.logits, self.temperature, inp.generator, inp.mask_id)          # drafts
        conf = confidence(inp.logits, tokens)
        probs = (inp.logits.double() / (self.temperature or 1.0)).softmax(-1)      # drafter distribution p
        floor, static = (masked.any(1).long(), None) if state.static is None else \
            Static.quota(masked, inp.step, state.static)
        floor = torch.minimum(floor.clamp(min=1), masked.sum(1))
        span = span_of(masked)
        ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1) / math.log(probs.shape[-1])
        n_masked = masked.sum(1).clamp(min=1)
        feats = RouteFeatures(span, self._alpha(probs), (masked & (conf > self.threshold)).sum(1),
                              1 - masked.sum(1) / masked.shape[1], (ent * masked).sum(1) / n_masked)
        verify, rstate = self.router.decide(feats, state.router)
        decided, dtok = torch.zeros_like(masked), tokens
        if bool(verify.any()):     # host check: the verifier forward is paid only when some row wants it
            decided, dtok = self._verify(inp, torch.where(masked, tokens, x_blk), span, probs)
            decided = decided & verify[:, None]
        need = (floor - decided.sum(1)).clamp(min=0)                               # [B]
        rest = masked & ~decided
        high = rest & (conf > self.threshold)
        base = torch.where((high.sum(1) >= need)[:, None], high, top_k_mask(scores(conf, rest), need))
        commit = decided | (base & (need > 0)[:, None])
        reward = commit.sum(1).double() / (1 + verify.double())
        rstate = self.router.update(feats, rstate, verify, reward)
        return StepOutput(torch.where(decided, dtok, tokens), commit), S2D2State(rstate, static)
