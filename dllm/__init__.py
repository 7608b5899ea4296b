"""dllm: fast decoding of block-wise masked diffusion language models.

    import dllm
    from dllm.samplers import Threshold
    model = dllm.load("tiny-sdar"); tok = dllm.load_tokenizer("tiny-sdar")
    out = dllm.generate(model, [tok("...").input_ids], sampler=Threshold(0.9), gen_length=64, block_length=8)
"""
from .adapters import HFAdapter
from .cache import CachePolicy, KVCache
from .generate import Generation, generate
from .loading import load, load_tokenizer
from .model import DiffusionLM
from .protocols import Block, ModelOut, NoState, Sampler, StepInput, StepOutput, StepRecord

__all__ = ["HFAdapter", "load", "load_tokenizer", "generate", "Generation", "DiffusionLM", "KVCache", "CachePolicy",
           "ModelOut", "Block", "StepInput", "StepOutput", "StepRecord", "Sampler", "NoState"]
__version__ = "0.1.0"
