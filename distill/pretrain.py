"""Pretraining recipe for the tiny embedded models: setup, train, evaluate, export.

    dllm-distill pipeline=pretrain model=tiny_sdar
    dllm-distill pipeline=pretrain model=tiny_llada pipeline.steps=200 logger.mode=disabled
    dllm-distill pipeline=pretrain model=tiny_sdar resume=true      # continue a killed run, bit for bit

`sdar` trains with the block-diffusion objective, `llada` with the masked-diffusion objective
(`dllm.distill.objectives`), on the train split of the configured tasks (`TrainSettings.tasks`, see
`dllm.distill.suites`: the short synthetic suite by default, the long tasks, or both) under the configured
tokenizer (`Decoding.tokenizer`: the word-level one of the shipped v1 models, or the suite tokenizer the long
tasks need); evaluation decodes held-out test prompts with `dllm.generate` and scores them with each task's own
scorer. Library functions take plain arguments; only `dllm.distill.cli` reads the Hydra config.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

import dllm
from dllm.distill.caches import card_section, honest_cache, measure_caches
from dllm.distill.checkpoint import export, resume_state, rng_states, save_state, set_rng_states
from dllm.distill.data import Batches
from dllm.distill.loop import average, local_part
from dllm.distill.mix import base_weights, reweight, shares
from dllm.distill.objectives import OBJECTIVES
from dllm.distill.suites import LONG, SET_VALUED, SUITES, build_tasks, metric, task_names
from dllm.distill.tokenizer import EOS_ID, MASK_ID, PAD_ID, TOKENIZERS
from dllm.eval.evaluate import cut_at_stops
from dllm.eval.progress import progress
from dllm.eval.tracking import Tracker
from dllm.eval.distributed import Dist
from dllm.model import DiffusionLM
from dllm.samplers import Static, Threshold
from dllm.saving import family_config, new_model


@dataclass(frozen=True)
class ModelInit:
    family: str                # llada | sdar
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    tie: bool
    block_size: int | None     # sdar only
    rope_theta: float          # RoPE base written to config.json


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    min_lr_ratio: float        # cosine decays to lr * min_lr_ratio
    warmup: int
    weight_decay: float
    grad_clip: float
    t_min: float               # mask ratio t ~ U(t_min, t_max) per sequence, stratified over the batch
    t_max: float
    prompt_length: int         # longest prompt of the suite, in tokens
    eval_every: int
    ckpt_every: int
    eval_n: int                # held-out examples per task for periodic evaluation
    final_eval_n: int          # held-out examples per task for the model card's accuracy table
    sweep_n: int               # held-out examples per task for the Threshold sweep
    eval_seed: int
    taus: tuple[float, ...]    # Threshold sweep for the model card
    task_weights: dict[str, float] | None = None   # training mix by task name (missing: 1); None: uniform
    exact_targets: bool = True # set-valued slots scored against their exact posterior (`dllm.distill.targets`)
    mix_every: int = 0         # adaptive mix (`dllm.distill.mix`): reweight tasks every this many steps; 0: fixed
    mix_n: int = 64            # validation prompts per task (train split) for the adaptive mix
    mix_floor: float = 0.1     # w = task_weight * (validation error + mix_floor)
    tasks: str | tuple[str, ...] = "synthetic"   # what is trained on and reported (`dllm.distill.suites`)
    trim: bool = False         # rows only as long as the batch needs (`dllm.distill.data.Batches`); False: fixed

    def __post_init__(self) -> None:   # fail at start, not at the first reweighting an hour into a run
        task_names(self.tasks)
        if self.mix_every < 0 or (self.mix_every and (self.mix_n < 1 or self.mix_floor <= 0)):
            raise ValueError(f"need mix_every >= 0 and, when adaptive, mix_n >= 1 and mix_floor > 0; got "
                             f"mix_every={self.mix_every}, mix_n={self.mix_n}, mix_floor={self.mix_floor}")


@dataclass(frozen=True)
class Decoding:
    gen_length: int
    block_length: int
    cache: str = "none"
    tokenizer: str = "words"   # a key of `dllm.distill.tokenizer.TOKENIZERS`: text <-> ids for training and eval

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"pipeline.tokenizer must be one of {sorted(TOKENIZERS)}, got {self.tokenizer!r}")


def build_model(init: ModelInit, seed: int, device: torch.device,
                tokenizer: str = "words") -> tuple[DiffusionLM, dict]:
    """A freshly initialised model of `init` whose vocabulary is the tokenizer's (a key of TOKENIZERS)."""
    config = family_config(init.family, vocab=TOKENIZERS[tokenizer]().get_vocab_size(), d_model=init.d_model,
                           n_layers=init.n_layers, n_heads=init.n_heads, n_kv_heads=init.n_kv_heads,
                           d_ff=init.d_ff, tie=init.tie, block_size=init.block_size if init.family == "sdar" else None,
                           mask_id=MASK_ID, eos_id=EOS_ID, pad_id=PAD_ID)
    # the real checkpoints' bases (5e5 LLaDA, 1e6 SDAR) leave only ~2 of 16 frequency pairs turning over a
    # 30-token row; a 1e4 base (the original RoPE, arXiv 2104.09864) gives positional attention all of them
    config["rope_theta"] = init.rope_theta
    torch.manual_seed(seed)
    model = new_model(config)
    # GPT-2 init (N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layers)): torch's default N(0, 1)
    # embedding makes a tied head start with huge logits
    for name, p in model.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * init.n_layers) if name.endswith(("attn.o.weight", "mlp.down.weight")) else 0.02
            torch.nn.init.normal_(p, std=std)
    return model.to(device), config


