"""`dllm-distill`: training pipelines, picked with `pipeline=<name>` (Hydra; configs in `dllm.configs`).

    dllm-distill pipeline=pretrain model=tiny_sdar
    dllm-distill pipeline=pretrain model=tiny_llada pipeline.steps=100 logger.mode=disabled hydra.run.dir=runs/x
    dllm-distill pipeline=pretrain model=tiny_sdar resume=true
    dllm-distill pipeline=ar model=tiny_sdar                     # autoregressive start -> <run dir>/model (Qwen3)
    dllm-distill pipeline=convert model=tiny_sdar pipeline.init=outputs/ar/tiny-sdar/model    # -> sdar (or tiny_llada)
    dllm-distill pipeline=learn2pd model=tiny_llada              # Learn2PD filter -> <run dir>/filter.safetensors
    dllm-distill pipeline=dparallel model=tiny_sdar              # dParallel student -> <run dir>/model
    torchrun --nproc_per_node 2 -m dllm.distill.cli pipeline=dparallel model=tiny_sdar   # data parallel (gloo on CPU)

The run directory (`hydra.run.dir`) holds the training state, the wandb run and, unless `export_dir` is set,
the exported model. Only this module reads the config; pipelines take plain arguments.
"""
from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dllm.eval.cli_errors import check_like, check_limit, entry
from dllm.loading import parse_device


