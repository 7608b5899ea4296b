"""Autoregressive start: causal next-token pretraining, the base that `dllm.distill.convert` turns into diffusion.

    dllm-distill pipeline=ar model=tiny_sdar                     # -> outputs/ar/tiny-sdar/model (a Qwen3 checkpoint)
    dllm-distill pipeline=ar model=tiny_sdar resume=true         # continue a killed run, bit for bit
    dllm-distill pipeline=convert model=tiny_sdar pipeline.init=outputs/ar/tiny-sdar/model    # -> block diffusion
    dllm-distill pipeline=convert model=tiny_llada pipeline.init=outputs/ar/tiny-sdar/model   # -> masked diffusion

SDAR (Qwen3-Base), Fast-dLLM v2 (Qwen2.5), Dream (Qwen2.5) and A2D (ZHZisZZ/dllm, Qwen3) all start from an
autoregressive model rather than from scratch; this recipe makes that start on our own data. The model is the
`sdar` architecture (Qwen3 layout: GQA, per-head q/k RMSNorm, SwiGLU) with block size 1, which is causal
attention, trained by `next_token_loss` on the batches pretraining uses (`pretrain.train_batches`, rows aligned
to position 0) through `pretrain.train`: resume, wandb, data parallelism and the progress bar are pretraining's.

It predicts token i + 1 at position i, a logit shift our diffusion families do not have (`dllm.protocols`), so
it is exported as what it is: a Qwen3 causal LM (`Qwen3ForCausalLM` config keys, SDAR's weight names, which are
Qwen3's), the checkpoint SDAR converts. transformers loads it; `dllm.load` refuses it (unknown family), which
keeps it from being decoded as a diffusion model. Held-out accuracy is measured by greedy AR decoding
(`evaluate_ar`), scored like the diffusion models.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from dllm.distill.pretrain import (Decoding, ModelInit, TrainSettings, build_model, data, make_optimizer, restore,
                                   scored, train, train_batches)
from dllm.distill.objectives import next_token_loss
from dllm.distill.suites import build_tasks, metric
from dllm.distill.tokenizer import TOKENIZERS, save_tokenizer
from dllm.eval.distributed import Dist
from dllm.eval.tracking import Tracker
from dllm.model import DiffusionLM
from dllm.models.sdar import FAMILY as SDAR
from dllm.saving import staged

DIFFUSION_KEYS = ("block_size", "mask_token_id", "attn_implementation")   # SDAR keys a Qwen3 config lacks


def ar_init(init: ModelInit) -> ModelInit:
    """The AR model of an architecture: Qwen3 layout (the `sdar` family's) with block size 1 (causal)."""
    return replace(init, family="sdar", block_size=1)


def qwen3_config(sdar_config: dict) -> dict:
    """The Qwen3 config.json of a block-size-1 sdar config: same keys minus the diffusion ones."""
    cfg = {k: v for k, v in sdar_config.items() if k not in DIFFUSION_KEYS}
    return {**cfg, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}


def export_ar(model: DiffusionLM, config: dict, folder: str | Path, card: str, tokenizer: str = "words") -> Path:
    """Write a Qwen3 checkpoint: config.json, model.safetensors (Qwen3 = SDAR weight names), tokenizer, card.
    The folder is built aside and renamed into place (`dllm.saving.staged`): never half-written."""
    names = SDAR.weight_names(model.cfg)
    with staged(folder) as tmp:
        save_file({names[k]: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()},
                  tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({"eos_token_id": list(model.stop_ids)}, indent=2))
        (tmp / "README.md").write_text(card)
        save_tokenizer(tmp, tokenizer)
    return Path(folder)


@torch.no_grad()
def greedy(model: DiffusionLM, prompts: list[list[int]], gen_length: int) -> tuple[list[list[int]], list[int]]:
    """Greedy AR decoding with causal attention: (tokens up to the first stop id, forwards each row needed).

    Prompts are left-padded with positions restarting at 0 on each row's first token (`dllm.layout`); one forward
    of the whole sequence per token (no cache: the tiny models need none)."""
    B, P = len(prompts), max(len(p) for p in prompts)
    x = torch.full((B, P), model.pad_id, dtype=torch.long, device=model.device)
    valid = torch.zeros(B, P, dtype=torch.bool, device=model.device)
    for r, p in enumerate(prompts):
        x[r, P - len(p):] = torch.tensor(p, device=model.device)
        valid[r, P - len(p):] = True
    padded = not bool(valid.all())
    for _ in range(gen_length):
        L = x.shape[1]
        pos = (valid.long().cumsum(1) - 1).clamp(min=0)                                  # [B, L]
        logits = model(x, pos, pad_mask=valid if padded else None, block_size=1, logits_range=(L - 1, L)).logits
        logits[..., model.mask_id] = float("-inf")                                        # [B, 1, V]
        x = torch.cat((x, logits[:, -1].argmax(-1, keepdim=True)), 1)
        valid = torch.cat((valid, torch.ones_like(valid[:, :1])), 1)
    out, forwards = [], []
    for row in x[:, P:].tolist():
        cut = next((i for i, t in enumerate(row) if t in model.stop_ids), None)
        out.append(row if cut is None else row[:cut])
        forwards.append(gen_length if cut is None else cut + 1)
    return out, forwards


def evaluate_ar(model: DiffusionLM, tasks: list, sampler, dec: Decoding) -> dict[str, dict]:
    """`pretrain.evaluate_suite` for an AR model (same signature and result; `sampler` is unused): accuracy of
    greedy AR decoding and mean forwards per example (one per token up to EOS)."""
    tok, was_training = TOKENIZERS[dec.tokenizer](), model.training
    model.eval()
    results = {}
    for task in tasks:
        examples = task.examples()
        seqs, forwards = greedy(model, [tok.encode(e.prompt).ids for e in examples], dec.gen_length)
        correct = scored(task, examples, seqs, tok)
        results[task.name] = {"accuracy": sum(correct) / len(correct), "nfe": sum(forwards) / len(forwards),
                              "n": len(correct)}
    model.train(was_training)
    return results


def ar_pretrain(init: ModelInit, s: TrainSettings, dec: Decoding, *, seed: int, run_dir: str | Path,
                export_dir: str | Path, resume: bool, tracker: Tracker, device: torch.device, command: str,
                on_step: Callable[[int], None] | None = None, dist: Dist | None = None) -> Path:
    """The whole recipe: build, (resume,) train with next-token CE, evaluate by greedy decoding, export Qwen3."""
    run_dir, init = Path(run_dir), ar_init(init)
    model, config = build_model(init, seed, device, dec.tokenizer)
    opt, sched = make_optimizer(model, s)
    state = restore(run_dir, model, opt, sched, s.steps) if resume else {"step": 0, "history": [], "train_seconds": 0.0}
    batches = train_batches(s, dec, seed, left_pad=False, multiple_of=1)
    state = train(model, opt, sched, batches, s, dec, run_dir, tracker, state, seed, on_step, dist,
                  objective=next_token_loss, evaluate=evaluate_ar)
    if dist is not None and dist.world > 1 and dist.rank != 0:   # rank 0 evaluates and exports
        dist.barrier()
        return Path(export_dir)
    t0 = time.perf_counter()
    static = evaluate_ar(model, build_tasks(s.tasks, "test", s.final_eval_n, s.eval_seed), None, dec)
    tracker.summary({f"final/{k}": v["accuracy"] for k, v in static.items()})
    facts = {"command": command, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
             "train_seconds": state["train_seconds"], "eval_seconds": time.perf_counter() - t0,
             "final_loss": sum(r["loss"] for r in state["history"][-100:]) / max(1, len(state["history"][-100:])),
             "threads": torch.get_num_threads(), "device": str(device)}
    out = export_ar(model, qwen3_config(config), export_dir, ar_card(init, s, dec, facts, static), dec.tokenizer)
    if dist is not None and dist.world > 1:
        dist.barrier()
    return out


def ar_card(init: ModelInit, s: TrainSettings, dec: Decoding, facts: dict, static: dict) -> str:
    """README.md: front matter with the measured accuracies, then how it was made and how to convert it."""
    front = ["---", "library_name: dllm", "family: qwen3 (autoregressive)", f"seed: {facts['seed']}",
             f"gen_length: {dec.gen_length}", f"eval_n_per_task: {s.final_eval_n}", f"eval_seed: {s.eval_seed}",
             "accuracy:"] + [f"  {k}: {v['accuracy']:.4f}" for k, v in static.items()] + ["---"]
    rows = [f"| {k} | {metric(k)} | {v['accuracy'] * 100:.1f} | {v['nfe']:.1f} |" for k, v in static.items()]
    return "\n".join(front) + f"""

# AR base (Qwen3 layout)

A {facts['params'] / 1e6:.2f} M-parameter causal language model trained by `dllm.distill.ar` with next-token
cross-entropy on every token (prompt and answer) of {data(s, dec)}. It predicts token i + 1
at position i, so it is a Qwen3 checkpoint (transformers `Qwen3ForCausalLM`), not a `dllm` diffusion model.
Convert it with dllm-distill (`pipeline=convert pipeline.init=<this folder> model=<preset>`): a preset of the
`sdar` family (block diffusion) or the `llada` family (masked diffusion) with this model's data, e.g.
`tiny_sdar_v2` / `tiny_llada_v2`.

## Reproduce

```
{facts['command']}
```

Seed {facts['seed']}; {s.steps} steps of batch {s.batch_size}; AdamW lr {s.lr} (warmup {s.warmup}, cosine to
{s.min_lr_ratio} x), weight decay {s.weight_decay}, grad clip {s.grad_clip}. Architecture: d_model {init.d_model},
{init.n_layers} layers, {init.n_heads} query / {init.n_kv_heads} key-value heads, per-head q/k RMSNorm, SwiGLU
{init.d_ff}, RoPE base {init.rope_theta:g}, {'tied' if init.tie else 'untied'} embeddings; {facts['params']:,}
parameters. Training took {facts['train_seconds'] / 60:.1f} min on {facts['device']} with {facts['threads']}
threads, fp32; mean loss of the last 100 steps {facts['final_loss']:.4f}.

## Accuracy (greedy autoregressive decoding)

Held-out test split, {s.final_eval_n} prompts per task (seed {s.eval_seed}), up to {dec.gen_length} tokens;
forwards = tokens decoded up to and including EOS. Evaluation took {facts['eval_seconds']:.0f} s.

| task | metric | accuracy % | forwards |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""
