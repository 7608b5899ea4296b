"""The naive reference decoder that `dllm-bench` measures against: ML-GSAI/LLaDA `generate.py` written out
plainly — a full-sequence forward every step, steps split evenly over blocks, the block's masks split evenly
over its steps, a per-row `torch.topk` over low-confidence scores, temperature 0, no cache. Prompts must share
one length (the original has no padding). `Static(steps)` with cache="none" must match it token for token."""
from __future__ import annotations

import torch


@torch.inference_mode()
def naive_generate(model, prompts: list[list[int]], steps: int, gen_length: int, block_length: int) -> tuple[torch.Tensor, int]:
    """Returns (generated ids [B, gen_length], number of forwards)."""
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("the naive reference needs prompts of one length (it has no padding)")
    mask = model.mask_id
    P = len(prompts[0])
    x = torch.tensor([p + [mask] * gen_length for p in prompts], device=model.device)
    n_blocks = gen_length // block_length
    per_block = steps // n_blocks
    nfe = 0
    for b in range(n_blocks):
        s, e = P + b * block_length, P + (b + 1) * block_length
        m0 = (x[:, s:e] == mask).sum(1)
        quota = [[int(m) // per_block + (1 if t < int(m) % per_block else 0) for t in range(per_block)] for m in m0]
        for t in range(per_block):
            logits = model(x).logits
            nfe += 1
            x0 = logits.argmax(-1)
            p = torch.softmax(logits.double(), -1).gather(-1, x0[..., None]).squeeze(-1)
            conf = torch.where(x == mask, p, -torch.inf)
            conf[:, e:] = -torch.inf
            for r in range(x.shape[0]):
                _, idx = torch.topk(conf[r], quota[r][t])
                x[r, idx] = x0[r, idx]
    return x[:, P:], nfe