def make_optimizer(model: DiffusionLM, s: TrainSettings) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on matrices only, as nanoGPT) with linear warmup then cosine decay."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.95))

    def factor(step: int) -> float:
        if step < s.warmup:
            return (step + 1) / s.warmup
        progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate_suite(model: DiffusionLM, tasks: list, sampler, dec: Decoding) -> dict[str, dict]:
    """Per task: accuracy by the task's own scorer (exact match, validity for set-valued tasks, GSM8K's answer
    extraction, MBPP's sandboxed asserts) on completions cut at its stop strings, and mean forwards per example.

    Forwards are counted per row through `on_step` (a row stops costing forwards once finished), which equals
    the batch-1 NFE for every cache mode that runs one forward per step (all but `block`).
    """
    tok, was_training = TOKENIZERS[dec.tokenizer](), model.training
    model.eval()
    results = {}
    for task in tasks:
        examples = task.examples()
        forwards = torch.zeros(len(examples), dtype=torch.long, device=model.device)

        def count(rec, forwards=forwards):
            forwards[rec.rows] += 1

        out = dllm.generate(model, [tok.encode(e.prompt).ids for e in examples], sampler,
                            gen_length=dec.gen_length, block_length=dec.block_length, cache=dec.cache, on_step=count)
        correct = scored(task, examples, out.sequences, tok)
        results[task.name] = {"accuracy": sum(correct) / len(correct), "nfe": forwards.float().mean().item(),
                              "n": len(correct)}
    model.train(was_training)
    return results


def scored(task, examples: list, sequences: list[list[int]], tok: Tokenizer) -> list[bool]:
    """Whether each generated sequence is correct by the task's own scorer, read as text cut at its stops."""
    completions = [cut_at_stops(tok.decode(seq, skip_special_tokens=True), task.stop) for seq in sequences]
    many = getattr(task, "score_many", None)   # MBPP runs its programs in parallel
    scores = many(examples, completions) if many else [task.score(e, c) for e, c in zip(examples, completions)]
    return [sc.correct for sc in scores]


def one_token_per_step(dec: Decoding) -> Static:
    return Static(steps=dec.gen_length)


