"""Autoregressive start and conversion: the AR loss is plain next-token cross-entropy, the AR export is a Qwen3
causal LM, its weights carry over unchanged into sdar and llada, a converted sdar model at block size 1 is causal
attention (and S2D2's verifier agrees), the block size is drawn per batch, resume is bit for bit, and both
pipelines run end to end from the command line."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

import dllm
from dllm.distill.ar import ar_init, ar_pretrain, export_ar, greedy, qwen3_config
from dllm.distill.checkpoint import load_state
from dllm.distill.convert import convert, converted
from dllm.distill.data import Batches
from dllm.distill.objectives import (BlockwiseMasking, CausalBatches, DrawnBlockSize, block_diffusion_loss,
                                     masked_diffusion_loss, next_token_loss)
from dllm.distill.pretrain import Decoding, ModelInit, TrainSettings, build_model
from dllm.distill.tokenizer import MASK_ID
from dllm.eval.tasks.synthetic import suite
from dllm.eval.tracking import Tracker
from dllm.protocols import NoState, StepOutput
from dllm.saving import save

CPU = torch.device("cpu")
INIT = ModelInit("sdar", 32, 2, 4, 2, 64, False, 4, 10000.0)
DEC = Decoding(gen_length=16, block_length=4)


def settings(**over) -> TrainSettings:
    base = dict(steps=6, batch_size=8, lr=3e-3, min_lr_ratio=0.1, warmup=2, weight_decay=0.1, grad_clip=1.0,
                t_min=0.1, t_max=1.0, prompt_length=16, eval_every=0, ckpt_every=2, eval_n=1, final_eval_n=1,
                sweep_n=1, eval_seed=0, taus=())
    return TrainSettings(**{**base, **over})


def batch(left_pad: bool, n: int = 6, step: int = 0):
    return Batches(suite("train"), n, 16, 16, 0, left_pad=left_pad, multiple_of=1 if left_pad else 8)[step]


def causal(L: int) -> torch.Tensor:
    return torch.tril(torch.ones(L, L, dtype=torch.bool))[None, None]      # [1, 1, L, L] plain causal mask


def ar_model(seed: int = 0):
    """A random AR model whose norms are not all ones (so a misplaced q/k norm weight would show)."""
    model, config = build_model(ar_init(INIT), seed, CPU)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model, config


@pytest.fixture(scope="module")
def ar_folder(tmp_path_factory):
    model, config = ar_model()
    return export_ar(model, qwen3_config(config), tmp_path_factory.mktemp("ar") / "model", "card")


# -- the AR objective ------------------------------------------------------------------------------------------


def test_next_token_loss_is_plain_cross_entropy():
    model, _ = ar_model()
    b = batch(left_pad=False)
    L = b.ids.shape[1]
    with torch.no_grad():
        logits = model(b.ids, b.pos, attn_mask=causal(L)).logits                   # independent causal forward
        ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), b.ids[:, 1:].reshape(-1))
        torch.testing.assert_close(next_token_loss(model, b), ref, rtol=1e-5, atol=1e-6)
        # the pattern is forced per forward: a block-causal model of block size 4 gives the same loss
        wide = build_model(INIT, 0, CPU)[0]
        wide.load_state_dict(model.state_dict())
        torch.testing.assert_close(next_token_loss(wide, b), ref, rtol=1e-5, atol=1e-6)
        own = wide(b.ids, b.pos).logits                                             # block-causal: sees ahead
        assert not torch.allclose(own[:, :-1], logits[:, :-1], atol=1e-3)


def test_next_token_loss_skips_left_padding():
    model, _ = ar_model()
    b = batch(left_pad=True)
    assert b.padded
    with torch.no_grad():
        loss = next_token_loss(model, b)
        ref = []
        for r in range(b.ids.shape[0]):           # each row alone, padding cut off, positions from 0
            ids = b.ids[r, b.valid[r]][None]
            logits = model(ids, attn_mask=causal(ids.shape[1])).logits
            ref.append(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="none"))
        torch.testing.assert_close(loss, torch.cat(ref).mean(), rtol=1e-5, atol=1e-6)


def test_ar_export_is_a_qwen3_causal_lm(ar_folder):
    """transformers' Qwen3ForCausalLM reads the export and computes the same logits and the same loss."""
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(ar_folder, dtype=torch.float32).eval()
    model, _ = ar_model()
    b = batch(left_pad=False, n=3)
    with torch.no_grad():
        out = hf(input_ids=b.ids, labels=b.ids)
        torch.testing.assert_close(model(b.ids, block_size=1).logits, out.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(next_token_loss(model, b), out.loss, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model family"):   # not a diffusion model: dllm.load refuses it
        dllm.load(ar_folder)


def test_greedy_decoding_is_argmax_of_the_causal_forward():
    model, _ = ar_model()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    seqs, _ = greedy(model, prompts, 4)
    for p, seq in zip(prompts, seqs):
        x = list(p)
        for _ in range(4):
            logits = model(torch.tensor([x]), attn_mask=causal(len(x))).logits[0, -1]
            logits[model.mask_id] = float("-inf")
            x.append(int(logits.argmax()))
        ref = x[len(p):]
        cut = next((i for i, t in enumerate(ref) if t in model.stop_ids), None)
        assert seq == (ref if cut is None else ref[:cut])


# -- conversion -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["sdar", "llada"])
def test_ar_weights_carry_over_unchanged(ar_folder, tmp_path, target):
    """AR export -> target family -> its own checkpoint format -> dllm.load: every tensor is the AR one."""
    ar, _ = ar_model()
    model, config, _ = converted(ar_folder, target, 4 if target == "sdar" else None, CPU)
    loaded = dllm.load(save(model, tmp_path / target, config), device="cpu")
    assert loaded.family == target and loaded.cfg.qk_norm
    for name, tensor in ar.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    from safetensors import safe_open
    with safe_open(tmp_path / target / "model.safetensors", "pt") as f:
        q_norm = "model.transformer.blocks.0.q_norm.weight" if target == "llada" else \
            "model.layers.0.self_attn.q_norm.weight"
        assert q_norm in f.keys()
    # the same function under the same mask: only the attention pattern is the family's
    ids = batch(left_pad=False, n=2).ids
    everything = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attn_mask=everything).logits, ar(ids, attn_mask=everything).logits)
        if target == "llada":   # bidirectional by default
            torch.testing.assert_close(loaded(ids).logits, ar(ids, attn_mask=everything).logits)


