"""`dllm-compare`, the main job: every sampler x model x task through `evaluate`, then a comparison table
(`table.md`, `results.csv`) and an accuracy-vs-NFE Pareto plot (`pareto.png`), printed and logged to wandb.

    dllm-compare                                              # embedded tiny models, synthetic suite, CPU
    dllm-compare models=[llada_8b_instruct] tasks=[gsm8k,mbpp] data_dir=/data batch_size=8
Each run writes into <run dir>/<model>/<task>/<sampler>, so an interrupted comparison resumes where it stopped
when re-run with the same `hydra.run.dir`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import dllm
from dllm.eval.evaluate import evaluate
from dllm.eval.tasks.synthetic import SET_VALUED
from dllm.eval.tracking import Tracker

COLUMNS = ["model", "task", "sampler", "accuracy", "det_accuracy", "set_validity", "nfe_per_example",
           "tokens_per_forward", "tokens_per_second", "speedup", "nfe_reduction", "n"]


def group_config(group: str, name: str) -> DictConfig:
    import dllm.configs
    path = Path(dllm.configs.__file__).parent / group / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no {group} config named {name!r} (looked for {path.name} in dllm.configs/{group})")
    return OmegaConf.load(path)


def grid(cfg: DictConfig, model_name: str) -> list[tuple[str, DictConfig]]:
    """(label, sampler config) for every default and swept value; Learn2PD only for a model with a filter file
    (a filter is trained for one model and block length)."""
    runs = []
    filt = cfg.learn2pd_filters.get(model_name)
    entries = list(cfg.grid) + ([{"sampler": "learn2pd", "set": {"filter": filt}}] if filt else [])
    for entry in entries:
        base = group_config("sampler", entry["sampler"])
        base = OmegaConf.merge(base, entry.get("set", {}))
        sweep = dict(entry.get("sweep", {}))
        if not sweep:
            runs.append((entry["sampler"], base))
        for knob, values in sweep.items():
            for v in values:
                runs.append((f"{entry['sampler']}({knob}={v})", OmegaConf.merge(base, {knob: v})))
    return runs


def build_sampler(sampler_cfg: DictConfig, gen_length: int):
    root = OmegaConf.create({"gen_length": gen_length, "sampler": sampler_cfg})   # resolves ${gen_length}
    return instantiate(root.sampler)


def compatible(sampler, model) -> bool:
    """Samplers that need a block-causal model (S2D2's verifier, an AR-like cache) skip bidirectional ones."""
    return model.block_causal or not getattr(sampler, "ar_cache", False)


def split_accuracy(m: dict) -> dict:
    """A multi-task suite's accuracy split into its deterministic tasks (exact match, mean over tasks) and its
    set-valued ones (validity), where parallel commits fail differently (ParallelBench, eval.md §3); None
    for single tasks."""
    by_task = m.get("accuracy_by_task")
    if not by_task:
        return {"det_accuracy": None, "set_validity": None}
    det = [v for t, v in by_task.items() if t not in SET_VALUED]
    sets = [v for t, v in by_task.items() if t in SET_VALUED]
    return {"det_accuracy": sum(det) / len(det) if det else None,
            "set_validity": sum(sets) / len(sets) if sets else None}


def with_speedups(rows: list[dict], baseline: str) -> list[dict]:
    for r in rows:
        base = next((b for b in rows if b["sampler"] == baseline and b["model"] == r["model"]
                     and b["task"] == r["task"]), None)
        r["speedup"] = round(r["tokens_per_second"] / base["tokens_per_second"], 2) if base else None
        r["nfe_reduction"] = round(base["nfe_per_example"] / r["nfe_per_example"], 2) if base else None
    return rows


def markdown(rows: list[dict]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows])


def pareto_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(r["model"], r["task"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (model, task) in zip(axes[0], panels):
        pts = [r for r in rows if r["model"] == model and r["task"] == task]
        for r in pts:
            ax.scatter(r["nfe_per_example"], r["accuracy"])
            ax.annotate(r["sampler"], (r["nfe_per_example"], r["accuracy"]), fontsize=6)
        front, best = [], -1.0   # the frontier: fewest forwards for each accuracy level
        for r in sorted(pts, key=lambda r: (r["nfe_per_example"], -r["accuracy"])):
            if r["accuracy"] > best:
                front.append(r)
                best = r["accuracy"]
        ax.plot([r["nfe_per_example"] for r in front], [r["accuracy"] for r in front], "k--", lw=0.8)
        ax.set(title=f"{model} / {task}", xlabel="forwards per example (NFE)", ylabel="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: DictConfig, out_dir: Path) -> list[dict]:
    rows = []
    for model_name in cfg.models:
        mcfg = OmegaConf.merge(group_config("model", model_name), cfg.model_overrides.get(model_name, {}))
        model = dllm.load(mcfg.name_or_path, mcfg.get("dtype"), mcfg.get("device"), mcfg.get("attention", "sdpa"))
        tok = dllm.load_tokenizer(mcfg.name_or_path)
        for task_name in cfg.tasks:
            tcfg = group_config("task", task_name)
            extra = {k: v for k, v in {**cfg.task_overrides, "data_dir": cfg.data_dir}.items()
                     if k in tcfg and v is not None}
            task = instantiate(OmegaConf.merge(tcfg, extra), _convert_="all")
            for label, scfg in grid(cfg, model_name):
                sampler = build_sampler(scfg, mcfg.gen_length)
                if not compatible(sampler, model):
                    continue
                m = evaluate(model, tok, task, sampler, out_dir / model_name / task_name / label,
                             gen_length=mcfg.gen_length, block_length=mcfg.block_length, cache=instantiate(cfg.cache),
                             batch_size=cfg.batch_size,
                             limit=cfg.limit, seed=cfg.seed, chat_template=mcfg.get("chat_template", False),
                             progress=cfg.progress)
                rows.append({"model": model_name, "task": task_name, "sampler": label,
                             **{k: m[k] for k in ("accuracy", "nfe_per_example", "tokens_per_forward",
                                                  "tokens_per_second", "n")}, **split_accuracy(m)})
    return with_speedups(rows, cfg.baseline)


def write_outputs(rows: list[dict], out_dir: Path) -> None:
    with (out_dir / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r[c] for c in COLUMNS} for r in rows)
    (out_dir / "table.md").write_text(markdown(rows) + "\n")
    pareto_plot(rows, out_dir / "pareto.png")


@hydra.main(config_path="pkg://dllm.configs", config_name="compare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    tracker = Tracker(cfg.logger.mode, cfg.logger.project, out_dir, OmegaConf.to_container(cfg, resolve=True),
                      name=cfg.logger.name, entity=cfg.logger.entity, tags=list(cfg.logger.tags))
    rows = run(cfg, out_dir)
    write_outputs(rows, out_dir)
    tracker.table("comparison", rows)
    tracker.image("pareto", out_dir / "pareto.png")
    tracker.finish()
    print(markdown(rows))
    print(f"written: {out_dir / 'table.md'}, {out_dir / 'results.csv'}, {out_dir / 'pareto.png'}")


if __name__ == "__main__":
    main()
