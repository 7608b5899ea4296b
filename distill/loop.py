"""The training loop shared by the distillation pipelines: seeded batches, data parallelism, atomic resume.

Batches are a pure function of (seed, step): `batch_rows` draws the step's global batch of row indices from a
per-epoch permutation, and the loss function draws its noise from a generator seeded by (seed, step) for the
whole global batch. So a resumed run replays exactly the steps an uninterrupted one takes, and every rank sees
the same global batch.

Data parallelism (`torchrun --nproc_per_node N` / `accelerate launch`, through `dllm.eval.distributed`): rank r
computes the loss on its contiguous 1/N of the global batch (a mean over its rows), gradients are all-reduced
and averaged, and every rank takes the same optimizer step. For a loss that is a mean over rows this is the
gradient of the one-process loss on the whole batch; the results agree to float rounding (the sums are taken
in another order), not bit for bit. Rank 0 alone writes checkpoints and logs.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from dllm.distill.checkpoint import resume_state, rng_states, save_state, set_rng_states
from dllm.eval.distributed import Dist
from dllm.eval.progress import progress
from dllm.eval.tracking import Tracker

LossFn = Callable[[Tensor, slice, int], Tensor]   # (global batch rows [b], this rank's part, step) -> scalar


@dataclass(frozen=True)
class LoopSettings:
    steps: int                 # optimizer steps
    batch_size: int            # global batch: rows per step over all ranks (a multiple of the world size)
    ckpt_every: int            # atomic checkpoint every this many steps (and at the end)
    grad_clip: float | None    # max global grad norm; None: no clipping


def batch_rows(n_rows: int, batch_size: int, seed: int, step: int) -> Tensor:
    """[batch_size] row indices of `step`: consecutive slices of a stream of per-epoch permutations."""
    k = torch.arange(step * batch_size, (step + 1) * batch_size)           # positions in the sample stream
    epoch, rows = k // n_rows, torch.empty_like(k)
    for e in epoch.unique().tolist():
        perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        rows[epoch == e] = perm[k[epoch == e] % n_rows]
    return rows


def local_part(batch_size: int, dist: Dist) -> slice:
    if batch_size % dist.world:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the world size {dist.world}")
    b = batch_size // dist.world
    return slice(dist.rank * b, (dist.rank + 1) * b)


def average(t: Tensor, dist: Dist) -> Tensor:
    """Mean of `t` over ranks (in place)."""
    if dist.world > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        t /= dist.world
    return t


def fit(module: nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn, n_rows: int, s: LoopSettings, *,
        seed: int, dist: Dist, run_dir: str | Path, resume: bool, tracker: Tracker, desc: str = "train",
        sched=None) -> dict:
    """Train `module` for s.steps steps (from the checkpoint in `run_dir` when resume=True); returns the state
    {"step", "history": [{"step", "loss", "grad_norm"}], "train_seconds"} (identical on every rank)."""
    run_dir = Path(run_dir)
    params = [p for p in module.parameters() if p.requires_grad]
    state = {"step": 0, "history": [], "train_seconds": 0.0}
    saved = resume_state(run_dir, s.steps) if resume else None
    if saved is not None:
        module.load_state_dict(saved.pop("model"))
        opt.load_state_dict(saved.pop("optimizer"))
        if sched is not None:
            sched.load_state_dict(saved.pop("scheduler"))
        set_rng_states(saved.pop("rng"))
        state = saved
    part = local_part(s.batch_size, dist)
    module.train()
    t0, seconds0 = time.perf_counter(), state["train_seconds"]
    bar = progress(range(state["step"], s.steps), initial=state["step"], total=s.steps, desc=desc,
                   disable=dist.rank != 0)
    for step in bar:
        rows = batch_rows(n_rows, s.batch_size, seed, step)
        loss = loss_fn(rows, part, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:
            if p.grad is not None:
                average(p.grad, dist)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip if s.grad_clip else float("inf"))
        opt.step()
        if sched is not None:
            sched.step()
        record = {"step": step + 1, "loss": average(loss.detach().clone(), dist).item(),
                  "grad_norm": grad_norm.item()}
        state["history"].append(record)
        state["step"] = step + 1
        state["train_seconds"] = seconds0 + time.perf_counter() - t0
        tracker.log({f"{desc}/loss": record["loss"], f"{desc}/grad_norm": record["grad_norm"]}, step + 1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if (step + 1) % s.ckpt_every == 0 or step + 1 == s.steps:
            if dist.rank == 0:
                extra = {"scheduler": sched.state_dict()} if sched is not None else {}
                save_state(run_dir, {"model": module.state_dict(), "optimizer": opt.state_dict(),
                                     "rng": rng_states(), **extra, **state})
            dist.barrier()
    bar.close()
    return state
