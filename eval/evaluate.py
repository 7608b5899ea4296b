"""Evaluate one model x sampler x cache x task: batched generation, scoring, `samples.jsonl` and `metrics.json`.

Every finished batch is appended to the samples file (flushed and fsynced), so an interrupted run loses at most
the batch in flight; re-running into the same directory skips the examples already there. With several
processes (torchrun / accelerate launch) each rank takes every world-th example and writes its own shard;
rank 0 merges the shards in example order and computes the metrics, which equal a one-process run's.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable


import dllm
from dllm.eval.progress import progress as progress_bar
from dllm.eval.tasks.base import Example, Task

log = logging.getLogger(__name__)
_warned_unknown: set[str] = set()
TIMING_KEYS = ("tokens_per_second", "latency_p50", "latency_p90", "latency_p99", "seconds")


def encode(tokenizer, prompt: str, chat_template: bool) -> list[int]:
    """Token ids of a prompt; with `chat_template`, the prompt is the single user turn."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat_template=true but this tokenizer has no chat template; set chat_template=false")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=not chat_template).input_ids
    if not ids:
        raise ValueError(f"prompt tokenizes to nothing: {prompt[:80]!r}")
    warn_unknown(tokenizer, ids, prompt)
    return ids


def warn_unknown(tokenizer, ids: list[int], prompt: str) -> None:
    """Warn once per tokenizer when a prompt holds [UNK] ids: the model never sees what it is asked, so a task
    outside its vocabulary (GSM8K text on the tiny word-level models) scores 0 without another sign."""
    unk, name = getattr(tokenizer, "unk_token_id", None), str(getattr(tokenizer, "name_or_path", ""))
    if unk is None or unk not in ids or name in _warned_unknown:
        return
    _warned_unknown.add(name)
    log.warning("prompt %r tokenizes to %d x %s: the tokenizer of %s cannot represent this task's text, so the "
                "model cannot answer it (warned once)", prompt[:60], ids.count(unk), tokenizer.unk_token, name)


def cut_at_stops(text: str, stops) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def read_samples(path: Path) -> list[dict]:
    """Complete lines of a samples file; a line cut by a kill is dropped (and the file rewritten without it)."""
    if not path.is_file():
        return []
    rows, bad = [], False
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad = True
    if bad:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _append(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def take_spread(examples: list[Example], limit: int | None) -> list[Example]:
    """`limit` examples taken evenly across a suite's tasks (`meta["task"]`), round-robin in each task's order,
    returned in suite order: `limit=20` on the synthetic suite tests every task, not 20 `copy` prompts. A
    single-task list gives its first `limit` examples."""
    if limit is None:
        return list(examples)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer or None (all examples), got {limit!r}")
    by_task: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_task.setdefault(ex.meta.get("task", ""), []).append(i)
    picked, rank = [], 0
    while len(picked) < min(limit, len(examples)):
        for idx in by_task.values():
            if rank < len(idx) and len(picked) < limit:
                picked.append(idx[rank])
        rank += 1
    return [examples[i] for i in sorted(picked)]


def run_batch(model, tokenizer, task: Task, batch: list[Example], sampler, *, gen_length: int, block_length: int,
              cache, seed: int, chat_template: bool) -> list[dict]:
    out = dllm.generate(model, [encode(tokenizer, ex.prompt, chat_template) for ex in batch], sampler,
                        gen_length=gen_length, block_length=block_length, cache=cache, seed=seed)
    completions = [cut_at_stops(tokenizer.decode(s, skip_special_tokens=True), task.stop) for s in out.sequences]
    if hasattr(task, "score_many"):   # MBPP runs its programs in parallel
        scores = task.score_many(batch, completions)
    else:
        scores = [task.score(ex, c) for ex, c in zip(batch, completions)]
    seconds = out.stats["seconds"]
    return [{"id": ex.id, "task": ex.meta.get("task", getattr(task, "name", "task")), "prompt": ex.prompt,
             "completion": c, "extracted": sc.extracted, "correct": bool(sc.correct), "detail": sc.detail,
             "nfe": nfe, "tokens": tok, "seconds": seconds / len(batch), "latency": seconds}
            for ex, c, sc, nfe, tok in zip(batch, completions, scores, out.stats["row_nfe"], out.stats["row_tokens"])]


def metrics(rows: list[dict]) -> dict:
    """Accuracy and speed over the samples; timing keys are the only ones that differ between identical runs."""
    n = len(rows)
    if n == 0:
        raise ValueError("no samples to score (limit=0, or an empty task)")
    nfe, tokens, seconds = (sum(r[k] for r in rows) for k in ("nfe", "tokens", "seconds"))
    lat = sorted(r["latency"] for r in rows)
    pct = lambda q: lat[min(n - 1, max(0, math.ceil(q * n) - 1))]
    out = {"accuracy": sum(r["correct"] for r in rows) / n, "n": n, "nfe_per_example": nfe / n,
           "tokens_per_example": tokens / n, "tokens_per_forward": tokens / max(nfe, 1),
           "tokens_per_second": tokens / max(seconds, 1e-9), "seconds": seconds,
           "latency_p50": pct(0.5), "latency_p90": pct(0.9), "latency_p99": pct(0.99)}
    for key in ("strict", "flexible"):      # GSM8K's two lm-eval filters, when the task reports them
        if all(key in r["detail"] for r in rows):
            out[f"accuracy_{key}"] = sum(bool(r["detail"][key]) for r in rows) / n
    tasks = sorted({r["task"] for r in rows})
    if len(tasks) > 1:
        out["accuracy_by_task"] = {t: sum(r["correct"] for r in rows if r["task"] == t) /
                                   sum(r["task"] == t for r in rows) for t in tasks}
    return out


def evaluate(model, tokenizer, task: Task, sampler, out_dir: str | Path, *, gen_length: int, block_length: int,
             cache="auto", batch_size: int = 16, limit: int | None = None, seed: int = 0,
             chat_template: bool = False, rank: int = 0, world: int = 1, barrier: Callable[[], None] | None = None,
             progress: bool = True) -> dict | None:
    """Run (or resume) the evaluation; returns the metrics on rank 0 (None on other ranks)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = take_spread(task.examples(), limit)
    if len({ex.id for ex in examples}) != len(examples):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has duplicate example ids")
    shard = out_dir / ("samples.jsonl" if world == 1 else f"samples.rank{rank}.jsonl")
    done = {r["id"] for r in read_samples(shard)}
    todo = [ex for ex in examples[rank::world] if ex.id not in done]
    bar = progress_bar(total=len(todo), desc=f"eval {getattr(task, 'name', '')}", disable=not progress or rank != 0)
    t0 = time.perf_counter()
    for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        _append(shard, run_batch(model, tokenizer, task, batch, sampler, gen_length=gen_length,
                                 block_length=block_length, cache=cache, seed=seed, chat_template=chat_template))
        bar.update(len(batch))
    bar.close()
    if world > 1:
        barrier()
        if rank != 0:
            return None
        order = {ex.id: i for i, ex in enumerate(examples)}
        rows = sorted((r for k in range(world) for r in read_samples(out_dir / f"samples.rank{k}.jsonl")),
                      key=lambda r: order[r["id"]])
        write_atomic(out_dir / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    rows = [r for r in read_samples(out_dir / "samples.jsonl") if r["id"] in {ex.id for ex in examples}]
    result = metrics(rows)
    result["wall_seconds_this_run"] = time.perf_counter() - t0
    write_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    return result
