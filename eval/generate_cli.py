"""`dllm-generate prompt="..."`: one generation from the command line, printing the text and its stats.

    dllm-generate 'prompt="reverse : 12 45 07 99 ="'
    dllm-generate model=llada_8b_instruct sampler=threshold sampler.threshold=0.8 cache=dual prompt="Hi"
    dllm-generate -m sampler=static,threshold 'prompt="sort : 5 3 9 ="'   # one labelled output per sampler
"""
from __future__ import annotations

import tempfile

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import dllm
from dllm.eval.cli_errors import build_sampler, check_cache, check_ints, entry
from dllm.eval.evaluate import encode

# a multirun (-m) keeps its bookkeeping (multirun.yaml) in the temp folder: a one-off generation writes nothing here
if not OmegaConf.has_resolver("dllm_tmp"):
    OmegaConf.register_new_resolver("dllm_tmp", tempfile.gettempdir)


@hydra.main(config_path="pkg://dllm.configs", config_name="generate", version_base="1.3")
@entry
def main(cfg: DictConfig) -> None:
    check_ints(cfg, seed=0, gen_length=1, block_length=1)
    prompt = cfg.prompt
    sampler = build_sampler(cfg.sampler, cfg.gen_length, model=cfg.model.name_or_path)
    cache = check_cache(cfg.cache, cfg.model.name_or_path)
    model = dllm.load(cfg.model.name_or_path, cfg.model.dtype, cfg.model.device, cfg.model.get("attention", "sdpa"))
    tok = dllm.load_tokenizer(cfg.model.name_or_path)
    out = dllm.generate(model, [encode(tok, prompt, cfg.chat_template)], sampler, gen_length=cfg.gen_length,
                        block_length=cfg.block_length, cache=cache, seed=cfg.seed, stop_at_eos=cfg.stop_at_eos)
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:    # say which setting made which output
        print(f"== {' '.join(hc.overrides.task) or 'defaults'}")
    print(tok.decode(out.sequences[0], skip_special_tokens=True))
    s = out.stats
    print(f"[{s['tokens']} tokens, nfe {s['nfe']}, {s['tokens_per_forward']:.2f} tokens/forward, "
          f"{s['tokens_per_second']:.1f} tokens/s, cache {s['cache']}]")


if __name__ == "__main__":
    main()
