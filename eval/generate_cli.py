"""`dllm-generate prompt="..."`: one generation from the command line, printing the text and its stats.

    dllm-generate 'prompt="reverse : 12 45 07 99 ="'
    dllm-generate model=llada_8b_instruct sampler=threshold sampler.threshold=0.8 cache=dual prompt="Hi"
"""
from __future__ import annotations

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import dllm
from dllm.eval.evaluate import encode


@hydra.main(config_path="pkg://dllm.configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    model = dllm.load(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device, cfg.model.get("attention", "sdpa"))
    tok = dllm.load_tokenizer(cfg.model.name_or_path)
    out = dllm.generate(model, [encode(tok, cfg.prompt, cfg.chat_template)], instantiate(cfg.sampler),
                        gen_length=cfg.gen_length, block_length=cfg.block_length, cache=instantiate(cfg.cache),
                        seed=cfg.seed, stop_at_eos=cfg.stop_at_eos)
    print(tok.decode(out.sequences[0], skip_special_tokens=True))
    s = out.stats
    print(f"[{s['tokens']} tokens, nfe {s['nfe']}, {s['tokens_per_forward']:.2f} tokens/forward, "
          f"{s['tokens_per_second']:.1f} tokens/s, cache {s['cache']}]")


if __name__ == "__main__":
    main()
