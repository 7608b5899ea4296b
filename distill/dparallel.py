"""dParallel certainty-forcing distillation (Chen et al., arXiv 2509.26488; czg1225/dParallel
`LLaDA/llada_train.py`; samplers.md §7): self-distillation on the teacher's own responses.

    dllm-distill pipeline=dparallel model=tiny_llada
    dllm-distill pipeline=dparallel model=llada_8b_instruct pipeline.lora=true pipeline.task=gsm8k

Training rows are prompt + the teacher's response (cut at its first stop token) + EOS fill to `gen_length`, as
the reference right-pads with EOS and trains on the padding. Masking is semi-autoregressive per row: a random
block b of the answer region; earlier blocks stay clean, block b is masked i.i.d. with ratio
p = (1 - eps) * 0.5 + eps, a complementary copy masks exactly the other slots of block b, and every later
block is fully masked in both copies. Per row and copy: cross-entropy on the masked slots of block b, plus
`entropy_weight` times the mean entropy of softmax(logits / temperature) over the masked slots of block b whose
argmax already equals the target ("certainty forcing" only on correct predictions). The batch loss is the mean
over rows of the row's CE + CE' + w (H + H') (a per-row mean, so the data-parallel gradient is exact; the
reference averages over tokens).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm.distill.collect import collect, load_trajectories, responses
from dllm.distill.data import Batch
from dllm.distill.loop import LoopSettings, fit
from dllm.distill.pretrain import Decoding, evaluate_suite
from dllm.eval.distributed import Dist
from dllm.eval.tasks.synthetic import SyntheticTask
from dllm.eval.tracking import Tracker
from dllm.loading import read_config, resolve
from dllm.model import DiffusionLM
from dllm.samplers import EntropyThreshold, Static
from dllm.saving import save, staged

KEEP_OUT = {"config.json", "generation_config.json", "model.safetensors.index.json", "README.md"}
LORA_TARGETS = ["attn.q", "attn.k", "attn.v", "attn.qkv", "attn.o", "mlp.gate", "mlp.up", "mlp.down"]  # qkv: LLaDA2


@dataclass(frozen=True)
class CertaintySettings:
    lr: float
    weight_decay: float
    mask_ratio: float          # i.i.d. mask ratio inside block b (reference: 0.5)
    eps: float                 # p = (1 - eps) * mask_ratio + eps (reference: 1e-3)
    temperature: float         # entropy of softmax(logits / temperature) (reference: 0.5)
    entropy_weight: float      # weight of H + H' (reference: 2)


def encode_pairs(pairs: list[tuple[list[int], list[int]]], gen_length: int, *, left_pad: bool, multiple_of: int,
                 pad_id: int, eos_id: int, stop_ids: tuple[int, ...]) -> Batch:
    """(prompt ids, response ids) -> Batch; the response is cut at its first stop id and EOS-filled to gen_length.
    Layouts as `dllm.distill.data.Batches`: left-padded prompts (bidirectional) or rows from position 0 with
    the length a multiple of the block size (block-causal)."""
    P = max(len(p) for p, _ in pairs)
    L = -(-(P + gen_length) // multiple_of) * multiple_of
    B = len(pairs)
    ids = torch.full((B, L), eos_id, dtype=torch.long)
    valid = torch.ones(B, L, dtype=torch.bool)
    answer = torch.zeros(B, L, dtype=torch.bool)
    pos = torch.arange(L).repeat(B, 1)
    for r, (p, resp) in enumerate(pairs):
        cut = next((i for i, t in enumerate(resp) if t in stop_ids), len(resp))
        a = list(resp[:cut])[:gen_length]
        left = P - len(p) if left_pad else 0
        ids[r, :left], valid[r, :left] = pad_id, False
        pos[r] = (pos[r] - left).clamp(min=0)
        ids[r, left:left + len(p)] = torch.tensor(p)
        if a:
            ids[r, left + len(p):left + len(p) + len(a)] = torch.tensor(a)
        answer[r, left + len(p):left + len(p) + gen_length if left_pad else L] = True
    return Batch(ids, pos, valid, answer)


def answer_blocks(batch: Batch, block_length: int, block_causal: bool) -> Tensor:
    """[B, L] long: the decoding block of every answer slot, -1 outside the answer. Block-causal models decode on
    the absolute grid of their block size (position // block_length); bidirectional ones in blocks of
    `block_length` from the first answer slot, as `dllm.layout` does at inference."""
    if block_causal:
        blk = batch.pos // block_length
    else:
        first = batch.answer.int().argmax(1, keepdim=True)                           # [B, 1]
        blk = (torch.arange(batch.ids.shape[1], device=batch.ids.device) - first).clamp(min=0) // block_length
    return torch.where(batch.answer, blk, -1)


def certainty_masks(blk: Tensor, generator: torch.Generator, mask_ratio: float = 0.5,
                    eps: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """masked [B, L], complementary [B, L], suffix [B, L] bool from the answer block ids `blk` [B, L] (-1: not
    answer). Per row a uniform block b of its answer: `masked` and `complementary` partition block b; `suffix`
    (every later block) is masked in both copies and never scored."""
    B = blk.shape[0]
    lo = torch.where(blk >= 0, blk, blk.max() + 1).amin(1)                          # [B] first answer block
    hi = blk.amax(1)                                                                 # [B] last answer block
    u = torch.rand(B, generator=generator).to(blk.device)
    b = lo + (u * (hi - lo + 1)).long().clamp(max=(hi - lo))                         # [B] chosen block
    cur = blk == b[:, None]
    p = (1 - eps) * mask_ratio + eps
    coin = torch.rand(blk.shape, generator=generator).to(blk.device) < p
    return cur & coin, cur & ~coin, blk > b[:, None]


def row_mean(values: Tensor, sel: Tensor) -> Tensor:
    """[B, L] values, [B, L] bool -> [B] mean over the selected slots of each row (0 where none)."""
    return (values * sel).sum(1) / sel.sum(1).clamp(min=1)


def certainty_entropy(logits: Tensor, target: Tensor, sel: Tensor, temperature: float) -> Tensor:
    """[B] mean entropy of softmax(logits / T) over the selected slots whose argmax equals the target."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)                   # [B, L, V]
    h = -(logp.exp() * logp).sum(-1)                                                 # [B, L]
    return row_mean(h, sel & (logits.argmax(-1) == target))


def certainty_forcing_loss(model: DiffusionLM, batch: Batch, masked: Tensor, comp: Tensor, suffix: Tensor,
                           s: CertaintySettings) -> Tensor:
    """Scalar: mean over rows of CE + CE' + w (H + H') (module docstring); masks from `certainty_masks`. Two
    forwards: the masked copy and the complementary one."""
    total = torch.zeros(batch.ids.shape[0], device=batch.ids.device)
    for sel in (masked, comp):
        x = torch.where(sel | suffix, model.mask_id, batch.ids)                      # [B, L]
        logits = model(x, batch.pos, pad_mask=batch.valid if batch.padded else None).logits   # [B, L, V]
        ce = F.cross_entropy(logits.float().transpose(1, 2), batch.ids, reduction="none")   # [B, L]
        total = total + row_mean(ce, sel) + s.entropy_weight * certainty_entropy(logits, batch.ids, sel,
                                                                                   s.temperature)
    return total.mean()


def add_lora(model: DiffusionLM, r: int, alpha: int, dropout: float = 0.0):
    """Wrap the attention and MLP projections with LoRA adapters (peft on our own module)."""
    from peft import LoraConfig, get_peft_model   # optional: only LoRA runs need peft

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LORA_TARGETS, bias="none")
    return get_peft_model(model, cfg)


