"""Data parallelism for evaluation and training: one process per device under `torchrun` / `accelerate launch`
(both set RANK / WORLD_SIZE / LOCAL_RANK); gloo on CPU, nccl on GPU. A single process needs none of this."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: str | None            # the device this rank should use (None: the caller's choice)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """rank 0's value of `obj` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init(device: str | None = None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(0, 1, device)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local}"
    return Dist(dist.get_rank(), world, device)
