"""Trajectory collection: roll out a teacher sampler through `dllm.generate(..., on_step=...)` and write shards.

    collect(model, tokenizer, prompts, Static(steps=12), "runs/traj", gen_length=12, block_length=4)

Each shard is one safetensors file (flat tensors, no pickle) holding `shard_size` prompts:

    prompt_ids, prompt_offsets [N+1]      the prompt tokens, flat
    canvas, canvas_offsets [N+1]          the final canvas row (left padding, prompt, generation)
    gen_start [N], example [N]            canvas index of the first generated slot; index in the prompt list
    response [N, G]                       the generated slots of the final canvas (run to the end: no EOS stop)
    step_example, step_block, step_index, block_start [M]    one row per (example, decoding step)
    masked, top1, commit, label [M, S]    bool / ids / bool / bool over the block's slots
    conf, slot_valid [M, S]               `samplers.policy.features` (top-1 probability), real slot (a block cut
                                          short by the canvas end is padded: conf 1, label True, not valid)

`label` is Learn2PD's oracle label (samplers.md §2.1): the step's top-1 prediction already equals the final
token at that slot. `manifest.json` lists the settings and the finished shards; a shard is written to a
temporary name and renamed before the manifest names it, so a killed run resumes at the first missing shard.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

import dllm
from dllm.eval.progress import progress as progress_bar
from dllm.layout import make_layout
from dllm.model import DiffusionLM
from dllm.samplers.policy import FEATURE, features

MANIFEST = "manifest.json"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        manifest, why = None, f"{type(e).__name__}: {e}"
    else:
        why = "no 'shards' list"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
        raise ValueError(f"{path} is not a trajectory manifest ({why}); it was cut or edited. Delete the folder "
                         f"{path.parent} to collect the trajectories again") from None
    return manifest


def _read_shard(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a readable trajectory shard ({type(e).__name__}: {e}); delete it and run "
                         "again: collection resumes at the first missing shard") from None


def _flat(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    offsets = torch.tensor([0] + [len(r) for r in rows]).cumsum(0)
    return torch.tensor([t for r in rows for t in r], dtype=torch.long), offsets


@torch.inference_mode()
def rollout(model: DiffusionLM, prompts: list[list[int]], sampler, *, gen_length: int, block_length: int,
            cache: str = "none", seed: int = 0) -> dict[str, Tensor]:
    """Decode `prompts` as one batch and return the shard tensors described in the module docstring."""
    S = block_length
    steps: list[dict] = []

    def record(rec):
        feat = features(rec.logits, rec.x[:, rec.block.start:rec.block.end], rec.masked)   # [B, S'] top-1 prob
        act = rec.masked.any(1)   # a row whose slots of a shared block are all prompt or done took no step
        steps.append({"rows": rec.rows[act].cpu(), "block": rec.block, "step": rec.step,
                      "masked": rec.masked[act].cpu(), "top1": rec.logits.argmax(-1)[act].cpu(),
                      "conf": feat[act].cpu(), "commit": rec.commit[act].cpu()})

    out = dllm.generate(model, prompts, sampler, gen_length=gen_length, block_length=block_length, cache=cache,
                        seed=seed, stop_at_eos=False, on_step=record)
    canvas = out.canvas.cpu()                                                      # [N, L]
    lay = make_layout(prompts, gen_length, block_length, mask_id=model.mask_id, pad_id=model.pad_id,
                      vocab_size=model.vocab_size, block_causal=model.block_causal, device=torch.device("cpu"))
    cols: dict[str, list[Tensor]] = {k: [] for k in ("step_example", "step_block", "step_index", "block_start",
                                                     "masked", "top1", "conf", "commit", "label", "slot_valid")}
    for s in steps:
        B, n, blk = s["rows"].numel(), s["block"].length, s["block"]
        pad = (0, S - n)
        final = canvas[s["rows"], blk.start:blk.end]                               # [B, S']
        cols["step_example"].append(s["rows"])
        cols["step_block"].append(torch.full((B,), blk.index))
        cols["step_index"].append(torch.full((B,), s["step"]))
        cols["block_start"].append(torch.full((B,), blk.start))
        cols["masked"].append(torch.nn.functional.pad(s["masked"], pad, value=False))
        cols["top1"].append(torch.nn.functional.pad(s["top1"], pad, value=model.pad_id))
        cols["conf"].append(torch.nn.functional.pad(s["conf"], pad, value=1.0))
        cols["commit"].append(torch.nn.functional.pad(s["commit"], pad, value=False))
        cols["label"].append(torch.nn.functional.pad(s["top1"] == final, pad, value=True))
        cols["slot_valid"].append(torch.nn.functional.pad(torch.ones(B, n, dtype=torch.bool), pad, value=False))
    shard = {k: torch.cat(v) for k, v in cols.items()}
    order = torch.argsort(shard["step_example"] * 1_000_000 + shard["step_block"] * 1_000 + shard["step_index"],
                          stable=True)                                             # example-major, then time
    shard = {k: v[order] for k, v in shard.items()}
    shard["prompt_ids"], shard["prompt_offsets"] = _flat(prompts)
    shard["canvas"], shard["canvas_offsets"] = _flat(canvas.tolist())
    shard["gen_start"] = lay.gen_start.clone()
    shard["response"] = torch.stack([canvas[r, g:g + gen_length] for r, g in enumerate(lay.gen_start.tolist())])
    return {k: v.contiguous() for k, v in shard.items()}


def collect(model: DiffusionLM, prompts: list[list[int]], sampler, out_dir: str | Path, *, gen_length: int,
            block_length: int, shard_size: int = 64, batch_size: int = 64, cache: str = "none", seed: int = 0,
            info: dict | None = None, progress: bool = True) -> Path:
    """Write trajectory shards of `prompts` (token ids) to `out_dir`; resumable. Returns the manifest path.

    `info` (model name, task, ...) goes into the manifest; a manifest written with other settings is an error
    rather than a silent mix of two teachers.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"sampler": repr(sampler), "gen_length": gen_length, "block_length": block_length,
                "shard_size": shard_size, "num_examples": len(prompts), "cache": cache, "seed": seed,
                "feature": list(FEATURE), **(info or {})}
    path = out / MANIFEST
    manifest = _read_manifest(path) if path.is_file() else {**settings, "shards": []}
    if {k: manifest.get(k) for k in settings} != json.loads(json.dumps(settings)):
        raise ValueError(f"{path} was written with other settings; use another out_dir")
    done = {s["file"] for s in manifest["shards"] if (out / s["file"]).is_file()}
    manifest["shards"] = [s for s in manifest["shards"] if s["file"] in done]
    n_shards = -(-len(prompts) // shard_size)
    for i in progress_bar(range(n_shards), desc="collect", disable=not progress):
        name = f"shard-{i:05d}.safetensors"
        if name in done:
            continue
        lo, hi = i * shard_size, min(len(prompts), (i + 1) * shard_size)
        parts = [rollout(model, prompts[b:min(hi, b + batch_size)], sampler, gen_length=gen_length,
                         block_length=block_length, cache=cache, seed=seed + b)
                 for b in range(lo, hi, batch_size)]
        shard = _merge(parts)
        shard["example"] = torch.arange(lo, hi)
        save_file(shard, str(out / f".{name}.tmp"))
        os.replace(out / f".{name}.tmp", out / name)
        manifest["shards"].append({"file": name, "examples": [lo, hi], "steps": int(shard["step_example"].numel())})
        manifest["shards"].sort(key=lambda s: s["file"])
        _write_json(path, manifest)
    return path


def _merge(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate rollouts of consecutive batches, shifting local example indices and offsets."""
    if len(parts) == 1:
        return parts[0]
    out: dict[str, list[Tensor]] = {k: [] for k in parts[0]}
    n0, p0, c0 = 0, 0, 0
    for p in parts:
        for k, v in p.items():
            if k == "step_example":
                v = v + n0
            elif k == "prompt_offsets":
                v = (v + p0)[1:] if n0 else v
            elif k == "canvas_offsets":
                v = (v + c0)[1:] if n0 else v
            out[k].append(v)
        n0 += p["gen_start"].numel()
        p0 += p["prompt_ids"].numel()
        c0 += p["canvas"].numel()
    return {k: torch.cat(v) for k, v in out.items()}


def load_trajectories(out_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(manifest, tensors) with all shards concatenated; `step_example` indexes the concatenated examples."""
    out = Path(out_dir)
    if not (out / MANIFEST).is_file():
        raise FileNotFoundError(f"{out} has no {MANIFEST}: collect trajectories there first")
    manifest = _read_manifest(out / MANIFEST)
    parts = [_read_shard(out / s["file"]) for s in manifest["shards"]]
    if not parts:
        raise ValueError(f"{out} holds no trajectory shards")
    merged = _merge(parts) if len(parts) > 1 else parts[0]
    return manifest, merged


def responses(data: dict[str, Tensor]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, generated ids) per example, in example order."""
    off = data["prompt_offsets"].tolist()
    ids = data["prompt_ids"].tolist()
    return [(ids[off[i]:off[i + 1]], data["response"][i].tolist()) for i in range(len(off) - 1)]
