"""Learn2PD filter training (Bao et al., arXiv 2509.25188 §3; samplers.md §2): teacher trajectories -> oracle
labels -> a ~2K-parameter filter -> a file `sampler=learn2pd sampler.filter=<path>` loads.

    dllm-distill pipeline=learn2pd model=tiny_llada
    dllm-distill pipeline=learn2pd model=tiny_sdar pipeline.steps=500 resume=true

The teacher is one-token-per-step Static decoding (the paper's reference trajectory). Every decoding step of
every example gives one training row: the feature is `samplers.policy.features` (the top-1 probability at every
block slot, decoded ones included) and the label of slot j is [top-1 id at j == the final token at j]. The rows
of a held-out fraction of the examples (split by example, so no prompt is on both sides) measure BCE and the
precision at the decoding threshold. Loss: BCE-with-logits, summed over the scored slots and divided by the
row's slot count, mean over rows (so the data-parallel gradient is exact); AdamW, minibatches drawn by
`dllm.distill.loop`.

Which slots are scored (`FilterSettings.label_slots`): the reference scores all of them, decoded ones included
(samplers.md §2.2), which assumes a decoded slot still predicts its own token. A model converted from an
autoregressive start need not: the decoded slots of tiny-sdar-v2 (its 1000-step conversion) predict the next
token with confidence 0.97 and match their own only 62% of the time, while its masked slots are final 99.6% of
the time. Scored on all slots, the filter learns "confident -> not final" from the decoded ones and accepts
nothing (held-out BCE 0.38, recall 0). `masked` scores only the slots the sampler may commit, the decisions the
filter makes; the input stays the reference's feature (every slot's confidence).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm.distill.collect import collect, load_trajectories
from dllm.distill.loop import LoopSettings, fit
from dllm.distill.pretrain import Decoding, evaluate_suite
from dllm.eval.distributed import Dist
from dllm.eval.tasks.synthetic import SyntheticTask
from dllm.eval.tracking import Tracker
from dllm.model import DiffusionLM
from dllm.samplers import EoTP, Learn2PD, Static, Threshold
from dllm.samplers.policy import FilterNet, save_filter


@dataclass(frozen=True)
class FilterSettings:
    hidden: int | None         # filter width; None: the block length (2,112 parameters at 32)
    activation: str
    lr: float
    weight_decay: float
    held_out: float            # fraction of the examples whose rows are held out
    accept: float              # decoding threshold tau_f, also where held-out precision is measured
    label_slots: str = "masked"   # the slots the BCE scores: masked (those a sampler may commit) | all (reference)

    def __post_init__(self):
        if self.label_slots not in LABEL_SLOTS:
            raise ValueError(f"label_slots must be one of {LABEL_SLOTS}, got {self.label_slots!r}")


LABEL_SLOTS = ("masked", "all")


def filter_rows(data: dict[str, Tensor], label_slots: str = "masked") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """features [M, S] float, labels [M, S] float, scored [M, S] float (1: in the loss), example [M] from
    `collect.load_trajectories` tensors."""
    scored = data["masked"].bool() if label_slots == "masked" else torch.ones_like(data["masked"], dtype=torch.bool)
    return data["conf"].float(), data["label"].float(), scored.float(), data["step_example"]


def filter_loss(logits: Tensor, lab: Tensor, scored: Tensor) -> Tensor:
    """BCE-with-logits on the scored slots, / S per row, mean over rows [M, S] -> []; all slots scored: the
    reference's plain mean."""
    return F.binary_cross_entropy_with_logits(logits, lab, weight=scored)


def split_examples(n_examples: int, held_out: float, seed: int) -> Tensor:
    """[n_examples] bool: True = train. A seeded permutation; the last `held_out` fraction is held out."""
    perm = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(held_out * n_examples)) if held_out > 0 else 0
    if n_test >= n_examples:
        raise ValueError(f"pipeline.held_out={held_out} holds out {n_test} of {n_examples} teacher example(s) and "
                         "leaves none to fit the filter on: use more prompts (pipeline.task.n_per_task, "
                         "pipeline.limit) or pipeline.held_out=0")
    train = torch.ones(n_examples, dtype=torch.bool)
    train[perm[n_examples - n_test:]] = False
    return train


def new_filter(block_length: int, f: FilterSettings, seed: int) -> FilterNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FilterNet(block_length, f.hidden, f.activation)


def train_filter_rows(feat: Tensor, lab: Tensor, scored: Tensor, f: FilterSettings, loop: LoopSettings, *, seed: int,
                      dist: Dist, run_dir: Path, resume: bool, tracker: Tracker) -> tuple[FilterNet, dict]:
    net = new_filter(feat.shape[1], f, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=f.lr, weight_decay=f.weight_decay)

    def loss_fn(rows: Tensor, part: slice, step: int) -> Tensor:
        r = rows[part]
        return filter_loss(net(feat[r]), lab[r], scored[r])   # this rank's rows

    state = fit(net, opt, loss_fn, feat.shape[0], loop, seed=seed, dist=dist, run_dir=run_dir, resume=resume,
                tracker=tracker, desc="filter")
    return net.eval(), state


