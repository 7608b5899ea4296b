"""The exported model's default cache: the fastest mode that is measured to cost at most a point of accuracy.

`cache="auto"` is what `dllm-eval`, `dllm-compare`, `dllm-generate` and `dllm.generate` use unless told
otherwise. The family defaults are the fast ones (block_fused for sdar, exact; prefix for llada, Fast-dLLM's
approximation, arXiv 2505.22618), and an approximate cache can cost a small model a lot (the shipped tiny-llada
loses ~25 points of Static accuracy with prefix). So a recipe measures Static accuracy under every mode the
family has on held-out prompts and exports the fastest mode within `TOLERANCE` of `none` on every task as the
checkpoint's default (`dllm_default_cache` in generation_config.json, read by `dllm.load`); the other modes stay
available and their figures go into the model card.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

TOLERANCE = 0.01                                        # one point of accuracy
FASTEST_FIRST = ("block_fused", "block", "dual", "prefix")   # forwards get cheaper from right to left


def measure_caches(model, tasks: list, dec, evaluate: Callable, sampler) -> dict[str, dict]:
    """{mode: evaluate(model, tasks, sampler, dec with that cache)} for every cache mode of the model."""
    return {mode: evaluate(model, tasks, sampler, replace(dec, cache=mode)) for mode in model.cache_modes}


def honest_cache(table: dict[str, dict], tolerance: float = TOLERANCE) -> str:
    """The fastest measured mode whose accuracy is within `tolerance` of `none` on every task; else `none`."""
    ref = table["none"]
    for mode in FASTEST_FIRST:
        if mode in table and all(table[mode][t]["accuracy"] >= ref[t]["accuracy"] - tolerance for t in ref):
            return mode
    return "none"


def card_section(table: dict[str, dict], chosen: str, n: int, sampler: str) -> str:
    """The model card's cache table: accuracy % / NFE per task and mode, and the default it led to."""
    modes = list(table)
    rows = [f"| {t} | " + " | ".join(f"{table[m][t]['accuracy'] * 100:.1f} / {table[m][t]['nfe']:.1f}"
                                     for m in modes) + " |" for t in table["none"]]
    return f"""## Cache modes

Accuracy % / NFE per example of `{sampler}` under every cache mode, on the first {n} held-out prompts per task.
`cache="auto"` for this checkpoint is **`{chosen}`**: the fastest mode within {TOLERANCE * 100:g} point of `none` on
every task (`dllm.distill.caches`); the others stay available with `cache=<mode>`.

| task | {' | '.join(modes)} |
| --- | {' | '.join('---' for _ in modes)} |
{chr(10).join(rows)}
"""
