"""`dllm-bench`: decoding speed, written to `bench.json` and printed as a table.

For every model x sampler x cache mode x batch size x gen_length: tokens/s, NFE, tokens per forward, the
*overhead* (share of wall time outside model forwards: sampler, loop and cache bookkeeping), the cost per
token early (at generation offset 128, or half of a shorter gen_length: `early_offset`) and at the end (an exact block cache keeps it flat), KV-cache size and peak
GPU memory. A naive re-implementation of the original LLaDA loop runs on the same model and prompts; `Static`
without cache must reproduce it token for token (`matches_naive`), and every row reports its speed-up over it.
Decoding runs with stop_at_eos=False so every configuration generates exactly gen_length tokens per row.
With latency=true (GPU), one batch-1 forward of a block is timed against the bandwidth bound: the time to read
every weight once at the measured device-to-device copy bandwidth.
With moe_tokens=[...], one MoE layer of LLaDA2-mini's shape (256 experts, top-8 in 4 of 8 groups, d 2048, expert
width 512, one shared expert) is timed on N tokens: the grouped experts (`dllm.models.moe`) against the per-token
loop they are tested equal to (`moe` rows: milliseconds per layer call and the largest output difference).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import dllm
from dllm.loading import parse_device, parse_dtype
from dllm.runner import compiled, sync
from dllm.models.moe import MoE, MoEConfig, per_token_reference
from dllm.models.transformer import MLP
from dllm.testing import random_llada2, random_model
from dllm.eval.cli_errors import UserError, build_sampler, check_ints, entry
from dllm.eval.compare import compatible, group_config
from dllm.eval.progress import progress
from dllm.eval.naive import naive_generate

SHAPES = {  # random-initialised models shaped like the real checkpoints (anchors.md §3), for GPU timing
    "sdar_1_7b_shape": dict(family="sdar", vocab=151936, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=8,
                            d_ff=6144, tie=True, block_size=4),
    "llada_8b_shape": dict(family="llada", vocab=126464, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                           d_ff=12288, tie=False),
    "dream_7b_shape": dict(family="dream", vocab=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
                           d_ff=18944, tie=False),    # Dream-v0-Instruct-7B / Dream-Coder (Qwen2.5-7B dims)
    # inclusionAI/LLaDA2.0-mini (families.md §3; 16B parameters, 1.4B active): needs ~32 GB in bfloat16
    "llada2_mini_shape": dict(family="llada2", vocab=157184, d_model=2048, n_layers=20, n_heads=16, n_kv_heads=4,
                              head_dim=128, d_ff=5120, n_experts=256, top_k=8, n_group=8, topk_group=4, d_expert=512,
                              n_shared=1, first_dense=1, block_size=32),
}
LLADA2_MINI_MOE = MoEConfig(n_experts=256, top_k=8, d_expert=512, n_shared=1, n_group=8, topk_group=4, scaling=2.5,
                            first_dense=0)


def build_model(name: str, device: torch.device, dtype: torch.dtype, seed: int):
    if name in SHAPES:
        spec = dict(SHAPES[name])
        family = spec.pop("family")
        with torch.device(device):
            make = random_llada2 if family == "llada2" else lambda **kw: random_model(family, **kw)
            model, _ = make(seed=seed, logit_scale=1.0, **spec)
        return model.to(dtype), name
    mcfg = group_config("model", name)
    try:
        return dllm.load(mcfg.name_or_path, dtype, device), str(mcfg.name_or_path)
    except FileNotFoundError:      # not shipped in this install: same shape, random weights
        init = OmegaConf.to_container(mcfg.init)
        family = init.pop("family")
        model, _ = random_model(family, seed=seed, vocab=128, **init)
        return model.to(device, dtype), f"random {name} shape"


def timed(model, prompts, sampler, G, S, cache, seed, compile=False) -> tuple[dllm.Generation, list]:
    """One run with per-step timestamps -> (generation, [(block start offset, seconds, tokens)])."""
    marks = []

    def on_step(r):
        sync(model.device)
        marks.append((r.block.index, time.perf_counter(), int(r.commit.sum())))

    sync(model.device)
    t0 = time.perf_counter()
    out = dllm.generate(model, prompts, sampler, gen_length=G, block_length=S, cache=cache, seed=seed,
                        stop_at_eos=False, on_step=on_step, timing=True, compile=compile)
    prev = t0
    per = {}
    for b, t, n in marks:
        acc = per.setdefault(b, [0.0, 0])
        acc[0] += t - prev
        acc[1] += n
        prev = t
    return out, [(b * S, sec, n) for b, (sec, n) in sorted(per.items())]


def per_token_ms(costs: list, offset: int) -> float:
    start, seconds, tokens = max((c for c in costs if c[0] <= offset), key=lambda c: c[0])
    return 1000 * seconds / max(tokens, 1)


def random_prompts(model, B: int, P: int, g: torch.Generator) -> list[list[int]]:
    """B random prompts of P ordinary tokens: ids below 100, never the mask, pad or a stop id (a mask id in a
    prompt would be decoded as a slot of the first block)."""
    special = torch.tensor([model.mask_id, model.pad_id, *model.stop_ids])
    ordinary = torch.tensor([t for t in range(min(model.vocab_size, 100)) if t not in special])
    return ordinary[torch.randint(0, len(ordinary), (B, P), generator=g)].tolist()


def bandwidth_bound(model, device: torch.device, S: int, compile: bool | str = False) -> dict:
    """Batch-1 forward latency of one block against reading every weight once at copy bandwidth (GPU)."""
    forward = compiled(model, compile)
    n = 256 << 20
    a, b = torch.empty(n, dtype=torch.uint8, device=device), torch.empty(n, dtype=torch.uint8, device=device)
    for _ in range(3):
        b.copy_(a)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    sync(device)
    bandwidth = 2 * n * 10 / (time.perf_counter() - t0)           # read + write bytes per second
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, 100, (1, S), device=device)
    with torch.inference_mode():
        for _ in range(3):
            forward(ids)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            forward(ids)
        sync(device)
    latency = (time.perf_counter() - t0) / 10
    bound = weight_bytes / bandwidth
    return {"forward_ms": 1000 * latency, "bound_ms": 1000 * bound, "weight_gb": weight_bytes / 1e9,
            "bandwidth_gb_s": bandwidth / 1e9, "latency_over_bound": latency / bound}


def moe_speed(device: torch.device, dtype: torch.dtype, tokens: list[int], seed: int = 0,
              cfg: MoEConfig = LLADA2_MINI_MOE, d_model: int = 2048, repeats: int = 3) -> list[dict]:
    """One MoE layer on N random tokens: grouped experts vs the per-token loop (ms per call, max |difference|)."""
    torch.manual_seed(seed)
    with torch.device(device):
        moe = MoE(cfg, d_model, MLP)
        torch.nn.init.normal_(moe.router.weight, std=d_model ** -0.5)
        moe.router.expert_bias.normal_(0, 0.01)
    moe = moe.to(dtype)            # the router casts to fp32 itself (the reference's router_dtype)
    rows = []
    with torch.inference_mode():
        for n in tokens:
            h = torch.randn(1, n, d_model, device=device, dtype=dtype)
            times = {}
            for name, fn in (("grouped", moe), ("per_token", lambda x: per_token_reference(moe, x))):
                out = fn(h)                                          # warm-up
                sync(device)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    out = fn(h)
                sync(device)
                times[name] = (1000 * (time.perf_counter() - t0) / repeats, out)
            diff = (times["grouped"][1].float() - times["per_token"][1].float()).abs().max().item()
            rows.append({"tokens": n, "grouped_ms": round(times["grouped"][0], 3),
                         "per_token_ms": round(times["per_token"][0], 3),
                         "speedup": round(times["per_token"][0] / times["grouped"][0], 2), "max_abs_diff": diff})
    return rows


def check(cfg: DictConfig) -> None:
    """Sizes are positive integers and every sampler builds, before any model is made."""
    check_ints(cfg, seed=0, block_length=1, prompt_length=1)
    for key in ("batch_sizes", "gen_lengths"):
        if not cfg[key] or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in cfg[key]):
            raise UserError(f"{key} must be a non-empty list of positive integers, got {cfg[key]}")
    for name in cfg.models:
        for sname in cfg.samplers:
            build_sampler(group_config("sampler", sname), max(cfg.gen_lengths), f"samplers: {sname}", shipped(name))


def shipped(name: str) -> str | None:
    """The checkpoint a model name stands for (None for the random SHAPES), where a Learn2PD filter may ship."""
    return None if name in SHAPES else str(group_config("model", name).name_or_path)


def run(cfg: DictConfig) -> tuple[list[dict], list[dict]]:
    check(cfg)
    device = parse_device(cfg.device)
    dtype = parse_dtype(cfg.dtype, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    g = torch.Generator().manual_seed(cfg.seed)
    rows, latency = [], []
    for name in cfg.models:
        model, source = build_model(name, device, dtype, cfg.seed)
        model.attention = cfg.get("attention", "sdpa")
        modes = list(cfg.caches) if cfg.caches else list(model.cache_modes)
        if cfg.latency:
            latency.append({"model": name, **bandwidth_bound(model, device, cfg.block_length, cfg.compile)})
        for G in cfg.gen_lengths:
            for B in cfg.batch_sizes:
                prompts = random_prompts(model, B, cfg.prompt_length, g)
                naive = None
                if cfg.naive:
                    sync(device)
                    t0 = time.perf_counter()
                    ids, nfe = naive_generate(model, prompts, G, G, cfg.block_length)
                    sync(device)
                    naive = {"ids": ids.tolist(), "tps": B * G / (time.perf_counter() - t0), "nfe": nfe}
                    rows.append({"model": name, "sampler": "naive LLaDA loop", "cache": "none", "gen_length": G,
                                 "batch": B, "nfe": nfe, "tokens_per_forward": B * G / nfe / B,
                                 "tokens_per_s": round(naive["tps"], 1), "overhead": None, "speedup_vs_naive": 1.0})
                for sname in progress(cfg.samplers, desc=f"{name} G={G} B={B}"):
                    sampler = build_sampler(group_config("sampler", sname), G, model=shipped(name))
                    if not compatible(sampler, model):
                        continue
                    for cache in modes:
                        timed(model, prompts[:1], sampler, min(G, 2 * cfg.block_length), cfg.block_length, cache,
                              cfg.seed, cfg.compile)                      # warm-up (and compilation)
                        out, costs = timed(model, prompts, sampler, G, cfg.block_length, cache, cfg.seed,
                                           cfg.compile)
                        s = out.stats
                        # stop_at_eos=False decodes every slot: count B x G tokens, as for the naive loop
                        # (stats["tokens"] stops at each row's first stop id)
                        tps = B * G / s["seconds"]
                        offset = min(128, G // 2)        # "early": offset 128, or mid-way in a shorter generation
                        early, late = per_token_ms(costs, offset), per_token_ms(costs, G - 1)
                        row = {"model": name, "sampler": sname, "cache": cache, "gen_length": G, "batch": B,
                               "nfe": out.nfe, "tokens_per_forward": round(G / out.nfe, 3),
                               "tokens_per_s": round(tps, 1),
                               "overhead": round(s["overhead"], 3),
                               "early_offset": offset, "ms_per_token_early": round(early, 3),
                               "ms_per_token_at_end": round(late, 3),
                               "late_over_early": round(late / early, 3),
                               "kv_cache_mb": round(model.new_cache(B, out.canvas.shape[1]).nbytes() / 2**20, 2)
                               if cache != "none" else 0.0}
                        if device.type == "cuda":
                            row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                            torch.cuda.reset_peak_memory_stats(device)
                        if naive is not None:
                            row["speedup_vs_naive"] = round(tps / naive["tps"], 2)
                            if sname == "static" and cache == "none":
                                row["matches_naive"] = [q[:G] for q in out.sequences] == naive["ids"] or \
                                    out.canvas[:, -G:].tolist() == naive["ids"]
                        rows.append(row)
        del model
    return rows, latency


COLUMNS = ["model", "sampler", "cache", "gen_length", "batch", "nfe", "tokens_per_forward", "tokens_per_s",
           "speedup_vs_naive", "overhead", "early_offset", "ms_per_token_early", "ms_per_token_at_end", "late_over_early",
           "kv_cache_mb", "matches_naive"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |"
                              for r in rows])


@hydra.main(config_path="pkg://dllm.configs", config_name="bench", version_base="1.3")
@entry
def main(cfg: DictConfig) -> None:
    torch.manual_seed(cfg.seed)
    rows, latency = run(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    device = parse_device(cfg.device)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    (out_dir / "bench.json").write_text(json.dumps({**info, "config": OmegaConf.to_container(cfg, resolve=True),
                                                    "rows": rows, "latency": latency}, indent=2))
    print(table(rows))
    for r in latency:
        print(f"{r['model']}: batch-1 block forward {r['forward_ms']:.2f} ms, bandwidth bound {r['bound_ms']:.2f} ms "
              f"({r['weight_gb']:.2f} GB at {r['bandwidth_gb_s']:.0f} GB/s): {r['latency_over_bound']:.2f}x")
    moe = moe_speed(device, parse_dtype(cfg.dtype, device), list(cfg.get("moe_tokens") or []), cfg.seed)
    for r in moe:
        print(f"MoE layer (LLaDA2-mini shape), {r['tokens']} tokens: grouped {r['grouped_ms']:.2f} ms, per-token loop "
              f"{r['per_token_ms']:.2f} ms ({r['speedup']}x), max |difference| {r['max_abs_diff']:.2e}")
    if moe:
        data = json.loads((out_dir / "bench.json").read_text())
        (out_dir / "bench.json").write_text(json.dumps({**data, "moe": moe}, indent=2))
    print(f"written: {out_dir / 'bench.json'} ({info['device']}, {info['threads']} threads)")


if __name__ == "__main__":
    main()