def test_shifted_llada_keeps_the_ar_alignment(ar_folder, tmp_path):
    """pipeline.logit_shift: the converted llada predicts token i where the AR model predicted it, at i - 1 (Dream's
    convention), and the `logit_shift` key survives the checkpoint round trip."""
    ar, _ = ar_model()
    model, config, _ = converted(ar_folder, "llada", None, CPU, logit_shift=True)
    assert config["logit_shift"] is True
    loaded = dllm.load(save(model, tmp_path / "shifted", config), device="cpu")
    assert loaded.logit_shift and loaded.family == "llada"
    ids = batch(left_pad=False, n=2).ids
    L = ids.shape[1]
    with torch.no_grad():
        mine, theirs = loaded(ids, attn_mask=causal(L)).logits, ar(ids, attn_mask=causal(L)).logits
        torch.testing.assert_close(mine[:, 1:], theirs[:, :-1])          # the AR's next-token prediction, unmoved
        unshifted = converted(ar_folder, "llada", None, CPU)[0](ids, attn_mask=causal(L)).logits
        torch.testing.assert_close(unshifted, theirs)
    with pytest.raises(ValueError, match="logit_shift is a llada key"):
        converted(ar_folder, "sdar", 4, CPU, logit_shift=True)


@pytest.mark.parametrize("left_pad", [False, True])
def test_causal_loss_of_a_shifted_llada_is_the_ar_loss(ar_folder, left_pad):
    """Under a forced causal mask, the converted llada that predicts token i at i - 1 is the AR model: the causal
    next-token loss of `CausalBatches` is the AR start's own loss, left padding included. Unshifted, refused."""
    ar, _ = ar_model()
    b = batch(left_pad=left_pad)
    with torch.no_grad():
        shifted = converted(ar_folder, "llada", None, CPU, logit_shift=True)[0]
        torch.testing.assert_close(next_token_loss(shifted, b), next_token_loss(ar, b))
        with pytest.raises(ValueError, match="opposite alignment"):
            next_token_loss(converted(ar_folder, "llada", None, CPU)[0], b)


