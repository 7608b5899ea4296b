"""The one block-wise generation loop: every sampler, every cache mode, batched, with per-row stopping."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cache import CachePolicy, as_policy
from .layout import as_id_lists, make_layout
from .model import DiffusionLM
from .checks import check_value, require_sampler
from .protocols import ModelOut, OnStep, StepInput, StepRecord
from .runner import BlockRunner


@dataclass
class Generation:
    sequences: list[list[int]]   # generated ids per prompt, cut before the first stop id
    nfe: int                     # model forward passes for the whole batch
    stats: dict = field(default_factory=dict)
    canvas: Tensor | None = None  # [B, L] final canvas (padding, prompt, generation)


def finished_rows(x: Tensor, gen_start: Tensor, gen_end: Tensor, stop_ids: Tensor, mask_id: int) -> Tensor:
    """[B] bool: the row committed a stop id and no mask is left before it, so its output can no longer change."""
    col = torch.arange(x.shape[1], device=x.device)
    in_gen = (col >= gen_start[:, None]) & (col < gen_end[:, None])
    is_stop = torch.isin(x, stop_ids) & in_gen
    has_stop = is_stop.any(1)
    first = torch.where(has_stop, is_stop.int().argmax(1), x.shape[1])
    masked_before = ((x == mask_id) & (col < first[:, None])).any(1)
    return has_stop & ~masked_before


def _check(model, sampler, prompts: list[list[int]], *, gen_length: int, block_length: int, seed: int) -> None:
    """Every argument of `generate` before any work: a clear ValueError naming the argument, never a traceback
    from inside torch (or a 40000-token canvas that runs for minutes past the model's context)."""
    needed = ("mask_id", "pad_id", "stop_ids", "block_causal", "cache_modes", "default_cache", "vocab_size")
    if not isinstance(model, DiffusionLM) and not all(hasattr(model, a) for a in needed):
        raise ValueError("model must be a dllm.DiffusionLM (dllm.load) or an adapter such as dllm.HFAdapter")
    require_sampler(sampler)
    check_value(gen_length, "gen_length", "int", lo=1)
    check_value(block_length, "block_length", "int", lo=1)
    check_value(seed, "seed", "int", lo=-2**63, hi=2**64, hi_open=True, desc="an integer (a torch.Generator seed)")
    context = getattr(model, "max_length", None)   # config.json max_position_embeddings / max_sequence_length
    longest = max(len(p) for p in prompts)
    if context is not None and gen_length > context:
        raise ValueError(f"gen_length={gen_length} exceeds the model's context of {context} positions "
                         "(config max_position_embeddings / max_sequence_length)")
    if context is not None and longest + gen_length > context:
        raise ValueError(f"the longest prompt ({longest} tokens) + gen_length={gen_length} = {longest + gen_length} "
                         f"positions exceeds the model's context of {context}; shorten the prompt or gen_length")
    if model.block_causal and block_length % model.block_size:
        raise ValueError(f"block_length={block_length} must be a multiple of the model's block_size="
                         f"{model.block_size} (a block-causal model cannot decode part of one of its blocks)")


@torch.inference_mode()
def generate(model: DiffusionLM, prompts, sampler, *, gen_length: int = 256, block_length: int = 32,
             cache: str | CachePolicy = "auto", refresh_every: int | None = None, seed: int = 0,
             stop_at_eos: bool = True, on_step: OnStep | None = None, timing: bool = False,
             compile: bool | str = False) -> Generation:
    """Decode `gen_length` tokens after each prompt, block by block, with `sampler` deciding the commits.

    Args:
        model: a `DiffusionLM` from `dllm.load` (or a `dllm.HFAdapter` around a transformers model).
        prompts: token ids, one list (or 1-D tensor) per prompt; lengths may differ (prompts are left-padded so
            every row shares block boundaries); no prompt may be empty.
        sampler: any object with `init_state` and `step` (`dllm.samplers`: `Threshold(0.9)`, `Static(steps)`, ...).
        gen_length: slots generated per prompt, >= 1.
        block_length: slots decoded together, >= 1; for a block-causal model a multiple of its `block_size`.
        cache: "auto" (the family's best mode), "none", "block" / "block_fused" (block-causal, exact), "prefix" /
            "dual" (bidirectional, approximate), or a `CachePolicy`; a mode the family cannot use is a ValueError.
        refresh_every: prefix/dual only: also refresh the cache every this many steps (None: at block start).
        seed: seeds the one generator every sampler draws from; equal seeds give equal outputs.
        stop_at_eos: cut each sequence at its first stop id and drop finished rows early.
        on_step: called with a `StepRecord` (logits, masked slots, commits) after every step.
        timing: also measure the time inside model forwards (stats["forward_seconds"], and stats["overhead"], the
            share of wall time outside them: sampler, loop and cache bookkeeping).
        compile: True runs the forward through `torch.compile` (inductor; meant for GPUs, where it fuses the
            small kernels of a decoding step; the first calls pay the compilation); a string picks another backend.

    Returns:
        `Generation`: `sequences` (generated ids per prompt, cut before the first stop id), `nfe` (model forwards
        for the whole batch; a batched draft/verify forward counts one), `stats` (tokens, tokens_per_forward,
        seconds, tokens_per_second, steps_per_block, per-row NFE, cache mode, ...) and the final `canvas`.

    Examples:

    ```python
    >>> import dllm
    >>> from dllm.samplers import Threshold
    >>> model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    >>> out = dllm.generate(model, [tok("reverse : 12 45 07 99 =").input_ids], Threshold(0.9), gen_length=12,
    ...                     block_length=4, cache="auto", seed=0)
    >>> tok.decode(out.sequences[0], skip_special_tokens=True), out.nfe, out.stats["cache"]
    ('99 07 45 12', 2, 'block_fused')

    ```
    """
    t0 = time.perf_counter()
    # 1) validate, lay out the canvas (left-padded prompts, masks, shared blocks), allocate per-run state
    ids = as_id_lists(prompts)
    _check(model, sampler, ids, gen_length=gen_length, block_length=block_length, seed=seed)
    policy = as_policy(cache, refresh_every).resolve(model.cache_modes, model.default_cache, model.kind)
    lay = make_layout(ids, gen_length, block_length, mask_id=model.mask_id,
                      pad_id=model.pad_id, vocab_size=model.vocab_size, block_causal=model.block_causal,
                      device=model.device)
    runner = BlockRunner(model, policy, lay, ar_cache=getattr(sampler, "ar_cache", False), timing=timing,
                         compile=compile)
    # samplers schedule over the nominal ceil(gen_length / block_length) blocks; a block-causal layout may touch
    # one more (the prompt tail shares the first block), which then gets the same per-block schedule
    state = sampler.init_state(lay.x.shape[0], -(-gen_length // block_length), model.device)
    generator = torch.Generator(device=model.device).manual_seed(int(seed))
    stop_ids = torch.tensor(model.stop_ids, device=model.device)
    x, valid, pos, gen_start, gen_end = lay.x.clone(), lay.valid, lay.pos, lay.gen_start, lay.gen_end
    rows = torch.arange(x.shape[0], device=model.device)   # active row -> caller's prompt index
    final = lay.x.clone()
    row_nfe = torch.zeros(x.shape[0], dtype=torch.long, device=model.device)   # forwards each row needed
    steps_per_block: list[int] = []
    # 2) blocks left to right; inside a block: forward -> sampler decides -> loop commits
    for block in lay.blocks:
        if rows.numel() == 0:
            break
        s, e, step, carry = block.start, block.end, 0, None
        while True:
            nfe_before = runner.nfe
            out = carry if carry is not None and not runner.refresh_due(step) else \
                runner.block_logits(x, valid, pos, block, step, need_hidden=sampler.needs_hidden)
            x_blk = x[:, s:e]
            masked = x_blk == model.mask_id                                  # [B, S]
            inp = StepInput(x, out.logits, masked, block, step, generator, runner.extra(x, valid, pos, block),
                            model.mask_id, model.stop_ids, out.hidden)
            decision, state = sampler.step(inp, state)
            commit, carry = decision.commit, decision.carry
            # a row is charged the forwards of steps it needed (it still had masks), as if decoded alone
            row_nfe[rows] += (runner.nfe - nfe_before) * masked.any(1)
            x[:, s:e] = torch.where(commit, decision.tokens, x_blk)
            if decision.fill_from is not None:   # end-of-text prediction: the rest of the row is stop tokens
                col = torch.arange(x.shape[1], device=x.device)
                fill = (col >= decision.fill_from[:, None]) & (col < gen_end[:, None]) & (x == model.mask_id)
                x = torch.where(fill, stop_ids[0], x)
            if on_step is not None:
                on_step(StepRecord(block, step, rows, out.logits, masked, decision.tokens, commit, x, runner.nfe))
            step += 1
            # 3) the one host sync per step: block left, rows finished, sampler contract broken
            left = (x[:, s:e] == model.mask_id).any(1)                        # [B]
            done = finished_rows(x[:, :e], gen_start, gen_end, stop_ids, model.mask_id) if stop_at_eos \
                else torch.zeros_like(left)
            outside = (commit & ~masked).any()
            stalled = (masked.any(1) & ~commit.any(1)).any()
            any_left, any_done, bad, stall = torch.stack((left.any(), done.any(), outside, stalled)).tolist()
            if bad or stall:
                raise RuntimeError(f"{type(sampler).__name__}.step broke the sampler contract: "
                                   + ("committed a slot that was not masked" if bad else
                                      "committed nothing in a row that still has masked slots"))
            if any_done:   # 4) finished rows stop costing compute: drop them from every batched tensor
                final[rows[done]] = x[done]
                keep = (~done).nonzero().squeeze(1)
                x, valid, pos, gen_start, gen_end, rows = (t[keep] for t in (x, valid, pos, gen_start, gen_end, rows))
                state = state.select(keep)
                runner.select(keep)
                if carry is not None:
                    carry = ModelOut(carry.logits[keep], None if carry.hidden is None else carry.hidden[keep])
                any_left = rows.numel() > 0 and bool(left[keep].any())
            if not any_left:
                break
        steps_per_block.append(step)
    final[rows] = x
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return _result(final, lay, model, runner, steps_per_block, policy, time.perf_counter() - t0, row_nfe.tolist())


def _result(final: Tensor, lay, model, runner: BlockRunner, steps_per_block: list[int], policy: CachePolicy,
            seconds: float, row_nfe: list[int]) -> Generation:
    sequences, row_tokens = [], []
    stops = set(model.stop_ids)
    for row, gs, ge in zip(final.tolist(), lay.gen_start.tolist(), lay.gen_end.tolist()):
        gen = row[gs:ge]
        cut = next((i for i, t in enumerate(gen) if t in stops), None)
        sequences.append(gen if cut is None else gen[:cut])
        row_tokens.append(len(gen) if cut is None else cut + 1)      # the stop token is generated work too
    nfe, tokens = runner.nfe, sum(row_tokens)
    stats = {"nfe": nfe, "forwards": dict(runner.calls), "row_forwards": runner.row_forwards,
             "tokens_evaluated": runner.tokens_evaluated, "tokens": tokens,
             "tokens_per_forward": tokens / max(nfe, 1), "seconds": seconds,
             "tokens_per_second": tokens / max(seconds, 1e-9), "steps_per_block": steps_per_block,
             "batch_size": final.shape[0], "cache": policy.mode,
             "row_nfe": row_nfe, "row_tokens": row_tokens}   # per prompt: forwards it needed, tokens
    if runner.timing:
        stats["forward_seconds"] = runner.forward_seconds
        stats["overhead"] = max(0.0, 1 - runner.forward_seconds / max(seconds, 1e-9))
    return Generation(sequences, nfe, stats, final)
