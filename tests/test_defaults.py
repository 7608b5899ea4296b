"""Defaults that do not cost accuracy silently: each shipped model's `cache="auto"` (what `dllm-eval`,
`dllm-compare` and `dllm-generate` use unless told otherwise) loses at most one point of Static accuracy against
`cache="none"` on held-out prompts, and a checkpoint's own default survives a save and load."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import dllm
from dllm.distill.pretrain import scored
from dllm.distill.suites import build_tasks, served_suite
from dllm.loading import DEFAULT_CACHE_KEY
from dllm.samplers import Static
from dllm.saving import save
from dllm.testing import random_model

SHIPPED = Path(dllm.__file__).parent / "checkpoints"
N = 16   # held-out prompts per task


def _accuracy(name: str, cache: str, sampler: str = "static") -> dict[str, float]:
    """Accuracy per task of a shipped model on the first N test prompts per task of the suite it serves, decoded
    with the eval config's settings for it (`sampler`: static, one token per step, or the eval config's default
    sampler)."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    with initialize_config_module("dllm.configs", version_base="1.3"):
        cfg = compose("eval", overrides=[f"model={name.replace('-', '_')}"])
    model, tok = dllm.load(name, device="cpu"), dllm.load_tokenizer(name)
    decoder = Static(steps=cfg.gen_length) if sampler == "static" else instantiate(cfg.sampler)
    out = {}
    for task in build_tasks(served_suite(cfg.model), "test", N, 0):   # what the preset serves (v1: the short suite)
        examples = task.examples()
        gen = dllm.generate(model, [tok(e.prompt).input_ids for e in examples], decoder,
                            gen_length=cfg.gen_length, block_length=cfg.block_length, cache=cache)
        out[task.name] = sum(scored(task, examples, gen.sequences, tok)) / len(examples)
    return out


@pytest.mark.parametrize("name", ["tiny-sdar", "tiny-llada", "tiny-sdar-v2", "tiny-llada-v2"])
def test_default_cache_loses_at_most_one_point(name):
    if not (SHIPPED / name / "model.safetensors").is_file():
        pytest.skip(f"{name} is not shipped in this checkout")
    auto, none = _accuracy(name, "auto"), _accuracy(name, "none")
    for task in none:
        assert auto[task] >= none[task] - 0.01, (task, auto[task], none[task])
    if name == "tiny-llada":
        # why its default is not the family's: the approximate prefix cache costs points on this model (measured
        # at 50 prompts per task: 74.8 % against 99.3 % without a cache); it stays available on request
        prefix = _accuracy(name, "prefix")
        assert sum(prefix.values()) < sum(none.values()) - 0.01 * len(none)


@pytest.mark.parametrize("name", ["tiny-sdar", "tiny-llada", "tiny-sdar-v2", "tiny-llada-v2"])
def test_default_sampler_loses_at_most_one_point(name):
    """The eval config's default sampler (Threshold 0.9) on the default cache: within a point of cache=none
    Static over the model's suite."""
    if not (SHIPPED / name / "model.safetensors").is_file():
        pytest.skip(f"{name} is not shipped in this checkout")
    default, none = _accuracy(name, "auto", "default"), _accuracy(name, "none")
    assert sum(default.values()) >= sum(none.values()) - 0.01 * len(none), (default, none)


def test_tiny_llada_auto_is_no_cache_everywhere():
    """The checkpoint decides, so every entry point that passes cache=auto (the default of dllm.generate and of
    the eval, compare and generate configs) decodes tiny-llada without a cache; prefix and dual stay available."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    model = dllm.load("tiny-llada", device="cpu")
    assert model.default_cache == "none" and dllm.load("tiny-sdar", device="cpu").default_cache == "block_fused"
    with initialize_config_module("dllm.configs", version_base="1.3"):
        for entry in ("eval", "compare"):
            cfg = compose(entry, overrides=["model=tiny_llada"] if entry == "eval" else [])
            policy = instantiate(cfg.cache)
            out = dllm.generate(model, [[4, 14, 15, 3]], Static(steps=12), gen_length=12, block_length=6,
                                cache=policy)
            assert out.stats["cache"] == "none", entry
    for mode in ("prefix", "dual"):
        assert dllm.generate(model, [[4, 14, 15]], Static(steps=12), gen_length=12, block_length=6,
                             cache=mode).stats["cache"] == mode


def test_checkpoint_default_cache_round_trips_and_is_validated(tmp_path):
    model, config = random_model("llada", vocab=64, mask_id=1, eos_id=2)
    save(model, tmp_path / "family", config)          # the family default is not written
    assert DEFAULT_CACHE_KEY not in json.loads((tmp_path / "family" / "generation_config.json").read_text())
    assert dllm.load(tmp_path / "family", device="cpu").default_cache == "prefix"
    model.default_cache = "dual"
    save(model, tmp_path / "dual", config)
    loaded = dllm.load(tmp_path / "dual", device="cpu")
    assert loaded.default_cache == "dual"
    assert dllm.generate(loaded, [[5, 6]], Static(steps=4), gen_length=4, block_length=4).stats["cache"] == "dual"
    gen = tmp_path / "dual" / "generation_config.json"
    gen.write_text(json.dumps({**json.loads(gen.read_text()), DEFAULT_CACHE_KEY: "block_fused"}))
    with pytest.raises(ValueError, match=f"{DEFAULT_CACHE_KEY}='block_fused' is not a cache mode of a llada"):
        dllm.load(tmp_path / "dual", device="cpu")
