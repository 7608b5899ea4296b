"""Shared fixtures: tiny random checkpoints written in the real on-disk formats and loaded through dllm.load."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

import dllm  # noqa: E402
from dllm.testing import write_tiny_checkpoint, write_tiny_llada2  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    for var in ("HF_HOME", "HF_DATASETS_CACHE", "WANDB_DIR"):
        monkeypatch.setenv(var, str(cache))


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    """folder factory: ckpt_dir(family, **kw) -> a written checkpoint folder (memoised per arguments)."""
    made: dict = {}

    def make(family: str, **kw) -> Path:
        key = (family, tuple(sorted(kw.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{family}_ckpt")
            made[key] = write_tiny_checkpoint(folder, family, **kw)
        return made[key]

    return make


@pytest.fixture(scope="session")
def llada(ckpt_dir):
    return dllm.load(ckpt_dir("llada", n_kv_heads=2))


@pytest.fixture(scope="session")
def sdar(ckpt_dir):
    return dllm.load(ckpt_dir("sdar", n_kv_heads=2, block_size=4))


@pytest.fixture(scope="session")
def dream(ckpt_dir):
    return dllm.load(ckpt_dir("dream", n_kv_heads=2))


@pytest.fixture(scope="session")
def llada2(tmp_path_factory):
    """LLaDA2 (Ling MoE): GQA, one dense layer then one MoE layer of 8 experts in 2 groups, top-2, block 4."""
    return dllm.load(write_tiny_llada2(tmp_path_factory.mktemp("llada2_ckpt"), n_layers=2))


@pytest.fixture(params=["llada", "sdar", "llada2"])
def model(request):
    return request.getfixturevalue(request.param)


def prompts(n: int, lengths=(5, 9, 3, 12, 7, 4), vocab: int = 50, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]
