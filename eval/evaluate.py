"""Evaluate one model x sampler x cache x task: batched generation, scoring, `samples.jsonl` and `metrics.json`.

Every finished batch is appended to the samples file (flushed and fsynced), so an interrupted run loses at most
the batch in flight; re-running into the same directory skips the examples already there. With several
processes (torchrun / accelerate launch) each rank takes every world-th example and writes its own shard;
rank 0 merges the shards in example order and computes the metrics, which equal a one-process run's.

A folder holds one run's results, each example once (`claim`): a lock makes a second writer fail at once,
`identity.json` records the model, sampler, cache, task, seed and generation settings, and resuming under
another identity is an error naming the differences (`overwrite=True` starts over). Unreadable or repeated
lines in a samples file are dropped with a warning, and their examples are redone.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


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


ROW_KEYS = ("id", "task", "correct", "detail", "nfe", "tokens", "seconds", "latency")   # what `metrics` reads


def read_samples(path: Path) -> list[dict]:
    """The rows of a samples file, each example once.

    A line that is not a JSON object with the row keys (cut by a kill, invalid UTF-8, edited by hand) is dropped,
    a repeated example id keeps its first row; the file is then rewritten without them and a warning says so,
    so a resumed run redoes exactly those examples."""
    if not path.is_file():
        return []
    rows, seen, bad, repeated = [], set(), 0, 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not all(k in row for k in ROW_KEYS):
            bad += 1
        elif row["id"] in seen:
            repeated += 1
        else:
            seen.add(row["id"])
            rows.append(row)
    if bad or repeated:
        warnings.warn(f"{path}: dropped {bad} unreadable line(s) and {repeated} repeated example(s); the file is "
                      "rewritten without them and a resumed run redoes those examples", stacklevel=2)
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


IDENTITY = "identity.json"
# task fields that locate data or tune speed, not what is evaluated: moving the data must not block a resume
_TASK_IGNORED = ("tokenizer", "data_dir", "cache_dir", "workers")


class RunFolderError(ValueError):
    """The output folder is busy (another writer) or holds another run's results."""


def run_identity(model, task: Task, sampler, cache, *, gen_length: int, block_length: int, seed: int,
                 chat_template: bool) -> dict:
    """What must match for rows to belong to one run: model (name and weights fingerprint), sampler, cache, task,
    seed, generation settings.
    (batch_size and limit may change between resumes: rows do not depend on them at temperature 0.)"""
    if dataclasses.is_dataclass(task):
        fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.name not in _TASK_IGNORED}
        task_id = f"{type(task).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"
    else:
        task_id = f"{type(task).__name__}({getattr(task, 'name', '')!r})"
    identity = {"model": str(getattr(model, "name_or_path", "") or type(model).__name__),
                "weights": getattr(model, "weights_id", ""),   # the same name retrained must not resume
                "dtype": str(getattr(model, "dtype", "")),
                "sampler": repr(sampler) if dataclasses.is_dataclass(sampler) else type(sampler).__name__,
                "cache": repr(cache), "task": task_id, "seed": seed, "gen_length": gen_length,
                "block_length": block_length, "chat_template": chat_template}
    return json.loads(json.dumps(identity, default=repr))   # as identity.json reads back, so the two compare


_held: dict[Path, int] = {}   # lock files this process holds -> depth (dllm-eval claims, then evaluate re-enters)


@contextmanager
def claim(out_dir: str | Path, identity: dict, *, overwrite: bool = False, rank: int = 0, world: int = 1,
          barrier: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold `out_dir` for one run: an exclusive lock (rank k of a data-parallel run locks its own shard), then,
    on rank 0, the identity check (or, with overwrite, the removal of the previous results).

    The lock is `flock` on a file in the folder: the kernel releases it when the process dies, so a killed run
    never leaves a stale lock. Re-entrant within a process."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = (out_dir / (".lock" if rank == 0 else f".lock.rank{rank}")).resolve()
    if lock in _held:
        _held[lock] += 1
        try:
            if rank == 0:
                _check_identity(out_dir, identity)
            yield out_dir
        finally:
            _held[lock] -= 1
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderError(f"{out_dir} is being written by another evaluation (pid {holder}); two writers would "
                             "mix their rows. Wait for it to finish, or write elsewhere (hydra.run.dir=...)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[lock] = 1
        if rank == 0:
            if overwrite:
                for old in [*out_dir.glob("samples*.jsonl"), out_dir / "metrics.json", out_dir / IDENTITY]:
                    old.unlink(missing_ok=True)
            _check_identity(out_dir, identity)
            write_atomic(out_dir / IDENTITY, json.dumps(identity, indent=2))
        if barrier is not None and world > 1:   # no rank reads its shard before rank 0 has checked or cleared it
            barrier()
        yield out_dir
    finally:
        _held.pop(lock, None)
        os.close(fd)                           # releases the lock


def _check_identity(out_dir: Path, identity: dict) -> None:
    path = out_dir / IDENTITY
    how = "pass overwrite=true to start over, or write elsewhere (hydra.run.dir=...)"
    if not path.is_file():
        if any(out_dir.glob("samples*.jsonl")):
            raise RunFolderError(f"{out_dir} holds samples but no {IDENTITY}, so its rows cannot be checked against "
                                 f"this run; {how}")
        return
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path} is unreadable ({e}); {how}") from None
    diff = [f"{k}: {stored.get(k)!r} there, {identity.get(k)!r} now" for k in sorted({*stored, *identity})
            if stored.get(k) != identity.get(k)]
    if diff:
        raise RunFolderError(f"{out_dir} holds results of another run; resuming would mix them. Differences: "
                             + "; ".join(diff) + f". {how}")


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
             progress: bool = True, overwrite: bool = False) -> dict | None:
    """Run (or resume) the evaluation; returns the metrics on rank 0 (None on other ranks).
    overwrite: discard the folder's previous results instead of resuming them."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    identity = run_identity(model, task, sampler, cache, gen_length=gen_length, block_length=block_length, seed=seed,
                            chat_template=chat_template)
    with claim(out_dir, identity, overwrite=overwrite, rank=rank, world=world, barrier=barrier):
        return _evaluate(model, tokenizer, task, sampler, Path(out_dir), gen_length=gen_length,
                         block_length=block_length, cache=cache, batch_size=batch_size, limit=limit, seed=seed,
                         chat_template=chat_template, rank=rank, world=world, barrier=barrier, progress=progress)


def _evaluate(model, tokenizer, task: Task, sampler, out_dir: Path, *, gen_length: int, block_length: int, cache,
              batch_size: int, limit: int | None, seed: int, chat_template: bool, rank: int, world: int,
              barrier: Callable[[], None] | None, progress: bool) -> dict | None:
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
        # each example once, even when an earlier run with another world size left it in another rank's shard
        merged = {r["id"]: r for k in reversed(range(world)) for r in read_samples(out_dir / f"samples.rank{k}.jsonl")
                  if r["id"] in order}
        rows = sorted(merged.values(), key=lambda r: order[r["id"]])
        write_atomic(out_dir / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    rows = [r for r in read_samples(out_dir / "samples.jsonl") if r["id"] in {ex.id for ex in examples}]
    result = metrics(rows)
    result["wall_seconds_this_run"] = time.perf_counter() - t0
    write_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    return result
