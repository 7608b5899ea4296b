"""`dllm-bench`: tokens/s, NFE and per-position cost of every cache mode, written to `bench.json` and printed.

The models are random-initialised at the configured shape, so no download or training is needed; decoding
runs with stop_at_eos=False, so every configuration generates exactly gen_length tokens per row. The cost per
token at a position is the wall time of the block holding it divided by its tokens, so an exact block cache
shows a flat profile (ratio late/early near 1), while an uncached model pays for the whole canvas every step.

    dllm-bench                                   # both tiny families, gen 256 and 1024, batch 1
    dllm-bench families=[sdar] batch_sizes=[1,8] gen_lengths=[256]
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import dllm
from dllm.loading import parse_device, parse_dtype
from dllm.samplers import Static
from dllm.testing import random_model

MODES = {"sdar": ("none", "block", "block_fused"), "llada": ("none", "prefix", "dual")}


def block_costs(model, prompts, sampler, gen_length, block_length, cache, seed) -> tuple[dllm.Generation, list]:
    """Run once, timing every step; returns the generation and [(first gen offset of block, seconds, tokens)]."""
    marks: list = []
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)

    def on_step(r):
        sync()
        marks.append((r.block.index, time.perf_counter(), int(r.commit.sum())))

    sync()
    t0 = time.perf_counter()
    out = dllm.generate(model, prompts, sampler, gen_length=gen_length, block_length=block_length, cache=cache,
                        seed=seed, stop_at_eos=False, on_step=on_step)
    per_block: dict[int, list] = {}
    prev = t0
    for block, t, n in marks:
        acc = per_block.setdefault(block, [0.0, 0])
        acc[0] += t - prev
        acc[1] += n
        prev = t
    return out, [(b * block_length, s, n) for b, (s, n) in sorted(per_block.items())]


def per_token_ms(costs: list, offset: int) -> float:
    """ms per generated token in the block holding generation offset `offset`."""
    start, seconds, tokens = max((c for c in costs if c[0] <= offset), key=lambda c: c[0])
    return 1000 * seconds / max(tokens, 1)


def run(cfg: DictConfig) -> list[dict]:
    device = parse_device(cfg.device)
    dtype = parse_dtype(cfg.dtype, device)
    g = torch.Generator().manual_seed(cfg.seed)
    rows = []
    grid = [(f, G, B, c) for f in cfg.families for G in cfg.gen_lengths for B in cfg.batch_sizes for c in MODES[f]]
    models = {f: random_model(f, seed=cfg.seed, **OmegaConf.to_container(cfg.shape))[0].to(device, dtype)
              for f in cfg.families}
    for family, G, B, cache in tqdm(grid, desc="dllm-bench"):
        model = models[family]
        prompts = torch.randint(0, model.vocab_size - 2, (B, cfg.prompt_length), generator=g).tolist()
        sampler = Static(steps=G // cfg.block_length * cfg.steps_per_block)
        block_costs(model, prompts, sampler, min(G, 2 * cfg.block_length), cfg.block_length, cache, cfg.seed)  # warm-up
        best = None
        for _ in range(cfg.repeats):
            out, costs = block_costs(model, prompts, sampler, G, cfg.block_length, cache, cfg.seed)
            if best is None or out.stats["seconds"] < best[0].stats["seconds"]:
                best = (out, costs)
        out, costs = best
        early, late = per_token_ms(costs, 128), per_token_ms(costs, G - 1)
        rows.append({"family": family, "cache": cache, "gen_length": G, "batch": B, "nfe": out.nfe,
                     "forwards": out.stats["forwards"], "tokens": out.stats["tokens"],
                     "seconds": round(out.stats["seconds"], 4), "tokens_per_s": round(out.stats["tokens_per_second"], 1),
                     "ms_per_token_at_128": round(early, 3), f"ms_per_token_at_end": round(late, 3),
                     "late_over_early": round(late / early, 3)})
    for r in rows:   # speed-up of each cache mode over no cache at the same family / length / batch
        base = next(b for b in rows if b["cache"] == "none" and all(b[k] == r[k] for k in ("family", "gen_length", "batch")))
        r["speedup_vs_none"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
    return rows


def table(rows: list[dict]) -> str:
    cols = ["family", "cache", "gen_length", "batch", "nfe", "tokens_per_s", "speedup_vs_none",
            "ms_per_token_at_128", "ms_per_token_at_end", "late_over_early"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


@hydra.main(config_path="pkg://dllm.configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    rows = run(cfg)
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    device = str(parse_device(cfg.device))
    (out_dir / "bench.json").write_text(json.dumps({"device": device, "threads": torch.get_num_threads(),
                                                    "config": OmegaConf.to_container(cfg, resolve=True),
                                                    "rows": rows}, indent=2))
    print(table(rows))
    print(f"written: {out_dir / 'bench.json'}")


if __name__ == "__main__":
    main()
