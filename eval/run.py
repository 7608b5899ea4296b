"""`dllm-eval`: evaluate one model x sampler x cache x task, writing `samples.jsonl` and `metrics.json`.

    dllm-eval                                              # tiny-sdar, Threshold(0.9), synthetic suite
    dllm-eval model=tiny_llada sampler=freedave limit=40 logger.mode=disabled
    dllm-eval model=llada_8b_instruct task=gsm8k task.data_dir=/data/gsm8k cache=dual
    torchrun --nproc_per_node 2 -m dllm.eval.run ...      # data parallel: ranks shard, rank 0 merges
Re-running the same command resumes: examples already in samples.jsonl are skipped. The folder is locked while a
run writes it, and resuming with another model, sampler, cache, task, seed or lengths is refused (`overwrite=true`
starts over).
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import dllm
from dllm.eval import distributed
from dllm.eval.cli_errors import build, build_sampler, check_cache, check_ints, check_limit, entry
from dllm.eval.evaluate import claim, evaluate, run_identity
from dllm.eval.tracking import Tracker


def run(cfg: DictConfig, out_dir: Path) -> dict | None:
    # every setting is checked before the model loads: a typo costs a second, not a checkpoint's load time
    check_ints(cfg, seed=0, gen_length=1, block_length=1, batch_size=1)
    check_limit(cfg.limit)
    sampler = build_sampler(cfg.sampler, cfg.gen_length, model=cfg.model.name_or_path)
    cache = check_cache(cfg.cache, cfg.model.name_or_path)
    task = build(cfg.task, "task", _convert_="all")
    dp = distributed.init(cfg.model.device)
    out_dir = Path(dp.broadcast(str(out_dir)))
    model = dllm.load(cfg.model.name_or_path, cfg.model.dtype, dp.device, cfg.model.get("attention", "sdpa"))
    tokenizer = dllm.load_tokenizer(cfg.model.name_or_path)
    identity = run_identity(model, task, sampler, cache, gen_length=cfg.gen_length, block_length=cfg.block_length,
                            seed=cfg.seed, chat_template=cfg.chat_template)
    # lock and identity first, so a refused run leaves config.yaml (and the tracker) naming the folder's own run
    with claim(out_dir, identity, overwrite=cfg.overwrite, rank=dp.rank, world=dp.world, barrier=dp.barrier):
        tracker = None
        if dp.rank == 0:
            (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            tracker = Tracker(cfg.logger.mode, cfg.logger.project, out_dir, OmegaConf.to_container(cfg, resolve=True),
                              name=cfg.logger.name, entity=cfg.logger.entity, tags=list(cfg.logger.tags))
        result = evaluate(model, tokenizer, task, sampler, out_dir, gen_length=cfg.gen_length,
                          block_length=cfg.block_length, cache=cache, batch_size=cfg.batch_size,
                          limit=cfg.limit, seed=cfg.seed, chat_template=cfg.chat_template, rank=dp.rank,
                          world=dp.world, barrier=dp.barrier, progress=cfg.progress)
    if tracker is not None:
        tracker.summary({k: v for k, v in result.items() if not isinstance(v, dict)})
        tracker.log({k: v for k, v in result.items() if not isinstance(v, dict)}, step=0)
        tracker.finish()
    return result


@hydra.main(config_path="pkg://dllm.configs", config_name="eval", version_base="1.3")
@entry
def main(cfg: DictConfig) -> None:
    result = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    if result is not None:
        print(json.dumps({k: v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
