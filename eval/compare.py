"""`dllm-compare`, the main job: every sampler x model x task through `evaluate`, then a comparison table
(`table.md`, `results.csv`) and an accuracy-vs-NFE Pareto plot (`pareto.png`), printed and logged to wandb.

    dllm-compare                                              # embedded tiny models, synthetic suite, CPU
    dllm-compare models=[llada_8b_instruct] tasks=[gsm8k,mbpp] data_dir=/data batch_size=8
Each run writes into <run dir>/<model>/<task>/<sampler>, so an interrupted comparison resumes where it stopped
when re-run with the same `hydra.run.dir`. The table leads with `nfe_reduction` (the baseline's forwards per
example over this run's: exact); wall-clock speed (`tokens_per_second`, `time_speedup`) only with `timed=true`,
measured on one batch after a warm-up, since tokens/s of short evaluation batches swings from run to run.
"""
from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import dllm
from dllm.cache import as_policy
from dllm.eval.cli_errors import build, build_sampler, check_cache, check_ints, check_limit, entry
from dllm.eval.evaluate import encode, evaluate
from dllm.runner import sync
from dllm.eval.tasks.synthetic import SET_VALUED
from dllm.eval.tracking import Tracker

# NFE is exact and leads; wall-clock columns come only from a timed, warmed-up measurement (`timed=true`)
COLUMNS = ["model", "task", "sampler", "cache", "nfe_reduction", "nfe_per_example", "accuracy", "det_accuracy",
           "set_validity", "tokens_per_forward", "n"]
TIMED_COLUMNS = ["tokens_per_second", "time_speedup"]


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
    """nfe_reduction (baseline NFE / this run's) for every row; time_speedup only for timed rows."""
    for r in rows:
        base = next((b for b in rows if b["sampler"] == baseline and b["model"] == r["model"]
                     and b["task"] == r["task"]), None)
        r["nfe_reduction"] = round(base["nfe_per_example"] / r["nfe_per_example"], 2) if base else None
        if "tokens_per_second" in r:
            r["time_speedup"] = round(r["tokens_per_second"] / base["tokens_per_second"], 2) if base else None
    return rows


def columns(rows: list[dict]) -> list[str]:
    return COLUMNS + (TIMED_COLUMNS if rows and "tokens_per_second" in rows[0] else [])


