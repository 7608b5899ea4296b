"""dllm-bench on the embedded model: the naive reference, token equality with Static, the row fields."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

import dllm
from dllm.eval.bench import random_prompts, run, table


def test_bench_rows_and_naive_equality():
    cfg = OmegaConf.load(__import__("dllm.configs", fromlist=["x"]).__path__[0] + "/bench.yaml")
    cfg.merge_with({"models": ["tiny_sdar"], "samplers": ["static", "threshold"], "batch_sizes": [2],
                    "gen_lengths": [16], "block_length": 4, "prompt_length": 8, "device": "cpu"})
    rows, latency = run(cfg)
    assert latency == []
    naive = [r for r in rows if r["sampler"] == "naive LLaDA loop"]
    ours = [r for r in rows if r["sampler"] != "naive LLaDA loop"]
    assert len(naive) == 1 and naive[0]["nfe"] == 16                  # one token per step, full forward each
    assert {(r["sampler"], r["cache"]) for r in ours} == {(s, c) for s in ("static", "threshold")
                                                          for c in ("none", "block", "block_fused")}
    static_none = next(r for r in ours if r["sampler"] == "static" and r["cache"] == "none")
    assert static_none["matches_naive"] is True and static_none["nfe"] == 16
    fused = next(r for r in ours if r["sampler"] == "static" and r["cache"] == "block_fused")
    assert fused["nfe"] == 16 and fused["kv_cache_mb"] > 0
    for r in ours:
        assert 0 <= r["overhead"] < 1 and r["tokens_per_s"] > 0 and r["speedup_vs_naive"] > 0
        assert r["early_offset"] == 8 and r["ms_per_token_early"] > 0      # gen_length 16: "early" is mid-way
        assert abs(r["tokens_per_forward"] * r["nfe"] - 16) < 0.05     # stop_at_eos=False: every slot decoded
    assert "| tiny_sdar | static | none |" in table(rows)


def test_random_prompts_avoid_special_ids():
    model = dllm.load("tiny-llada", device="cpu")
    ids = torch.tensor(random_prompts(model, 64, 32, torch.Generator().manual_seed(0)))
    special = [model.mask_id, model.pad_id, *model.stop_ids]
    assert ids.shape == (64, 32) and not torch.isin(ids, torch.tensor(special)).any() and ids.max() < 100