@torch.no_grad()
def held_out_metrics(net: FilterNet, feat: Tensor, lab: Tensor, scored: Tensor, masked: Tensor, accept: float) -> dict:
    """The training loss (`filter_loss`); on masked slots (the ones a sampler may commit) the precision and recall
    of `sigmoid > accept` and the accepted share. Precision is what decoding accuracy depends on."""
    logits = net(feat)
    a = torch.sigmoid(logits) > accept
    m = masked.bool()
    acc, pos = a & m, lab.bool() & m
    tp = (acc & pos).sum().item()
    return {"bce": filter_loss(logits, lab, scored).item(), "rows": feat.shape[0],
            "precision": tp / max(1, acc.sum().item()), "recall": tp / max(1, pos.sum().item()),
            "accepted": acc.sum().item() / max(1, m.sum().item()), "positive_rate": pos.sum().item() / max(1, m.sum().item())}


def compare(model: DiffusionLM, net: FilterNet, tasks: list[SyntheticTask], dec: Decoding,
            accepts: list[float], taus: list[float]) -> list[dict]:
    """Accuracy and NFE per example on `tasks` (all tasks pooled) for Learn2PD (with and without EoTP) at each
    `accepts` value and for Threshold at each `taus` value."""
    grid = [(f"learn2pd(accept={a})", Learn2PD(net, accept=a)) for a in accepts]
    grid += [(f"learn2pd+eotp(accept={a})", EoTP(Learn2PD(net, accept=a))) for a in accepts]
    grid += [(f"threshold({t})", Threshold(t)) for t in taus]
    rows = []
    for name, sampler in grid:
        res = evaluate_suite(model, tasks, sampler, dec)
        n = sum(r["n"] for r in res.values())
        rows.append({"sampler": name, "accuracy": sum(r["accuracy"] * r["n"] for r in res.values()) / n,
                     "nfe": sum(r["nfe"] * r["n"] for r in res.values()) / n, "n": n})
    return rows


def matched(rows: list[dict], tolerance: float = 0.005) -> list[dict]:
    """For every Learn2PD row: the cheapest Threshold row at least as accurate (minus `tolerance`) and the NFE
    ratio threshold / learn2pd (> 1: the filter needs fewer forwards at that accuracy)."""
    thr = [r for r in rows if r["sampler"].startswith("threshold")]
    out = []
    for r in rows:
        if not r["sampler"].startswith("learn2pd"):
            continue
        ok = [t for t in thr if t["accuracy"] >= r["accuracy"] - tolerance]
        best = min(ok, key=lambda t: t["nfe"]) if ok else None
        out.append({"learn2pd": r["sampler"], "accuracy": r["accuracy"], "nfe": r["nfe"],
                    "threshold": best["sampler"] if best else None,
                    "threshold_accuracy": best["accuracy"] if best else None,
                    "threshold_nfe": best["nfe"] if best else None,
                    "nfe_ratio": best["nfe"] / r["nfe"] if best else None})
    return out


def export_filter(net: FilterNet, path: Path, meta: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_filter(tmp, net, meta)
    tmp.replace(path)
    return path


def learn2pd(model: DiffusionLM, prompts: list[list[int]], *, dec: Decoding, f: FilterSettings, loop: LoopSettings,
             seed: int, dist: Dist, run_dir: str | Path, filter_path: str | Path, resume: bool, tracker: Tracker,
             shard_size: int, collect_batch: int, eval_tasks: list[SyntheticTask], accepts: list[float],
             taus: list[float], info: dict) -> Path:
    """The recipe: collect (or reuse) Static trajectories, fit the filter, write it, compare it to Threshold."""
    run_dir = Path(run_dir)
    traj = run_dir / "trajectories"
    if dist.rank == 0:   # collection is inference: one rank; the others wait (shards are reused on resume)
        collect(model, prompts, Static(steps=dec.gen_length), traj, gen_length=dec.gen_length,
                block_length=dec.block_length, shard_size=shard_size, batch_size=collect_batch, cache=dec.cache,
                seed=seed, info=info)
    dist.barrier()
    _, data = load_trajectories(traj)
    feat, lab, scored, ex = filter_rows(data, f.label_slots)
    train = split_examples(data["gen_start"].numel(), f.held_out, seed)[ex]        # [M] row of a train example
    net, state = train_filter_rows(feat[train], lab[train], scored[train], f, loop, seed=seed, dist=dist,
                                   run_dir=run_dir, resume=resume, tracker=tracker)
    path = Path(filter_path)
    if dist.rank == 0:
        held = held_out_metrics(net, feat[~train], lab[~train], scored[~train], data["masked"][~train], f.accept)
        export_filter(net, path, {**info, "train_rows": int(train.sum()), "held_out_bce": f"{held['bce']:.4f}",
                                  "steps": state["step"]})
        tracker.summary({f"held_out/{k}": v for k, v in held.items()})
        rows = compare(model, net, eval_tasks, dec, accepts, taus) if eval_tasks else []
        match = matched(rows)
        tracker.table("compare", rows)
        tracker.table("matched", match)
        results = {"held_out": held, "train_seconds": state["train_seconds"], "final_loss": state["history"][-1]["loss"],
                   "compare": rows, "matched": match}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps({"held_out": held, "matched": match}, indent=2))
    dist.barrier()
    return path