def markdown(rows: list[dict]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "" if v is None else str(v)
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


def timed_speed(model, prompts: list[list[int]], sampler, *, repeats: int = 3, **kw) -> float:
    """Tokens per second of one batch: one warm-up run (allocation, lazy initialisation), then the median of
    `repeats` timed runs. Evaluation batches are too short and too few to time on their own."""
    dllm.generate(model, prompts, sampler, **kw)
    rates = []
    for _ in range(repeats):
        sync(model.device)
        t0 = time.perf_counter()
        out = dllm.generate(model, prompts, sampler, **kw)
        sync(model.device)
        rates.append(out.stats["tokens"] / (time.perf_counter() - t0))
    return statistics.median(rates)


MARKERS = "osD^vP*Xhp<>"


def frontier(pts: list[dict]) -> list[dict]:
    """The Pareto frontier: walking up in NFE, every run more accurate than all cheaper ones."""
    front, best = [], -1.0
    for r in sorted(pts, key=lambda r: (r["nfe_per_example"], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    return front


def pareto_plot(rows: list[dict], path: Path) -> None:
    """Accuracy against forwards per example, one panel per model x task on a shared accuracy axis; every
    sampler setting has its own colour and marker (in the legend, no labels on the points) and the frontier is
    drawn. Each panel's title names the cache mode its runs used."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(r["model"], r["task"]) for r in rows})
    labels = list(dict.fromkeys(r["sampler"] for r in rows))
    colours = plt.get_cmap("tab20").colors
    style = {lab: (colours[i % len(colours)], MARKERS[i % len(MARKERS)]) for i, lab in enumerate(labels)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 2.5, 4.5), squeeze=False, sharey=True)
    for ax, (model, task) in zip(axes[0], panels):
        pts = [r for r in rows if r["model"] == model and r["task"] == task]
        for r in pts:
            colour, marker = style[r["sampler"]]
            ax.scatter(r["nfe_per_example"], r["accuracy"], color=colour, marker=marker, s=45, label=r["sampler"],
                       edgecolors="black", linewidths=0.4, zorder=3)
        front = frontier(pts)
        ax.plot([r["nfe_per_example"] for r in front], [r["accuracy"] for r in front], "k--", lw=0.8,
                label="frontier", zorder=2)
        caches = sorted({str(r.get("cache")) for r in pts})
        ax.set(title=f"{model} / {task} (cache {', '.join(caches)})", xlabel="forwards per example (NFE)",
               ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    order = labels + ["frontier"]
    fig.legend([handles[k] for k in order if k in handles], [k for k in order if k in handles],
               loc="center right", fontsize=8, title="sampler")
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plan(cfg: DictConfig) -> list[tuple[str, DictConfig, list]]:
    """(model name, model config, [(label, sampler)]) for every model, each setting checked before any model
    loads: a bad value stops the comparison in a second, naming its key."""
    check_ints(cfg, seed=0, batch_size=1)
    check_limit(cfg.limit)
    plans = []
    for model_name in cfg.models:
        mcfg = OmegaConf.merge(group_config("model", model_name), cfg.model_overrides.get(model_name, {}))
        check_cache(cfg.cache, mcfg.name_or_path)
        runs = [(label, build_sampler(scfg, mcfg.gen_length, f"grid: {label}", model=mcfg.name_or_path))
                for label, scfg in grid(cfg, model_name)]
        plans.append((model_name, mcfg, runs))
    return plans


def all_tasks(cfg: DictConfig, plans: list) -> list[str]:
    """Every task config some model is compared on, in first-seen order."""
    return list(dict.fromkeys(t for _, mcfg, _ in plans for t in model_tasks(cfg, mcfg)))


def model_tasks(cfg: DictConfig, mcfg: DictConfig) -> list[str]:
    """The task configs a model is compared on: `tasks` when set, else the model's own suite
    (`dllm.distill.suites.served_suite`: `long` for tiny-sdar-v2, `synthetic` for the v1 models)."""
    from dllm.distill.suites import served_suite
    if cfg.tasks is not None:
        return list(cfg.tasks)
    own = served_suite(mcfg)
    return {"all": ["synthetic", "long"]}.get(own, [own]) if isinstance(own, str) else list(own)


def build_tasks(cfg: DictConfig, names: list[str]) -> dict:
    tasks = {}
    for task_name in names:
        tcfg = group_config("task", task_name)
        extra = {k: v for k, v in {**cfg.task_overrides, "data_dir": cfg.data_dir}.items()
                 if k in tcfg and v is not None}
        tasks[task_name] = build(OmegaConf.merge(tcfg, extra), f"task {task_name}", _convert_="all")
    return tasks


def run(cfg: DictConfig, out_dir: Path) -> list[dict]:
    plans = plan(cfg)
    tasks = build_tasks(cfg, all_tasks(cfg, plans))
    cache = check_cache(cfg.cache)
    rows = []
    for model_name, mcfg, runs in plans:
        model = dllm.load(mcfg.name_or_path, mcfg.get("dtype"), mcfg.get("device"), mcfg.get("attention", "sdpa"))
        tok = dllm.load_tokenizer(mcfg.name_or_path)
        mode = as_policy(cache).resolve(model.cache_modes, model.default_cache, model.kind).mode
        chat = mcfg.get("chat_template", False)
        kw = dict(gen_length=mcfg.gen_length, block_length=mcfg.block_length, cache=cache, seed=cfg.seed)
        for task_name in model_tasks(cfg, mcfg):
            task = tasks[task_name]
            for label, sampler in runs:
                if not compatible(sampler, model):
                    continue
                m = evaluate(model, tok, task, sampler, out_dir / model_name / task_name / label,
                             batch_size=cfg.batch_size, limit=cfg.limit, chat_template=chat, progress=cfg.progress,
                             **kw)
                row = {"model": model_name, "task": task_name, "sampler": label, "cache": mode,
                       **{k: m[k] for k in ("accuracy", "nfe_per_example", "tokens_per_forward", "n")},
                       **split_accuracy(m)}
                if cfg.timed:
                    prompts = [encode(tok, ex.prompt, chat) for ex in task.examples()[:cfg.batch_size]]
                    row["tokens_per_second"] = round(timed_speed(model, prompts, sampler, **kw), 1)
                rows.append(row)
    return with_speedups(rows, cfg.baseline)


def write_outputs(rows: list[dict], out_dir: Path) -> None:
    cols = columns(rows)
    with (out_dir / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows({c: r[c] for c in cols} for r in rows)
    (out_dir / "table.md").write_text(markdown(rows) + "\n")
    pareto_plot(rows, out_dir / "pareto.png")


@hydra.main(config_path="pkg://dllm.configs", config_name="compare", version_base="1.3")
@entry
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    plan(cfg)           # fail on a bad setting before wandb starts
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
