"""Pretraining pipeline: the BD3-LM layout matches inference, losses fall, resume is bit for bit, the CLI runs,
and the shipped checkpoints reach their model card's accuracy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import dllm
import dllm.distill.pretrain as pretrain
from dllm.distill.data import Batches
from dllm.distill.objectives import (add_noise, block_diffusion_loss, block_diffusion_mask, masked_diffusion_loss,
                                     trimmed_layout, weighted_ce)
from dllm.distill.pretrain import (Decoding, ModelInit, TrainSettings, build_model, evaluate_suite,
                                   make_optimizer, one_token_per_step, restore, train)
from dllm.eval.tracking import Tracker
from dllm.eval.tasks.synthetic import SET_VALUED, suite

CPU = torch.device("cpu")
TINY = {"sdar": ModelInit("sdar", 32, 2, 4, 2, 64, True, 4, 10000.0),
        "llada": ModelInit("llada", 32, 2, 4, 4, 64, False, None, 10000.0)}
DEC = Decoding(gen_length=16, block_length=4)


def settings(**over) -> TrainSettings:
    base = dict(steps=8, batch_size=8, lr=3e-3, min_lr_ratio=0.1, warmup=2, weight_decay=0.1, grad_clip=1.0,
                t_min=0.1, t_max=1.0, prompt_length=16, eval_every=0, ckpt_every=3, eval_n=2, final_eval_n=2, sweep_n=2,
                eval_seed=0, taus=())
    return TrainSettings(**{**base, **over})


def batches(family: str, batch_size: int = 8, seed: int = 0) -> Batches:
    return Batches(suite("train"), batch_size, 16, 16, seed, left_pad=family == "llada",
                   multiple_of=4 if family == "sdar" else 1)


def test_batches_are_deterministic_and_aligned():
    b, again = batches("llada")[5], batches("llada")[5]
    assert torch.equal(b.ids, again.ids) and not torch.equal(b.ids, batches("llada")[6].ids)
    # llada: every prompt ends at index 16 and the answer region is exactly gen_length slots, ending in EOS fill
    assert b.answer[:, 16:].all() and not b.answer[:, :16].any() and b.ids.shape[1] == 32
    assert (b.pos[b.valid.nonzero(as_tuple=True)] >= 0).all() and (b.pos[:, 16] == b.valid[:, :16].sum(1)).all()
    s = batches("sdar")[5]
    assert s.valid.all() and s.ids.shape[1] % 4 == 0 and torch.equal(s.pos[0], torch.arange(s.ids.shape[1]))


def test_noise_never_touches_the_prompt():
    b = batches("sdar", 64)[0]
    x_t, masked, p = add_noise(b, 1, torch.Generator().manual_seed(0))
    assert masked.any() and not (masked & ~b.answer).any()
    assert torch.equal(x_t[~masked], b.ids[~masked]) and (x_t[masked] == 1).all() and (p > 0).all()


def test_block_diffusion_mask_pattern():
    m = block_diffusion_mask(8, 4)[0, 0]                 # [16, 16]: x_t rows 0..7, x_0 rows 8..15
    assert m[:4, :4].all() and not m[:4, 4:8].any() and not m[:4, 8:].any()     # first noisy block: itself only
    assert m[4:8, 4:8].all() and m[4:8, 8:12].all() and not m[4:8, 12:].any()   # second: itself + clean first
    assert not m[8:, :8].any()                                                  # clean never sees noisy
    assert torch.equal(m[8:, 8:], torch.arange(8)[None] // 4 <= torch.arange(8)[:, None] // 4)


def test_block_diffusion_layout_equals_inference_pattern():
    """The x_t logits of block k under [x_t ; x_0] equal the plain block-causal forward of
    (clean blocks < k, noisy block k): what the model conditions on at inference."""
    model, _ = build_model(TINY["sdar"], 0, CPU)
    b = batches("sdar", 2)[0]
    x_t, _, _ = add_noise(b, model.mask_id, torch.Generator().manual_seed(1))
    L = b.ids.shape[1]
    with torch.no_grad():
        two = model(torch.cat((x_t, b.ids), 1), torch.cat((b.pos, b.pos), 1),
                    attn_mask=block_diffusion_mask(L, 4), logits_range=(0, L)).logits
        for k in range(L // 4):
            s, e = 4 * k, 4 * k + 4
            seq = torch.cat((b.ids[:, :s], x_t[:, s:e]), 1)
            ref = model(seq, b.pos[:, :e]).logits[:, s:e]
            torch.testing.assert_close(two[:, s:e], ref, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("family", ["sdar", "llada"])
def test_trimmed_forward_gives_the_full_layout_loss(family):
    """The losses skip prompt-only columns (and for SDAR the last clean block); the value is the loss of the full
    forward: [x_t ; x_0] over 2L slots for SDAR, every column for LLaDA."""
    model, _ = build_model(TINY[family], 0, CPU)
    b = batches(family, 8)[3]
    x_t, masked, p_mask = add_noise(b, model.mask_id, torch.Generator().manual_seed(5))
    L = b.ids.shape[1]
    with torch.no_grad():
        if family == "sdar":
            full = model(torch.cat((x_t, b.ids), 1), torch.cat((b.pos, b.pos), 1),
                         attn_mask=block_diffusion_mask(L, 4), logits_range=(0, L)).logits
            first_block = int(b.answer.int().argmax(1).min()) // 4
            assert first_block > 0 and len(trimmed_layout(L, 4, first_block)[0]) < 2 * L - 4   # it does trim
            loss = block_diffusion_loss(model, b, torch.Generator().manual_seed(5))
        else:
            full = model(x_t, b.pos, pad_mask=b.valid).logits
            loss = masked_diffusion_loss(model, b, torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss, weighted_ce(full, b, masked, p_mask), rtol=1e-5, atol=1e-6)

@pytest.mark.parametrize("family", ["sdar", "llada"])
def test_loss_falls_on_a_fixed_batch(family):
    model, _ = build_model(TINY[family], 0, CPU)
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    loss_fn = block_diffusion_loss if family == "sdar" else masked_diffusion_loss
    b = batches(family, 8)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = loss_fn(model, b, torch.Generator().manual_seed(0))   # same batch and same noise every step
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def _run(run_dir: Path, family: str, s: TrainSettings, resume: bool, stop_at: int | None = None):
    model, _ = build_model(TINY[family], 0, CPU)
    opt, sched = make_optimizer(model, s)
    state = restore(run_dir, model, opt, sched) if resume else {"step": 0, "history": [], "train_seconds": 0.0}

    def kill(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    state = train(model, opt, sched, batches(family), s, DEC, run_dir, Tracker("disabled", "dllm", run_dir, {}),
                  state, 0, on_step=kill)
    return model, state


@pytest.mark.parametrize("family", ["sdar", "llada"])
def test_resume_continues_bit_for_bit(tmp_path, family):
    s = settings()
    full, full_state = _run(tmp_path / "full", family, s, resume=False)
    with pytest.raises(KeyboardInterrupt):   # killed after step 5: steps 4 and 5 are lost, step 3 was saved
        _run(tmp_path / "cut", family, s, resume=False, stop_at=5)
    resumed, state = _run(tmp_path / "cut", family, s, resume=True)
    assert [h["loss"] for h in state["history"]] == [h["loss"] for h in full_state["history"]]
    assert len(state["history"]) == s.steps
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _fake_validation(model, tasks, sampler, dec):
    """Accuracies that depend on the model parameters (as a real evaluation does) and vary from task to task,
    without the cost of decoding: a resumed run must reproduce them exactly."""
    x = float(sum(p.detach().double().sum() for p in model.parameters()))
    return {t.name: {"accuracy": (abs(x) * (i + 1) * 7.3) % 1.0} for i, t in enumerate(tasks)}


def test_adaptive_mix_changes_the_batches_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "evaluate_suite", _fake_validation)
    adaptive = settings(mix_every=2, mix_n=2, mix_floor=0.05)
    _, fixed_state = _run(tmp_path / "fixed", "sdar", settings(), resume=False)
    full, full_state = _run(tmp_path / "full", "sdar", adaptive, resume=False)
    losses = [h["loss"] for h in full_state["history"]]
    assert losses[:2] == [h["loss"] for h in fixed_state["history"]][:2]   # same batches before the first reweight
    assert losses[2:] != [h["loss"] for h in fixed_state["history"]][2:]   # different ones after it
    assert [m["step"] for m in full_state["mix_history"]] == [2, 4, 6]     # not after the last step
    assert len(set(full_state["mix"])) > 1
    with pytest.raises(KeyboardInterrupt):   # killed after step 5: the checkpoint of step 3 holds step 2's mix
        _run(tmp_path / "cut", "sdar", adaptive, resume=False, stop_at=5)
    resumed, state = _run(tmp_path / "cut", "sdar", adaptive, resume=True)
    assert [h["loss"] for h in state["history"]] == losses
    assert state["mix_history"] == full_state["mix_history"]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_adaptive_mix_settings_are_refused_when_the_run_starts():
    with pytest.raises(ValueError, match="mix_floor"):
        settings(mix_every=100, mix_floor=0.0)
    settings(mix_every=0, mix_floor=0.0)     # a fixed mix never reads the floor


def test_tracker_keeps_its_wandb_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    Tracker("offline", "dllm", tmp_path, {"a": 1}).finish()
    first = (tmp_path / "wandb_run_id").read_text()
    t = Tracker("offline", "dllm", tmp_path, {"a": 1})
    assert t.run.id == first.strip()
    t.finish()
    with pytest.raises(ValueError):
        Tracker("sometimes", "dllm", tmp_path, {})


def test_cli_trains_and_exports(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HOME": str(tmp_path / "hf"), "WANDB_DIR": str(tmp_path)}
    tiny = ["model.init.d_model=32", "model.init.n_layers=2", "model.init.n_heads=4", "model.init.n_kv_heads=4",
            "model.init.d_ff=64"]
    cmd = [sys.executable, "-m", "dllm.distill.cli", "pipeline=pretrain", "model=tiny_llada", *tiny,
           "pipeline.steps=30", "pipeline.batch_size=8", "pipeline.ckpt_every=10", "pipeline.eval_every=0",
           "pipeline.final_eval_n=2", "pipeline.sweep_n=2", "pipeline.taus=[0.5]", "pipeline.threads=1",
           "pipeline.mix_every=10", "pipeline.mix_n=2", "pipeline.task_weights={sort:3}",
           "logger.mode=disabled", f"hydra.run.dir={run}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    model = dllm.load(run / "model")
    assert model.family == "llada" and (run / "state.pt").is_file()
    card = (run / "model" / "README.md").read_text()
    assert "dllm-distill pipeline=pretrain model=tiny_llada" in card and "tau 0.5" in card
    assert "adaptive" in card and "uniform except sort x3 at first" in card and "ending at copy" in card
    assert dllm.load_tokenizer(run / "model")("copy : 12 =").input_ids[:2] == [4, 14]


def _card(name: str) -> dict:
    text = (Path(dllm.__file__).parent / "checkpoints" / name / "README.md").read_text()
    return yaml.safe_load(text.split("---")[1])


@pytest.mark.parametrize("name", ["tiny-sdar", "tiny-llada"])
def test_shipped_checkpoint_reaches_its_card_accuracy(name):
    folder = Path(dllm.__file__).parent / "checkpoints" / name
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"{name} is not shipped in this checkout")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 2**20
    card = _card(name)
    model = dllm.load(name, device="cpu")
    dec = Decoding(card["gen_length"], card["block_length"])
    n = 12   # the first 12 of the card's held-out prompts (binomial std <= 0.07 at 95%+ accuracy)
    res = evaluate_suite(model, suite("test", n, card["eval_seed"]), one_token_per_step(dec), dec)
    for task, acc in card["accuracy"].items():
        assert res[task]["accuracy"] >= acc - 0.2, (task, res[task], acc)
    assert set(card["accuracy"]) >= SET_VALUED


def _fresh(s: TrainSettings):
    model, config = build_model(TINY["sdar"], 0, CPU)
    return (model, config, *make_optimizer(model, s))


def test_resume_without_a_state_says_it_starts_from_step_0(tmp_path):
    s = settings()
    model, _, opt, sched = _fresh(s)
    with pytest.warns(UserWarning, match=r"resume=true but .*state.pt does not exist: starting from step 0"):
        assert restore(tmp_path, model, opt, sched, s.steps)["step"] == 0


def test_resume_past_pipeline_steps_is_refused(tmp_path):
    s = settings()
    model, _, opt, sched = _fresh(s)
    pretrain.checkpoint(tmp_path, model, opt, sched, {"step": 8, "history": [], "train_seconds": 1.0})
    with pytest.raises(ValueError, match=r"state.pt is at step 8, beyond pipeline.steps=6: resume with "
                                         r"pipeline.steps >= 8"):
        restore(tmp_path, model, opt, sched, 6)
    assert restore(tmp_path, model, opt, sched, 8)["step"] == 8      # equal: nothing left to train, same card


@pytest.mark.parametrize("content", ["empty", "garbage", "cut"])
def test_unreadable_state_names_the_file(tmp_path, content):
    s = settings()
    model, _, opt, sched = _fresh(s)
    pretrain.checkpoint(tmp_path, model, opt, sched, {"step": 2, "history": [], "train_seconds": 1.0})
    path = tmp_path / "state.pt"
    path.write_bytes({"empty": b"", "garbage": b"\x80\x04not a checkpoint at all",
                      "cut": path.read_bytes()[:3000]}[content])
    with pytest.raises(ValueError, match=r"state.pt is unreadable .*Delete it to start this run from step 0"):
        restore(tmp_path, model, opt, sched, s.steps)


def test_export_is_atomic(tmp_path, monkeypatch):
    """A kill during an export leaves the previous complete model (or none) under the final name."""
    import dllm.distill.checkpoint as ckpt
    model, config, *_ = _fresh(settings())
    out = tmp_path / "model"

    def killed(folder, *kind):
        raise KeyboardInterrupt       # after the weights, before the tokenizer and the card

    monkeypatch.setattr(ckpt, "save_tokenizer", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.export(model, config, out, "card")
    assert not out.exists() and list(tmp_path.iterdir()) == []       # nothing half-written, no temporary left
    monkeypatch.undo()
    ckpt.export(model, config, out, "first")
    (out / "learn2pd_filter.safetensors").write_bytes(b"kept")        # written beside the model later
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(ckpt, "save_tokenizer", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.export(model, config, out, "second")
    assert (out / "README.md").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    ckpt.export(model, config, out, "second")
    assert (out / "README.md").read_text() == "second" and (out / "learn2pd_filter.safetensors").read_bytes() == b"kept"
    reloaded = dllm.load(out)
    assert torch.equal(reloaded.embed.weight, model.embed.weight)