def train(model: DiffusionLM, opt: torch.optim.Optimizer, sched, batches: Batches, s: TrainSettings, dec: Decoding,
          run_dir: Path, tracker: Tracker, state: dict, seed: int,
          on_step: Callable[[int], None] | None = None, dist: Dist | None = None,
          objective: Callable | None = None, evaluate: Callable | None = None) -> dict:
    """Run steps state["step"] .. s.steps - 1; checkpoint every `ckpt_every` steps and at the end.

    `state` holds step, history (one {"step", "loss", "lr", "grad_norm"} per step) and train_seconds; it is
    returned updated. Everything a step consumes is a function of (seed, step), so resuming from a checkpoint
    replays exactly the steps an uninterrupted run would take. Under `dist` (torchrun, gloo/nccl) each rank
    computes the loss on its contiguous share of the step's batch and gradients are averaged, which equals the
    one-process step up to float summation order; rank 0 alone evaluates and checkpoints.

    With `s.mix_every`, the task mix is recomputed from validation errors every `mix_every` steps
    (`dllm.distill.mix`); the mix in force is kept in `state["mix"]` (and each reweighting in
    `state["mix_history"]`), so a resumed run draws the batches the uninterrupted one would.

    `objective` (default: the family's, `OBJECTIVES`) and `evaluate` (default: `evaluate_suite`, same signature)
    let other recipes run this loop: the autoregressive start and its conversion (`dllm.distill.ar`, `.convert`).
    """
    dist = dist or Dist(0, 1, None)
    part = local_part(s.batch_size, dist) if dist.world > 1 else None
    objective = objective or OBJECTIVES[model.family]
    evaluate = evaluate or evaluate_suite
    device = model.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    eval_tasks = build_tasks(s.tasks, "test", s.eval_n, s.eval_seed)
    names = [t.name for t in batches.tasks]
    base = base_weights(names, s.task_weights)
    mix_tasks = build_tasks(names, "train", s.mix_n, s.eval_seed) if s.mix_every else []
    if state.get("mix") is not None:
        batches.weights = list(state["mix"])
    model.train()
    t0, seconds0 = time.perf_counter(), state["train_seconds"]
    label = getattr(objective, "__name__", type(objective).__name__)
    bar = progress(range(state["step"], s.steps), initial=state["step"], total=s.steps, desc=f"{model.family} {label}",
                   disable=dist.rank != 0)
    for step in bar:
        b = batches[step].to(device)
        noise = torch.Generator().manual_seed(seed * 1_000_003 + step)
        with autocast:
            loss = objective(model, b, noise, s.t_min, s.t_max, rows=part, exact=s.exact_targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist.world > 1:
            for p in model.parameters():
                if p.grad is not None:
                    average(p.grad, dist)
            loss = average(loss.detach().clone(), dist)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        record = {"step": step + 1, "loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item()}
        state["history"].append(record)
        state["step"] = step + 1
        state["train_seconds"] = seconds0 + time.perf_counter() - t0
        tracker.log({"train/loss": record["loss"], "train/lr": lr, "train/grad_norm": record["grad_norm"]}, step + 1)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if s.eval_every and (step + 1) % s.eval_every == 0 and dist.rank == 0:
            res = evaluate(model, eval_tasks, one_token_per_step(dec), dec)
            acc = {f"eval/{k}": v["accuracy"] for k, v in res.items()}
            acc["eval/mean"] = sum(acc.values()) / len(acc)
            tracker.log(acc, step + 1)
            bar.write(f"step {step + 1} loss {record['loss']:.4f} " + " ".join(
                f"{k[5:]}={v:.2f}" for k, v in acc.items()))
        if s.mix_every and (step + 1) % s.mix_every == 0 and step + 1 < s.steps:
            acc = evaluate(model, mix_tasks, one_token_per_step(dec), dec) if dist.rank == 0 else None
            acc = dist.broadcast({k: v["accuracy"] for k, v in acc.items()} if acc is not None else None)
            batches.weights = state["mix"] = reweight(base, [acc[n] for n in names], s.mix_floor)
            state.setdefault("mix_history", []).append({"step": step + 1, "accuracy": acc, "weights": state["mix"]})
            share = dict(zip(names, shares(state["mix"])))
            tracker.log({f"mix/{n}": v for n, v in share.items()}, step + 1)
            bar.write(f"step {step + 1} mix " + " ".join(f"{n}={v:.2f}" for n, v in share.items()))
        if (step + 1) % s.ckpt_every == 0 or step + 1 == s.steps:
            if dist.rank == 0:
                checkpoint(run_dir, model, opt, sched, state)
            dist.barrier()
        if on_step is not None:
            on_step(step + 1)
    bar.close()
    return state


def checkpoint(run_dir: Path, model: DiffusionLM, opt, sched, state: dict) -> None:
    save_state(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "rng": rng_states(), **state})


def restore(run_dir: Path, model: DiffusionLM, opt, sched, steps: int | None = None) -> dict:
    """The saved progress (step, history, train_seconds) with model/optimizer/scheduler/RNG restored in place;
    with `steps`, a state past it is refused (`resume_state`)."""
    saved = resume_state(run_dir, steps if steps is not None else float("inf"))
    if saved is None:
        return {"step": 0, "history": [], "train_seconds": 0.0}
    model.load_state_dict(saved.pop("model"))
    opt.load_state_dict(saved.pop("optimizer"))
    sched.load_state_dict(saved.pop("scheduler"))
    set_rng_states(saved.pop("rng"))
    return saved


def train_batches(s: TrainSettings, dec: Decoding, seed: int, *, left_pad: bool, multiple_of: int) -> Batches:
    """The training batches of every recipe here (pretraining, the AR start, its conversion): the train split of
    the configured tasks under the configured mix and tokenizer; `left_pad` for bidirectional models, rows a
    multiple of the block grid."""
    tasks = build_tasks(s.tasks, "train")
    weights = base_weights([t.name for t in tasks], s.task_weights) if s.task_weights else None
    return Batches(tasks, s.batch_size, s.prompt_length, dec.gen_length, seed, left_pad=left_pad,
                   multiple_of=multiple_of, weights=weights, tokenizer=TOKENIZERS[dec.tokenizer](), trim=s.trim)


def pretrain(init: ModelInit, s: TrainSettings, dec: Decoding, *, seed: int, run_dir: str | Path,
             export_dir: str | Path, resume: bool, tracker: Tracker, device: torch.device, command: str,
             on_step: Callable[[int], None] | None = None, dist: Dist | None = None) -> Path:
    """The whole recipe: build, (resume,) train, evaluate on held-out prompts, export with a model card."""
    run_dir = Path(run_dir)
    model, config = build_model(init, seed, device, dec.tokenizer)
    opt, sched = make_optimizer(model, s)
    state = restore(run_dir, model, opt, sched, s.steps) if resume else {"step": 0, "history": [], "train_seconds": 0.0}
    batches = train_batches(s, dec, seed, left_pad=init.family == "llada",
                            multiple_of=init.block_size if init.family == "sdar" else 1)
    state = train(model, opt, sched, batches, s, dec, run_dir, tracker, state, seed, on_step, dist)
    return evaluate_and_export(model, config, init, s, dec, state, [t.name for t in batches.tasks], export_dir,
                               tracker, command, seed, device, dist)


def evaluate_and_export(model: DiffusionLM, config: dict, init: ModelInit, s: TrainSettings, dec: Decoding,
                        state: dict, task_names: list[str], export_dir: str | Path, tracker: Tracker, command: str,
                        seed: int, device: torch.device, dist: Dist | None = None, about: str | None = None,
                        appendix: str = "") -> Path:
    """The end of a recipe: held-out accuracy, the Threshold sweep and every cache mode (the fastest within a
    point of `none` becomes the checkpoint's `cache="auto"`, `dllm.distill.caches`), then the export with its
    model card (`about`: the card's paragraph on where the model comes from, None: trained from scratch here;
    `appendix`: text the card ends with, e.g. the card of the AR start it was converted from)."""
    if dist is not None and dist.world > 1:   # rank 0 evaluates and exports; the others wait for it
        if dist.rank != 0:
            dist.barrier()
            return Path(export_dir)
    t0 = time.perf_counter()
    tasks = build_tasks(s.tasks, "test", s.final_eval_n, s.eval_seed)
    static = evaluate_suite(model, tasks, one_token_per_step(dec), dec)
    sweep_tasks = build_tasks(s.tasks, "test", s.sweep_n, s.eval_seed) if s.sweep_n else []   # sweep_n=0: no sweep
    sweep = {tau: evaluate_suite(model, sweep_tasks, Threshold(tau), dec) for tau in s.taus} if sweep_tasks else {}
    caches = measure_caches(model, sweep_tasks or tasks, dec, evaluate_suite, one_token_per_step(dec))
    model.default_cache = honest_cache(caches)
    tracker.summary({f"final/{k}": v["accuracy"] for k, v in static.items()} | {"final/cache": model.default_cache})
    facts = {"command": command, "seed": seed, "params": sum(p.numel() for p in model.parameters()),
             "train_seconds": state["train_seconds"], "eval_seconds": time.perf_counter() - t0,
             "final_loss": sum(r["loss"] for r in state["history"][-100:]) / max(1, len(state["history"][-100:])),
             "threads": torch.get_num_threads(), "device": str(device),
             "mix": dict(zip(task_names, shares(state["mix"]))) if state.get("mix") else None}
    out = export(model, config, export_dir, model_card(init, s, dec, facts, static, sweep, about, caches,
                                                       model.default_cache) + appendix, dec.tokenizer)
    if dist is not None and dist.world > 1:
        dist.barrier()
    return out


def model_card(init: ModelInit, s: TrainSettings, dec: Decoding, facts: dict, static: dict, sweep: dict,
               about: str | None = None, caches: dict | None = None, default_cache: str | None = None) -> str:
    """README.md: front matter with the measured accuracies (read by the tests), then the human tables."""
    name = model_name(init.family, dec.tokenizer)
    kind = "block-diffusion (block-causal, BD3-LM objective)" if init.family == "sdar" else \
        "masked-diffusion (bidirectional, LLaDA objective)"
    front = ["---", "library_name: dllm", f"family: {init.family}", f"seed: {facts['seed']}",
             f"gen_length: {dec.gen_length}", f"block_length: {dec.block_length}", f"eval_n_per_task: {s.final_eval_n}",
             f"eval_seed: {s.eval_seed}", f"tokenizer: {dec.tokenizer}", f"tasks: [{', '.join(task_names(s.tasks))}]",
             *([f"default_cache: {default_cache}"] if default_cache else []),
             "accuracy:"] + [f"  {k}: {v['accuracy']:.4f}" for k, v in static.items()] + ["---"]
    rows = [f"| {k} | {metric(k)} | {v['accuracy'] * 100:.1f} | {v['nfe']:.1f} |" for k, v in static.items()]
    taus = list(sweep)
    sweep_rows = [f"| {k} | " + " | ".join(f"{sweep[t][k]['accuracy'] * 100:.1f} / {sweep[t][k]['nfe']:.1f}"
                                          for t in taus) + " |" for k in static]
    minutes = facts["train_seconds"] / 60
    set_valued = any(n in SET_VALUED for n in task_names(s.tasks))
    targets = ("; set-valued (shuffle) slots scored against their exact posterior (`dllm.distill.targets`)"
               if s.exact_targets else "; every slot scored against its sampled token") if set_valued else ""
    about = about or f"""trained from scratch by
`dllm.distill.pretrain` on {data(s, dec)}. It is an embedded model of `dllm`: load it with `dllm.load("{name}")`."""
    body = f"""
# {name}

A {facts['params'] / 1e6:.2f} M-parameter {init.family} {kind} model {about}

## Reproduce

```
{facts['command']}
```

Seed {facts['seed']}; {s.steps} steps of batch {s.batch_size}; AdamW lr {s.lr} (warmup {s.warmup}, cosine to
{s.min_lr_ratio} x), weight decay {s.weight_decay}, grad clip {s.grad_clip}; mask ratio t ~ U({s.t_min}, {s.t_max}); task mix {mix(s, facts['mix'])}{targets}. Training took {minutes:.1f} min
(including periodic evaluation) on {facts['device']} with {facts['threads']} threads, fp32; mean loss of the last
100 steps {facts['final_loss']:.4f}.

Architecture: d_model {init.d_model}, {init.n_layers} layers, {init.n_heads} query / {init.n_kv_heads} key-value
heads, SwiGLU {init.d_ff}, RoPE base {init.rope_theta:g}, {'tied' if init.tie else 'untied'} embeddings{f', block size {init.block_size}' if init.block_size and init.family == 'sdar' else ''};
{facts['params']:,} parameters. Decoding defaults: gen_length {dec.gen_length}, block_length {dec.block_length}.

## Accuracy (measured at the end of training)

Held-out test split, {s.final_eval_n} prompts per task (seed {s.eval_seed}), `Static(steps={dec.gen_length})`
(one token per step), gen_length {dec.gen_length}, block_length {dec.block_length}, cache `{dec.cache}`, greedy.
NFE is the mean number of forwards per example (rows stop once they commit EOS).

| task | metric | accuracy % | NFE |
| --- | --- | --- | --- |
{chr(10).join(rows)}

{card_section(caches, default_cache, s.sweep_n or s.final_eval_n, f"Static(steps={dec.gen_length})") if caches else ""}
## Parallel decoding: `Threshold(tau)`

Accuracy % / NFE per example as the confidence threshold falls (tau > 1 commits one token per step); the first
{s.sweep_n} prompts per task of the same held-out set (examples are drawn in the same order), same decoding settings. Lower tau commits more tokens per forward and exposes the dependence between
positions{': the set-valued `shuffle` is where independent commits first duplicate or drop items' if set_valued else ''}.

| task | {' | '.join(f'tau {t}' for t in taus)} |
| --- | {' | '.join('---' for _ in taus)} |
{chr(10).join(sweep_rows)}

Evaluation took {facts['eval_seconds']:.0f} s.
"""
    if not sweep:
        head, _, tail = body.partition("## Parallel decoding")
        body = head + "No Threshold sweep (`pipeline.sweep_n=0`).\n\nEvaluation took" + tail.split("Evaluation took")[1]
    return "\n".join(front) + "\n" + body


def model_name(family: str, tokenizer: str) -> str:
    """The embedded name of a model: v1 (`tiny-sdar`) speaks the word-level tokenizer, v2 the suite one."""
    return f"tiny-{family}" if tokenizer == "words" else f"tiny-{family}-v2"


def data(s: TrainSettings, dec: Decoding) -> str:
    """The model card's description of the training data."""
    names = task_names(s.tasks)
    short = [n for n in names if n not in LONG]
    whole = set(short) == set(SUITES["synthetic"])
    parts = ([f"the synthetic suite (`dllm.eval.tasks.synthetic`{'' if whole else ': ' + ', '.join(short)})"]
             if short else []) + [f"`{n}` (`dllm.eval.tasks.{'wordproblems' if n == 'gsm_synth' else 'programs'}`)"
                                  for n in names if n in LONG]
    tok = "the word-level tokenizer" if dec.tokenizer == "words" else "the suite tokenizer (byte-level BPE)"
    return f"{' and '.join(parts)}, train split, with {tok} of `dllm.distill.tokenizer`"


def mix(s: TrainSettings, final: dict[str, float] | None = None) -> str:
    """The model card's description of the training mix (`final`: each task's share at the end)."""
    fixed = "uniform except " + ", ".join(f"{k} x{v:g}" for k, v in s.task_weights.items()) if s.task_weights \
        else "uniform"
    if not s.mix_every:
        return fixed
    text = (f"adaptive (`dllm.distill.mix`): {fixed} at first, then every {s.mix_every} steps each task's weight "
            f"times (its error on {s.mix_n} train-split validation prompts + {s.mix_floor:g})")
    if final:
        text += ", ending at " + ", ".join(f"{n} {v * 100:.0f}%" for n, v in final.items())
    return text


def settings_dict(init: ModelInit, s: TrainSettings, dec: Decoding) -> dict:
    return {"init": asdict(init), "train": asdict(s), "decoding": asdict(dec)}