def export_student(model: DiffusionLM, source: str | Path, folder: str | Path, card: str) -> Path:
    """The student as a folder `dllm.load` reads: weights + the teacher's config and tokenizer files."""
    src = resolve(source)
    with staged(folder) as tmp:
        save(model, tmp, read_config(src))
        for f in src.iterdir():
            if f.is_file() and f.name not in KEEP_OUT and not f.name.endswith(".safetensors"):
                shutil.copyfile(f, tmp / f.name)
        (tmp / "README.md").write_text(card)
    return Path(folder)


def evaluate(model: DiffusionLM, tasks: list[SyntheticTask], dec: Decoding, samplers: dict) -> list[dict]:
    """Pooled accuracy and forwards (= decoding steps) per example for every sampler."""
    rows = []
    for name, sampler in samplers.items():
        res = evaluate_suite(model, tasks, sampler, dec)
        n = sum(r["n"] for r in res.values())
        rows.append({"sampler": name, "accuracy": sum(r["accuracy"] * r["n"] for r in res.values()) / n,
                     "steps": sum(r["nfe"] * r["n"] for r in res.values()) / n, "n": n})
    return rows


def dparallel(model: DiffusionLM, source: str | Path, prompts: list[list[int]], *, dec: Decoding,
              s: CertaintySettings, loop: LoopSettings, lora: dict | None, seed: int, dist: Dist,
              run_dir: str | Path, export_dir: str | Path, resume: bool, tracker: Tracker, shard_size: int,
              collect_batch: int, eval_tasks: list[SyntheticTask], thresholds: list[float], info: dict,
              command: str = "") -> Path:
    """The recipe: teacher trajectories -> certainty forcing -> export -> student vs teacher."""
    run_dir = Path(run_dir)
    traj = run_dir / "trajectories"
    teacher = Static(steps=dec.gen_length)
    if dist.rank == 0:
        collect(model, prompts, teacher, traj, gen_length=dec.gen_length, block_length=dec.block_length,
                shard_size=shard_size, batch_size=collect_batch, cache=dec.cache, seed=seed, info=info)
    dist.barrier()
    _, data = load_trajectories(traj)
    bc = model.block_causal
    batch = encode_pairs(responses(data), dec.gen_length, left_pad=not bc, multiple_of=dec.block_length if bc else 1,
                         pad_id=model.pad_id, eos_id=model.stop_ids[0], stop_ids=model.stop_ids)
    blk = answer_blocks(batch, dec.block_length, bc)
    samplers = {"static": teacher, **{f"entropy({t})": EntropyThreshold(t) for t in thresholds}}
    before = evaluate(model, eval_tasks, dec, samplers) if dist.rank == 0 and eval_tasks else []
    model.requires_grad_(True)
    student = add_lora(model, **lora) if lora else model
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=s.lr,
                            weight_decay=s.weight_decay)
    device = model.device

    def loss_fn(rows: Tensor, part: slice, step: int) -> Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)   # the global batch's noise, on every rank
        masks = certainty_masks(blk[rows], g, s.mask_ratio, s.eps)
        r = rows[part]
        b = batch.rows(r).to(device)
        return certainty_forcing_loss(model, b, *(m[part].to(device) for m in masks), s)

    state = fit(student, opt, loss_fn, batch.ids.shape[0], loop, seed=seed, dist=dist, run_dir=run_dir,
                resume=resume, tracker=tracker, desc="dparallel")
    if lora:
        model = student.merge_and_unload()
    model.eval().requires_grad_(False)
    if dist.rank == 0:
        after = evaluate(model, eval_tasks, dec, {k: v for k, v in samplers.items() if k != "static"}) if eval_tasks else []
        rows = [{"model": "teacher", **r} for r in before] + [{"model": "student", **r} for r in after]
        tracker.table("compare", rows)
        results = {"train_seconds": state["train_seconds"], "final_loss": state["history"][-1]["loss"],
                   "rows": len(batch.ids), "compare": rows}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        export_student(model, source, export_dir, card(info, command, results))
    dist.barrier()
    return Path(export_dir)


def card(info: dict, command: str, results: dict) -> str:
    lines = ["| model | sampler | accuracy | steps |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['sampler']} | {r['accuracy'] * 100:.1f} | {r['steps']:.2f} |"
              for r in results["compare"]]
    return (f"# dParallel student of {info.get('model')}\n\nCertainty-forcing distillation (arXiv 2509.26488) by "
            f"`dllm.distill.dparallel` on {results['rows']} teacher trajectories, "
            f"{results['train_seconds']:.0f} s of training.\n\n    {command}\n\n" + "\n".join(lines) + "\n")