def test_causal_batches_draw_the_loss_per_batch(ar_folder):
    """A function of the step's generator: the causal loss on about `share` of the batches, the base on the rest."""
    model = converted(ar_folder, "llada", None, CPU, logit_shift=True)[0]
    b = batch(left_pad=True)
    mixed, causal = CausalBatches(masked_diffusion_loss, 0.25), 0
    with torch.no_grad():
        ar_loss = next_token_loss(model, b)
        for step in range(40):
            g = torch.Generator().manual_seed(step)
            drawn = float(torch.rand(1, generator=g)) < 0.25
            base = masked_diffusion_loss(model, b, g)     # the base sees the generator after the draw
            got = mixed(model, b, torch.Generator().manual_seed(step))
            torch.testing.assert_close(got, ar_loss if drawn else base)
            causal += drawn
    assert 4 <= causal <= 16 and mixed.__name__ == "masked_diffusion_loss+causal(0.25)"
    with pytest.raises(ValueError, match="share of causal batches"):
        CausalBatches(masked_diffusion_loss, 1.0)


def test_convert_refuses_what_is_not_an_ar_checkpoint(ckpt_dir):
    with pytest.raises(ValueError, match="pipeline.init"):
        converted(ckpt_dir("sdar", n_kv_heads=2, block_size=4), "sdar", 4, CPU)


