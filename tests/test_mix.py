"""The adaptive task mix: the reweighting rule, batches that follow the mix, and a resume that keeps it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dllm.distill.pretrain as pretrain
from dllm.distill.data import Batches
from dllm.distill.mix import base_weights, reweight, shares
from dllm.distill.pretrain import Decoding, ModelInit, TrainSettings, build_model, make_optimizer, restore, train
from dllm.eval.tasks.synthetic import SET_VALUED, TASKS, suite
from dllm.eval.tracking import Tracker

CPU = torch.device("cpu")
TINY = ModelInit("sdar", 32, 2, 4, 2, 64, True, 4, 10000.0)
DEC = Decoding(gen_length=16, block_length=4)


def test_weights_follow_the_errors_and_solved_tasks_keep_a_floor():
    w = reweight([1.0, 2.0, 3.0], [1.0, 0.5, 0.0], floor=0.1)
    assert w == pytest.approx([0.1, 1.2, 3.3])
    # every task solved: the configured mix again
    assert shares(reweight([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], 0.05)) == pytest.approx(shares([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="mix_floor"):
        reweight([1.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="accuracy"):
        reweight([1.0, 1.0], [0.5], 0.1)
    base = dict(steps=8, batch_size=8, lr=3e-3, min_lr_ratio=0.1, warmup=2, weight_decay=0.1, grad_clip=1.0,
                t_min=0.1, t_max=1.0, prompt_length=16, eval_every=0, ckpt_every=3, eval_n=2, final_eval_n=2,
                sweep_n=2, eval_seed=0, taus=())
    with pytest.raises(ValueError, match="mix_floor"):    # refused when the run starts
        TrainSettings(**base, mix_every=100, mix_floor=0.0)
    TrainSettings(**base, mix_every=0, mix_floor=0.0)     # a fixed mix never reads the floor


def test_base_weights_name_tasks_and_reject_unknown_ones():
    assert base_weights(["copy", "sort", "add"], {"sort": 3}) == [1.0, 3.0, 1.0]
    assert base_weights(["copy"], None) == [1.0]
    with pytest.raises(ValueError, match="unknown tasks"):
        base_weights(["copy"], {"sorting": 2})


def test_batches_draw_from_the_current_weights():
    b = Batches(suite("train"), 32, 16, 16, 0, left_pad=False, multiple_of=4)
    uniform = b[3]
    assert (uniform.excluded >= 0).any(1).sum() < 32       # a uniform mix: mostly not shuffle
    b.weights = [1.0 if t in SET_VALUED else 0.0 for t in TASKS]
    only = b[3]
    assert (only.excluded >= 0).any(1).all()               # every row now a shuffle row
    assert torch.equal(only.ids, b[3].ids)                  # still a pure function of (seed, step, weights)


def _fake_validation(model, tasks, sampler, dec):
    """Accuracies that depend on the weights (as a real evaluation does) and vary from task to task, without
    the cost of decoding: a resumed run must reproduce them exactly."""
    x = float(sum(p.detach().double().sum() for p in model.parameters()))
    return {t.name: {"accuracy": (abs(x) * (i + 1) * 7.3) % 1.0} for i, t in enumerate(tasks)}


def _run(run_dir: Path, s: TrainSettings, resume: bool, stop_at: int | None = None):
    model, _ = build_model(TINY, 0, CPU)
    opt, sched = make_optimizer(model, s)
    state = restore(run_dir, model, opt, sched) if resume else {"step": 0, "history": [], "train_seconds": 0.0}

    def kill(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    b = Batches(suite("train"), 8, 16, 16, 0, left_pad=False, multiple_of=4)
    state = train(model, opt, sched, b, s, DEC, run_dir, Tracker("disabled", "dllm", run_dir, {}), state, 0,
                  on_step=kill)
    return model, state


def test_adaptive_mix_changes_the_batches_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "evaluate_suite", _fake_validation)
    base = dict(steps=8, batch_size=8, lr=3e-3, min_lr_ratio=0.1, warmup=2, weight_decay=0.1, grad_clip=1.0,
                t_min=0.1, t_max=1.0, prompt_length=16, eval_every=0, ckpt_every=3, eval_n=2, final_eval_n=2,
                sweep_n=2, eval_seed=0, taus=())
    fixed = TrainSettings(**base)
    adaptive = TrainSettings(**base, mix_every=2, mix_n=2, mix_floor=0.05)
    _, fixed_state = _run(tmp_path / "fixed", fixed, resume=False)
    full, full_state = _run(tmp_path / "full", adaptive, resume=False)
    losses = [h["loss"] for h in full_state["history"]]
    assert losses[:2] == [h["loss"] for h in fixed_state["history"]][:2]   # same batches before the first reweight
    assert losses[2:] != [h["loss"] for h in fixed_state["history"]][2:]   # different ones after it
    assert [m["step"] for m in full_state["mix_history"]] == [2, 4, 6]     # not after the last step
    assert len(set(full_state["mix"])) > 1
    with pytest.raises(KeyboardInterrupt):   # killed after step 5: the checkpoint of step 3 holds step 2's mix
        _run(tmp_path / "cut", adaptive, resume=False, stop_at=5)
    resumed, state = _run(tmp_path / "cut", adaptive, resume=True)
    assert [h["loss"] for h in state["history"]] == losses
    assert state["mix_history"] == full_state["mix_history"]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