def eval_sizes(steps: int, final_n: int | None, sweep_n: int | None) -> tuple[int, int]:
    """Held-out prompts per task for the final evaluation and the Threshold sweep; null follows the run's size
    (a 20-step smoke run decodes 4 per task and no sweep, a full 17000-step run 200 and 100, the shipped cards')."""
    auto_final, auto_sweep = min(200, max(4, steps // 20)), min(100, steps // 40)
    final_n = auto_final if final_n is None else final_n
    if final_n < 1:
        raise ValueError(f"pipeline.final_eval_n must be >= 1 (the model card's accuracy table), got {final_n}")
    return final_n, auto_sweep if sweep_n is None else sweep_n


def _run_recipe(cfg: DictConfig, run_dir: Path, command: str, recipe, extra: tuple[str, ...] = (), **args) -> Path:
    """The pretraining-style recipes (pretrain, ar, convert): their pipeline config is pretrain.yaml's keys plus
    `extra` ones, which go to `recipe` as keyword arguments."""
    from dllm.distill.pretrain import Decoding, TrainSettings
    from dllm.distill.suites import task_names
    from dllm.eval.tracking import Tracker
    from dllm.eval.distributed import init as init_dist

    p = OmegaConf.to_container(cfg.pipeline, resolve=True)
    del p["name"]
    threads, cache, tokenizer = p.pop("threads"), p.pop("cache"), p.pop("tokenizer")
    args |= {k: p.pop(k) for k in extra}
    if threads:
        torch.set_num_threads(threads)
    p["final_eval_n"], p["sweep_n"] = eval_sizes(p["steps"], p["final_eval_n"], p["sweep_n"])
    tasks = p["tasks"] if isinstance(p["tasks"], str) else tuple(p["tasks"])
    settings = TrainSettings(**{**p, "taus": tuple(p["taus"]), "tasks": tasks})
    decoding = ("greedy autoregressive decoding" if cfg.pipeline.name == "ar" else
                f"Static and {settings.sweep_n} per task for each of {len(settings.taus)} Threshold values")
    print(f"{cfg.pipeline.name}: {settings.steps} steps; then the final evaluation decodes {settings.final_eval_n} "
          f"held-out prompts per task ({len(task_names(tasks))} tasks) with {decoding} "
          "(pipeline.final_eval_n / pipeline.sweep_n; null follows the steps)", flush=True)
    dec = Decoding(cfg.model.gen_length, cfg.model.block_length, cache, tokenizer)
    dist = init_dist(None if cfg.model.device is None else str(cfg.model.device))
    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    if dist.rank != 0:
        logger["mode"] = "disabled"
    tracker = Tracker(**logger, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True))
    try:
        return recipe(s=settings, dec=dec, seed=cfg.seed, run_dir=run_dir,
                      export_dir=cfg.export_dir or run_dir / "model", resume=cfg.resume, tracker=tracker,
                      device=parse_device(dist.device or cfg.model.device), command=command, dist=dist, **args)
    finally:
        tracker.finish()


def run_pretrain(cfg: DictConfig, run_dir: Path, command: str) -> Path:
    from dllm.distill.pretrain import ModelInit, pretrain
    return _run_recipe(cfg, run_dir, command, pretrain, init=ModelInit(**cfg.model.init))


def run_ar(cfg: DictConfig, run_dir: Path, command: str) -> Path:
    from dllm.distill.ar import ar_pretrain
    from dllm.distill.pretrain import ModelInit
    return _run_recipe(cfg, run_dir, command, ar_pretrain, init=ModelInit(**cfg.model.init))


def run_convert(cfg: DictConfig, run_dir: Path, command: str) -> Path:
    from dllm.distill.convert import convert
    if not cfg.pipeline.init:
        raise ValueError("pipeline=convert needs pipeline.init=<folder of an AR checkpoint> "
                         "(`dllm-distill pipeline=ar` writes one to <its run dir>/model)")
    if cfg.model.get("init") is None:
        raise ValueError(f"pipeline=convert takes its target family from model.init.family; model "
                         f"{cfg.model.name_or_path!r} has no init block (use model=tiny_sdar or model=tiny_llada)")
    return _run_recipe(cfg, run_dir, command, convert, extra=("init", "block_sizes", "block_size", "mask_block",
                                                                 "logit_shift", "causal_share"),
                       target=cfg.model.init.family)


def _setup(cfg: DictConfig, run_dir: Path):
    """Shared by the distillation pipelines: process group, teacher, prompts, tracker (rank 0 logs)."""
    import dllm
    from dllm.distill.loop import LoopSettings
    from dllm.distill.pretrain import Decoding
    from dllm.eval.distributed import init
    from dllm.eval.evaluate import encode, take_spread
    from dllm.eval.tracking import Tracker

    p = cfg.pipeline
    if p.threads:
        torch.set_num_threads(p.threads)
    dist = init(None if cfg.model.device is None else str(cfg.model.device))
    torch.manual_seed(cfg.seed)
    model = dllm.load(cfg.model.name_or_path, dtype=cfg.model.dtype, device=dist.device or cfg.model.device)
    tokenizer = dllm.load_tokenizer(cfg.model.name_or_path)
    examples = take_spread(hydra.utils.instantiate(p.task).examples(), p.limit)
    prompts = [encode(tokenizer, e.prompt, cfg.model.chat_template) for e in examples]
    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    if dist.rank != 0:
        logger["mode"] = "disabled"
    tracker = Tracker(**logger, run_dir=run_dir, config=OmegaConf.to_container(cfg, resolve=True))
    loop = LoopSettings(p.steps, p.batch_size, p.ckpt_every, p.grad_clip)
    dec = Decoding(cfg.model.gen_length, cfg.model.block_length, p.cache, own_suite(cfg)[1])
    info = {"model": str(cfg.model.name_or_path), "task": p.task._target_, "n_prompts": len(prompts)}
    return dist, model, prompts, tracker, loop, dec, info


def eval_n(p: DictConfig) -> int:
    """Held-out prompts per task for the final comparison; null follows the run's size (25, the shipped recipes'
    and the defaults', from 300 steps on; 2 for a 5-step smoke run)."""
    return min(25, max(2, p.steps // 12)) if p.eval_n is None else p.eval_n


def own_suite(cfg: DictConfig) -> tuple[str | tuple[str, ...], str]:
    """(tasks, tokenizer) of a model's own suite: the tasks it serves (`served_suite`: v2 long, v1 synthetic)
    under the tokenizer it was trained with (its preset's `data.tokenizer`; v1 and other models: word-level)."""
    from dllm.distill.suites import served_suite
    return served_suite(cfg.model), OmegaConf.select(cfg.model, "data.tokenizer", default="words")


def _eval_tasks(cfg: DictConfig) -> list:
    """The final comparison's held-out prompts: the test split of the model's own suite."""
    from dllm.distill.suites import build_tasks
    p = cfg.pipeline
    return build_tasks(own_suite(cfg)[0], "test", eval_n(p), p.eval_seed) if eval_n(p) else []


def announce(name: str, cfg: DictConfig, n_prompts: int, n_settings: int) -> None:
    """Say before starting what the run costs besides its optimizer steps: teacher rollouts and the comparison."""
    from dllm.distill.suites import task_names
    p = cfg.pipeline
    tail = (f"then {n_settings} decoding settings on {eval_n(p)} held-out prompts per task "
            f"({len(task_names(own_suite(cfg)[0]))} tasks; "
            "pipeline.eval_n=0 skips them)") if eval_n(p) else "no final comparison (pipeline.eval_n=0)"
    print(f"{name}: {n_prompts} teacher rollouts (pipeline.task / pipeline.limit), {p.steps} steps, {tail}",
          flush=True)


def run_learn2pd(cfg: DictConfig, run_dir: Path, command: str) -> Path:
    from dllm.distill.learn2pd import FilterSettings, learn2pd

    p = cfg.pipeline
    dist, model, prompts, tracker, loop, dec, info = _setup(cfg, run_dir)
    announce("learn2pd", cfg, len(prompts), 2 * len(p.accepts) + len(p.taus))
    f = FilterSettings(p.hidden, p.activation, p.lr, p.weight_decay, p.held_out, p.accept, p.label_slots)
    try:
        return learn2pd(model, prompts, dec=dec, f=f, loop=loop, seed=cfg.seed, dist=dist, run_dir=run_dir,
                        filter_path=p.filter_path or run_dir / "filter.safetensors", resume=cfg.resume,
                        tracker=tracker, shard_size=p.shard_size, collect_batch=p.collect_batch,
                        eval_tasks=_eval_tasks(cfg), accepts=list(p.accepts), taus=list(p.taus), info=info)
    finally:
        tracker.finish()


def run_dparallel(cfg: DictConfig, run_dir: Path, command: str) -> Path:
    from dllm.distill.dparallel import CertaintySettings, dparallel

    p = cfg.pipeline
    dist, model, prompts, tracker, loop, dec, info = _setup(cfg, run_dir)
    announce("dparallel", cfg, len(prompts), 1 + 2 * len(p.thresholds))      # teacher: static + each; student: each
    s = CertaintySettings(p.lr, p.weight_decay, p.mask_ratio, p.eps, p.temperature, p.entropy_weight)
    lora = {"r": p.lora_r, "alpha": p.lora_alpha} if p.lora else None
    try:
        return dparallel(model, cfg.model.name_or_path, prompts, dec=dec, s=s, loop=loop, lora=lora, seed=cfg.seed,
                         dist=dist, run_dir=run_dir, export_dir=cfg.export_dir or run_dir / "model",
                         resume=cfg.resume, tracker=tracker, shard_size=p.shard_size, collect_batch=p.collect_batch,
                         eval_tasks=_eval_tasks(cfg), thresholds=list(p.thresholds), info=info, command=command)
    finally:
        tracker.finish()


PIPELINES = {"pretrain": run_pretrain, "ar": run_ar, "convert": run_convert, "learn2pd": run_learn2pd,
             "dparallel": run_dparallel}


def check_pipeline(cfg: DictConfig) -> None:
    """Every pipeline setting has its shipped default's type, and `limit` is a positive integer or null."""
    from dllm.eval.compare import group_config
    p = OmegaConf.to_container(cfg.pipeline, resolve=True)
    check_like(OmegaConf.to_container(group_config("pipeline", cfg.pipeline.name)), p, "pipeline")
    check_limit(p.get("limit"))
    if p.get("sweep_n") is not None and p["sweep_n"] < 0:
        raise ValueError(f"pipeline.sweep_n must be >= 0 (0 skips the sweep), got {p['sweep_n']}")


@hydra.main(config_path="pkg://dllm.configs", config_name="distill", version_base="1.3")
@entry
def main(cfg: DictConfig) -> None:
    if cfg.pipeline.name not in PIPELINES:
        raise ValueError(f"unknown pipeline {cfg.pipeline.name!r}; choose one of {sorted(PIPELINES)}")
    check_pipeline(cfg)
    hc = HydraConfig.get()
    command = " ".join(["dllm-distill", *hc.overrides.task])   # the exact command, for the model card
    out = PIPELINES[cfg.pipeline.name](cfg, Path(hc.runtime.output_dir), command)
    print(f"exported {out}")


if __name__ == "__main__":
    main()