def test_drawn_block_size_is_a_function_of_the_step():
    objective = DrawnBlockSize((1, 2, 4, 8))
    draws = [objective.draw(torch.Generator().manual_seed(1000 + step)) for step in range(40)]
    assert draws == [objective.draw(torch.Generator().manual_seed(1000 + step)) for step in range(40)]
    assert set(draws) == {1, 2, 4, 8}
    model, _ = build_model(INIT, 0, CPU)
    b = batch(left_pad=False)
    with torch.no_grad():
        loss = objective(model, b, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        size = objective.draw(g)                      # the draw comes first from the step's generator
        torch.testing.assert_close(loss, block_diffusion_loss(model, b, g, block_size=size))
    with pytest.raises(ValueError, match="block sizes"):
        DrawnBlockSize((0, 4))


def test_blockwise_masking_is_the_semi_autoregressive_pattern():
    """One active block per row: the prompt and the blocks before it clean, its slots masked with the row's
    ratio, every later answer slot a mask; the draw covers every block and is a function of the generator."""
    objective, b = BlockwiseMasking(4), batch(left_pad=True, n=32)
    x_t, scored, p_mask, active = objective.noise(b, MASK_ID, torch.Generator().manual_seed(5), 0.1, 1.0)
    again = objective.noise(b, MASK_ID, torch.Generator().manual_seed(5), 0.1, 1.0)
    assert all(torch.equal(u, v) for u, v in zip((x_t, scored, p_mask, active), again))
    starts = []
    for r in range(len(b.ids)):
        cols = b.answer[r].nonzero()[:, 0]                        # the row's 16 answer slots, in order
        on = active[r, cols].nonzero()[:, 0]
        assert len(on) == 4 and on[0] % 4 == 0 and torch.equal(on, on[0] + torch.arange(4))
        k = int(on[0])
        starts.append(k // 4)
        assert torch.equal(x_t[r, cols[:k]], b.ids[r, cols[:k]])                  # clean before the block
        assert bool((x_t[r, cols[k + 4:]] == MASK_ID).all())                            # all-mask after it
        assert torch.equal(x_t[r, ~b.answer[r]], b.ids[r, ~b.answer[r]])          # the prompt is never masked
        blk = cols[k:k + 4]
        assert torch.equal(scored[r, blk], x_t[r, blk] == MASK_ID) and not bool(scored[r, ~active[r]].any())
    assert set(starts) == {0, 1, 2, 3}
    assert 0.1 <= float(p_mask.min()) and float(p_mask.max()) <= 1.0
    with pytest.raises(ValueError, match="active block"):
        BlockwiseMasking(0)


def test_blockwise_masking_loss_is_the_active_blocks_weighted_ce():
    """CE / t over the active block's masked slots, divided by the block's length, averaged over rows, from the
    bidirectional forward of x_t; rows= gives that row share's part of the same noise (exact=False: the batch's
    set-valued rows are scored against their sampled order, plain CE)."""
    model, _ = build_model(ModelInit("llada", 32, 2, 4, 4, 64, False, None, 10000.0), 0, CPU)
    objective, b = BlockwiseMasking(4), batch(left_pad=True, n=6)
    with torch.no_grad():
        loss = objective(model, b, torch.Generator().manual_seed(2), exact=False)
        x_t, scored, p_mask, active = objective.noise(b, model.mask_id, torch.Generator().manual_seed(2), 0.1, 1.0)
        logits = model(x_t, b.pos, pad_mask=b.valid).logits
        per_row = [F.cross_entropy(logits[r][scored[r]], b.ids[r][scored[r]], reduction="sum") / p_mask[r] / 4
                   for r in range(len(b.ids))]
        torch.testing.assert_close(loss, torch.stack(per_row).mean())
        half = objective(model, b, torch.Generator().manual_seed(2), rows=slice(0, 3), exact=False)
        torch.testing.assert_close(half, torch.stack(per_row[:3]).mean())


@dataclass(frozen=True)
class VerifierProbe:
    """Records S2D2's verifier logits for the greedy drafts, then commits the drafts."""
    seen: list
    ar_cache: bool = True
    needs_hidden: ClassVar[bool] = False

    def init_state(self, batch_size, num_blocks, device):
        return NoState()

    def step(self, inp, state):
        x_blk = inp.x[:, inp.block.start:inp.block.end]
        drafts = torch.where(inp.masked, inp.logits.argmax(-1), x_blk)
        self.seen.append((inp.x.clone(), inp.block.start, drafts, inp.forward.autoregressive(drafts).logits))
        return StepOutput(drafts, inp.masked), state


@pytest.mark.parametrize("cache", ["none", "block_fused"])
def test_converted_sdar_at_block_size_1_is_causal_attention(ar_folder, cache):
    """model.forward(block_size=1) is a plain causal-mask forward, and S2D2's block-size-1 verifier
    (`Forward.autoregressive`) predicts each slot as that causal forward does with a mask in the slot."""
    model, _, _ = converted(ar_folder, "sdar", 4, CPU)
    model.eval()
    ids = batch(left_pad=False, n=3).ids
    with torch.no_grad():
        one = model(ids, block_size=1).logits
        torch.testing.assert_close(one, model(ids, attn_mask=causal(ids.shape[1])).logits)
        assert not torch.allclose(one, model(ids).logits, atol=1e-3)      # its own block size 4 differs
    seen = []
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    with torch.no_grad():
        dllm.generate(model, prompts, VerifierProbe(seen), gen_length=8, block_length=4, cache=cache,
                      stop_at_eos=False)
        assert len(seen) >= 2
        for x, s, drafts, q in seen:
            for r in range(x.shape[0]):
                real = x[r, :s][x[r, :s] != model.pad_id].tolist()      # the row's prefix without left padding
                for i in range(drafts.shape[1]):
                    seq = torch.tensor([real + drafts[r, :i].tolist() + [model.mask_id]])
                    ref = model(seq, block_size=1).logits[0, -1]
                    torch.testing.assert_close(q[r, i], ref, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def greedy_block_size_1(model, prompt: list[int], n: int) -> list[int]:
    """Greedy AR decoding of an (unshifted) block-diffusion model at block size 1: token i is the argmax at a
    mask placed after the prompt and tokens < i, one causal forward per token."""
    out = []
    for _ in range(n):
        seq = torch.tensor([prompt + out + [model.mask_id]], device=model.device)
        logits = model(seq, block_size=1).logits[0, -1]
        logits[model.mask_id] = float("-inf")
        out.append(int(logits.argmax()))
    return out


def s2d2_always_verify_equals_greedy_ar(model, prompts: list[list[int]], gen_length: int, block_length: int):
    from dllm.samplers import S2D2, Always
    sampler = S2D2(router=Always(), acceptance="greedy")
    for cache in ("none", "block_fused"):
        out = dllm.generate(model, prompts, sampler, gen_length=gen_length, block_length=block_length, cache=cache,
                            stop_at_eos=False)
        for p, seq in zip(prompts, out.sequences):
            ref = greedy_block_size_1(model, p, gen_length)
            cut = next((i for i, t in enumerate(ref) if t in model.stop_ids), None)   # sequences end at a stop
            assert seq == (ref if cut is None else ref[:cut])
        assert out.nfe < 2 * gen_length * len(prompts)


def test_s2d2_greedy_always_verify_is_greedy_ar_decoding(ar_folder):
    """S2D2 with every step verified and greedy acceptance commits exactly the block-size-1 greedy tokens
    (arXiv 2603.25702: the verifier is the AR pass; a rejected draft is replaced by the verifier's token)."""
    model, _, _ = converted(ar_folder, "sdar", 4, CPU)
    s2d2_always_verify_equals_greedy_ar(model.eval(), [[5, 6, 7, 8, 9], [10, 11, 12]], 12, 4)


# -- pipelines: resume and the command line ---------------------------------------------------------------------


def _cut(stop_at: int | None):
    def kill(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt
    return kill


def _run_ar(run_dir: Path, resume: bool, stop_at: int | None = None) -> Path:
    return ar_pretrain(INIT, settings(), DEC, seed=0, run_dir=run_dir, export_dir=run_dir / "model", resume=resume,
                       tracker=Tracker("disabled", "dllm", run_dir, {}), device=CPU, command="test",
                       on_step=_cut(stop_at))


def _run_convert(ar_dir: Path, target: str, run_dir: Path, resume: bool, stop_at: int | None = None) -> Path:
    return convert(ar_dir, target, [1, 2, 4], 4 if target == "sdar" else None, settings(lr=1e-3), DEC, seed=0,
                   run_dir=run_dir, export_dir=run_dir / "model", resume=resume,
                   tracker=Tracker("disabled", "dllm", run_dir, {}), device=CPU, command="test", on_step=_cut(stop_at))


def _same_run(full: Path, resumed: Path) -> None:
    a, b = load_state(full), load_state(resumed)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]] and len(a["history"]) == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_ar_then_convert_resume_bit_for_bit(tmp_path):
    """Killed after step 3 (the checkpoint of step 2 survives), resumed: the losses and weights of an
    uninterrupted run, for the AR start and for the sdar conversion, whose block sizes are drawn per step (the
    llada conversion is the same loop with pretraining's masked-diffusion loss)."""
    ar_dir = _run_ar(tmp_path / "ar", resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run_ar(tmp_path / "ar_cut", resume=False, stop_at=3)
    _run_ar(tmp_path / "ar_cut", resume=True)
    _same_run(tmp_path / "ar", tmp_path / "ar_cut")
    assert (ar_dir / "README.md").read_text().startswith("---\nlibrary_name: dllm\nfamily: qwen3")
    out = _run_convert(ar_dir, "sdar", tmp_path / "sdar", resume=False)
    with pytest.raises(KeyboardInterrupt):
        _run_convert(ar_dir, "sdar", tmp_path / "sdar_cut", resume=False, stop_at=3)
    _run_convert(ar_dir, "sdar", tmp_path / "sdar_cut", resume=True)
    _same_run(tmp_path / "sdar", tmp_path / "sdar_cut")
    model = dllm.load(out, device="cpu")
    assert model.family == "sdar" and model.block_size == 4
    card = (out / "README.md").read_text()
    assert "converted by `dllm.distill.convert`" in card
    # the whole recipe in one card: the AR start's own card (its command and greedy accuracy) closes it
    assert card.index("## The autoregressive start") > card.index("## Accuracy")
    assert "### Accuracy (greedy autoregressive decoding)" in card and "# AR base" not in card


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HOME": str(tmp_path / "hf"), "WANDB_DIR": str(tmp_path)}
    small = ["pipeline.steps=4", "pipeline.batch_size=4", "pipeline.ckpt_every=2", "pipeline.eval_every=2",
             "pipeline.eval_n=1", "pipeline.final_eval_n=1", "pipeline.sweep_n=1", "pipeline.taus=[0.5]",
             "pipeline.warmup=1", "pipeline.threads=1", "logger.mode=disabled", "model.device=cpu"]
    done = subprocess.run([sys.executable, "-m", "dllm.distill.cli", *args, *small], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_cli_ar_then_convert(tmp_path):
    """The recipe as documented: pipeline=ar, then pipeline=convert for each target from its export."""
    tiny = ["model.init.d_model=32", "model.init.n_layers=2", "model.init.n_heads=4", "model.init.n_kv_heads=2",
            "model.init.d_ff=64"]
    _cli(["pipeline=ar", "model=tiny_sdar", *tiny, f"hydra.run.dir={tmp_path / 'ar'}"], tmp_path)
    assert (tmp_path / "ar" / "state.pt").is_file()
    llada = ["pipeline.mask_block=4", "pipeline.logit_shift=true", "pipeline.causal_share=0.5"]
    for model, objective in (("tiny_sdar", []), ("tiny_llada", llada)):
        run = tmp_path / model
        _cli(["pipeline=convert", f"model={model}", f"pipeline.init={tmp_path / 'ar' / 'model'}",
              f"hydra.run.dir={run}", *objective], tmp_path)
        loaded = dllm.load(run / "model", device="cpu")
        assert loaded.family == model[5:] and loaded.cfg.d_model == 32
        card = (run / "model" / "README.md").read_text()
        assert f"pipeline=convert model={model}" in card
        assert ("one active block of 4 answer slots per row" in card) == (model == "tiny_llada")
        assert loaded.logit_shift == ("the AR base's alignment kept" in card) == (model == "tiny_llada")
        assert ("the causal next-token loss on a 0.5 share of the batches" in card) == (model == "tiny_llada")


def test_convert_without_init_says_what_to_pass(tmp_path):
    from hydra import compose, initialize_config_module
    from dllm.distill.cli import run_convert
    with initialize_config_module("dllm.configs", version_base="1.3"):
        cfg = compose("distill", overrides=["pipeline=convert", "logger.mode=disabled"])
    with pytest.raises(ValueError, match="pipeline.init="):
        run_convert(cfg, tmp_path, "test")


def test_the_llada_v2_preset_converts_with_the_shift():
    """model=tiny_llada_v2 keeps the AR alignment and mixes causal batches (its data block); the others do not."""
    from hydra import compose, initialize_config_module
    with initialize_config_module("dllm.configs", version_base="1.3"):
        keys = {m: (lambda p: (p.logit_shift, p.causal_share))(
                    compose("distill", overrides=["pipeline=convert", f"model={m}"]).pipeline)
                for m in ("tiny_llada_v2", "tiny_sdar_v2", "tiny_llada")}
    assert keys == {"tiny_llada_v2": (True, 0.25), "tiny_sdar_v2": (False, None), "tiny_llada": (False, None)}


@pytest.mark.parametrize("target,option,match", [
    ("sdar", {"mask_block": 4}, "mask_block=4 is the llada conversion's"),
    ("sdar", {"logit_shift": True}, "logit_shift=true is the llada conversion's"),
    ("sdar", {"causal_share": 0.25}, "block size 1 in pipeline.block_sizes"),
    ("llada", {"causal_share": 0.25}, "needs pipeline.logit_shift=true")])
def test_llada_only_options_are_refused_where_they_do_not_apply(ar_folder, tmp_path, target, option, match):
    with pytest.raises(ValueError, match=match):
        convert(ar_folder, target, [1, 4], 4 if target == "sdar" else None, settings(), DEC, seed=0,
                run_dir=tmp_path, export_dir=tmp_path / "model", resume=False,
                tracker=Tracker("disabled", "dllm", tmp_path, {}), device=CPU, command="test", **option)
