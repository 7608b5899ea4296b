"""The `dream` family: its on-disk format, logits equal to a plain-torch Qwen2 forward with Dream's shift (also
left-padded as Dream's generation code pads), Static equal to Dream's own decoding loop, the shifted cache feed."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import dllm
from dllm.cache import CachePolicy
from dllm.layout import make_layout
from dllm.protocols import Block, StepInput
from dllm.runner import BlockRunner
from dllm.samplers import Static, Threshold
from dllm.samplers.static import dream_plan

from conftest import prompts


@pytest.fixture(scope="module")
def folder(ckpt_dir):
    return ckpt_dir("dream", n_kv_heads=2)        # the checkpoint of conftest's `dream` model


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, pos, theta):                  # x [B, H, L, hd], pos [B, L]; non-interleaved halves (rotate_half)
    hd = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = pos[:, None, :, None].float() * inv                      # [B, 1, L, hd/2]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    half = hd // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def reference_dream(folder, ids, attention_mask=None):
    """Raw (unshifted) logits of modeling_dream.py's DreamModel, with the 4-D mask and `cumsum - 1` positions that
    generation_utils.py builds when the padding mask holds a 0 (pads get position 1 and attend nowhere: SDPA
    returns zeros for such rows)."""
    cfg = json.loads((folder / "config.json").read_text())
    w = {}
    for f in sorted(folder.glob("*.safetensors")):
        w.update(load_file(f))
    H, Hkv, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    hd = cfg["hidden_size"] // H
    B, L = ids.shape
    if attention_mask is not None and bool((attention_mask == 0).any()):
        pos = attention_mask.long().cumsum(-1) - 1
        pos.masked_fill_(attention_mask == 0, 1)
        am = attention_mask.bool()
        allowed = am[:, None, None, :] & am[:, None, :, None]               # [B, 1, L, L]
    else:
        pos, allowed = torch.arange(L).expand(B, L), torch.ones(B, 1, L, L, dtype=torch.bool)
    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        proj = lambda n, heads: (h @ w[f"{p}self_attn.{n}_proj.weight"].T + w[f"{p}self_attn.{n}_proj.bias"]) \
            .view(B, L, heads, hd).transpose(1, 2)
        q, k, v = proj("q", H), proj("k", Hkv), proj("v", Hkv)
        q, k = rope(q, pos, cfg["rope_theta"]), rope(k, pos, cfg["rope_theta"])
        k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
        s = (q @ k.transpose(-1, -2) / hd ** 0.5).masked_fill(~allowed, float("-inf"))
        o = torch.nan_to_num(s.softmax(-1)) @ v                             # is_causal=False: bidirectional
        x = x + o.transpose(1, 2).reshape(B, L, -1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def shift(logits):                        # generation_utils.py: position j reads row j - 1; row 0 keeps its own
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def left_pad(rows, pad_id):
    P = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (P - len(r)) + r for r in rows])
    return ids, torch.arange(P)[None] >= torch.tensor([P - len(r) for r in rows])[:, None]   # [B, P] bool


def dream_decode(folder, rows, *, steps, gen_length, alg, mask_id, pad_id, eps=1e-3):
    """Dream's `_sample` (generation_utils.py L365-465) at temperature 0, written out: one canvas of gen_length
    masks, timesteps linspace(1, eps, steps + 1), k = int(masks / B * (1 - s / t)) a step (all on the last),
    global top-k of the confidence over the masked slots."""
    ids, am = left_pad(rows, pad_id)
    B, P = ids.shape
    x = torch.cat([ids, torch.full((B, gen_length), mask_id)], 1)
    am = torch.cat([am.long(), torch.ones(B, gen_length, dtype=torch.long)], 1)
    t = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        masked = x == mask_id
        logits = shift(reference_dream(folder, x, am))[masked]              # [N, V]
        probs = torch.softmax(logits, -1)
        conf, x0 = probs.max(-1)
        if alg == "topk_margin":
            top = probs.sort(-1, descending=True).values
            conf = top[:, 0] - top[:, 1]
        elif alg == "entropy":
            conf = (probs * torch.log(probs + 1e-10)).sum(-1)
        assert not bool((x0 == mask_id).any()), "the checkpoint must not rank the mask id first (dllm never proposes it)"
        n = masked.sum() / B
        k = int(n * (1 - t[i + 1] / t[i])) if i < steps - 1 else int(n)
        full = torch.full(x.shape, float("-inf"))
        full[masked] = conf
        if k > 0:
            idx = full.topk(k, dim=1).indices
            proposal = torch.full_like(x, mask_id)
            proposal[masked] = x0
            r = torch.arange(B)[:, None].expand_as(idx)
            x[r, idx] = proposal[r, idx]
    return x[:, P:]


# --- format and loading -------------------------------------------------------------------------------------------

def test_checkpoint_format_and_special_ids(folder, dream):
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "Dream" and cfg["architectures"] == ["DreamModel"] and "AutoModel" in cfg["auto_map"]
    names = set(load_file(folder / "model.safetensors"))
    assert {"model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.v_proj.bias", "lm_head.weight"} <= names
    assert "model.layers.0.self_attn.o_proj.bias" not in names
    assert not (folder / "tokenizer.json").exists() and (folder / "vocab.json").is_file()
    added = json.loads((folder / "added_tokens.json").read_text())
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["alg"] == "origin" and gen["eps"] == 0.001 and gen["mask_token_id"] is None
    assert dream.family == "dream" and not dream.block_causal and dream.logit_shift
    assert dream.mask_id == added["<|mask|>"] == cfg["mask_token_id"]
    assert dream.pad_id == added["<|endoftext|>"]
    assert dream.stop_ids == (added["<|endoftext|>"], added["<|im_end|>"])
    assert dream.cache_modes == ("none", "prefix", "dual") and dream.default_cache == "prefix"


def test_tokenizer_loads_without_remote_code(folder, dream):
    tok = dllm.load_tokenizer(folder)
    assert tok.mask_token_id == dream.mask_id and tok.eos_token_id == tok.pad_token_id == dream.pad_id
    assert tok.decode(tok("the cat in the hat").input_ids) == "the cat in the hat"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    assert tok("a<|im_end|>").input_ids[-1] == dream.stop_ids[1]


def test_generation_config_read_when_present(folder, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    gen = json.loads((copy / "generation_config.json").read_text())
    gen["eos_token_id"] = [gen["eos_token_id"], 7]
    (copy / "generation_config.json").write_text(json.dumps(gen))
    assert 7 in dllm.load(copy).stop_ids
    (copy / "generation_config.json").unlink()
    assert dllm.load(copy).stop_ids == dllm.load(folder).stop_ids   # optional: config.json alone suffices


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(rope_scaling={"type": "yarn", "factor": 4.0}), "rope_scaling"),
    (lambda c: c.update(use_sliding_window=True), "use_sliding_window"),
    (lambda c: c.pop("num_hidden_layers"), "missing required keys"),
    (lambda c: (c.pop("mask_token_id"), c.update(model_type="Dream")), None),
    (lambda c: c.update(num_attention_heads=8), "shape"),
])
def test_loading_errors(folder, tmp_path, edit, match):
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    cfg = json.loads((copy / "config.json").read_text())
    edit(cfg)
    (copy / "config.json").write_text(json.dumps(cfg))
    if match is None:   # mask_token_id falls back to the tokenizer's mask_token; without one it is an error
        assert dllm.load(copy).mask_id == dllm.load(folder).mask_id
        tc = json.loads((copy / "tokenizer_config.json").read_text())
        tc.pop("mask_token")
        (copy / "tokenizer_config.json").write_text(json.dumps(tc))
        match = "no mask_token_id"
    with pytest.raises(ValueError, match=match):
        dllm.load(copy)


def test_missing_bias_is_a_loading_error(folder, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    w = load_file(copy / "model.safetensors")
    del w["model.layers.1.self_attn.k_proj.bias"]
    save_file(w, copy / "model.safetensors")
    with pytest.raises(ValueError, match="missing.*k_proj.bias"):
        dllm.load(copy)


# --- forward -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{"n_kv_heads": 2}, {"n_kv_heads": 4, "tie": True}, {"n_kv_heads": 1, "shards": 3}])
def test_logits_are_the_shifted_reference(ckpt_dir, kw):
    folder = ckpt_dir("dream", **kw)
    ids = torch.randint(0, 250, (2, 13), generator=torch.Generator().manual_seed(1))
    raw = reference_dream(folder, ids)
    got = dllm.load(folder)(ids).logits
    torch.testing.assert_close(got, shift(raw), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(got[:, 5], raw[:, 4], atol=2e-5, rtol=2e-5)   # token 5 is predicted at position 4


def test_left_padded_batch_matches_dreams_padding(folder, dream):
    rows = prompts(3, lengths=(9, 4, 6))
    ids, am = left_pad(rows, dream.pad_id)
    ref = shift(reference_dream(folder, ids, am.long()))
    pos = (am.long().cumsum(-1) - 1).clamp(min=0)
    got = dream(ids, pos, pad_mask=am).logits
    for r, row in enumerate(rows):
        first = ids.shape[1] - len(row) + 1     # the first real token's row reads the pad before it: never used
        torch.testing.assert_close(got[r, first:], ref[r, first:], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(got[r, first:], dream(torch.tensor([row])).logits[0, 1:], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("lo,hi", [(0, 12), (0, 1), (4, 8), (11, 12), (5, 5)])
def test_logits_range_equals_slice(dream, lo, hi):
    ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(4))
    full = dream(ids).logits
    torch.testing.assert_close(dream(ids, logits_range=(lo, hi)).logits, full[:, lo:hi], atol=1e-5, rtol=1e-5)


def test_a_forward_that_cannot_predict_its_first_position_is_refused(dream):
    cache = dream.new_cache(1, 12)
    ids = torch.randint(0, 250, (1, 12), generator=torch.Generator().manual_seed(5))
    dream(ids, cache=cache)
    with pytest.raises(ValueError, match="must also feed position 5"):
        dream(ids[:, 6:], cache=cache, start=6)
    out = dream(ids[:, 5:], cache=cache, start=5, logits_range=(1, 7)).logits
    torch.testing.assert_close(out, dream(ids).logits[:, 6:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_steps_feed_the_position_before_the_block(dream, mode):
    """Right after a refresh the canvas is unchanged, so a cached step must give the refresh's logits exactly,
    the block's first slot included (it is predicted at the position before the block)."""
    lay = make_layout(prompts(3), 16, 8, mask_id=dream.mask_id, pad_id=dream.pad_id, vocab_size=dream.vocab_size,
                      block_causal=False, device=torch.device("cpu"))
    runner = BlockRunner(dream, CachePolicy(mode), lay)
    block = lay.blocks[0]
    fresh = runner.block_logits(lay.x, lay.valid, lay.pos, block, 0).logits
    cached = runner.block_logits(lay.x, lay.valid, lay.pos, block, 1).logits
    extra = runner.extra(lay.x, lay.valid, lay.pos, block)(lay.x[:, block.start:block.end]).logits
    assert runner.calls["denoise"] == 1 and runner.calls["extra"] == 1
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extra, fresh, atol=1e-5, rtol=1e-5)


# --- decoding ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg,remasking", [("maskgit_plus", "low_confidence"), ("entropy", "entropy"),
                                           ("topk_margin", "margin")])
@pytest.mark.parametrize("steps", [16, 6, 24])
def test_static_equals_dreams_decoding(folder, dream, alg, remasking, steps):
    rows = prompts(3, lengths=(5, 9, 3))
    ref = dream_decode(folder, rows, steps=steps, gen_length=16, alg=alg, mask_id=dream.mask_id,
                       pad_id=dream.pad_id)
    sampler = Static(steps=steps, remasking=remasking, schedule="dream")
    out = dllm.generate(dream, rows, sampler, gen_length=16, block_length=16, cache="none", stop_at_eos=False)
    assert out.canvas[:, -16:].tolist() == ref.tolist()
    assert out.nfe <= steps and (steps < 24 or out.nfe < steps)   # steps that commit nothing are skipped


def test_dream_plan_is_dreams_schedule():
    for m0, steps in [(16, 16), (16, 6), (37, 512), (5, 1)]:
        t, left, ks = torch.linspace(1, 1e-3, steps + 1), m0, []
        for i in range(steps):
            k = int(torch.tensor(float(left)) * (1 - t[i + 1] / t[i])) if i < steps - 1 else left
            ks.append(k)
            left -= k
        plan = dream_plan(torch.tensor([m0, 3]), steps, 1e-3)[0].tolist()
        assert plan == [k for k in ks if k] + [0] * ks.count(0) and sum(plan) == m0


@pytest.mark.parametrize("sampler", [Static(steps=16, remasking="entropy", schedule="dream"), Threshold(0.5)])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_batch_equals_one_by_one(dream, sampler, cache):
    ps = prompts(4)
    kw = dict(gen_length=16, block_length=8, cache=cache, stop_at_eos=False)
    assert dllm.generate(dream, ps, sampler, **kw).sequences == \
        [dllm.generate(dream, [p], sampler, **kw).sequences[0] for p in ps]


def test_alg_temp_draws_slots_from_softmax_of_confidence():
    """k = 1 of 3 masked slots with confidences c: slot j is chosen with probability softmax(c / alg_temp)_j."""
    B, V = 20000, 4
    logits = torch.tensor([[4.0, 0, 0, 0], [2.0, 0, 0, 0], [1.0, 0.5, 0, 0]]).log_softmax(-1)   # [S, V]
    logits = logits.expand(B, -1, -1)
    masked = torch.ones(B, 3, dtype=torch.bool)
    sampler = Static(steps=3, alg_temp=0.2)
    state = sampler.init_state(B, 1, torch.device("cpu"))
    inp = StepInput(torch.zeros(B, 3, dtype=torch.long), logits, masked, Block(0, 3), 0,
                    torch.Generator().manual_seed(0), None, mask_id=V)
    out, _ = sampler.step(inp, state)
    assert out.commit.sum(1).eq(1).all()
    expected = torch.softmax(logits[0].double().softmax(-1).amax(-1) / 0.2, 0)
    torch.testing.assert_close(out.commit.double().mean(0), expected, atol=0.015, rtol=0)
    greedy, _ = Static(steps=3).step(inp, state)
    assert greedy.commit[:, 0].all()


def test_static_options_are_validated():
    for kw, match in [({"schedule": "cosine"}, "schedule"), ({"eps": 0.0}, "eps"), ({"alg_temp": -1.0}, "alg_temp"),
                      ({"remasking": "origin"}, "remasking")]:
        with pytest.raises(ValueError, match=match):
            Static(steps=4, **kw)


# --- downstream: bench shape, eval, compare, lm-eval, distillation --------------------------------------------------

def test_bench_shape_is_dream_7b():
    from dllm.eval.bench import SHAPES
    from dllm.testing import random_model
    spec = dict(SHAPES["dream_7b_shape"])
    with torch.device("meta"):
        model, cfg = random_model(spec.pop("family"), **spec)
    assert model.family == "dream" and model.logit_shift and cfg["num_key_value_heads"] == 4
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Dream-v0-Instruct-7B's safetensors index: q bias 3584, k/v bias 4 x 128, 28 layers, untied 152064-row head
    assert shapes["layers.27.attn.q.bias"] == (3584,) and shapes["layers.0.attn.k.bias"] == (512,)
    assert shapes["head.weight"] == (152064, 3584) and shapes["layers.0.mlp.gate.weight"] == (18944, 3584)


def test_bench_runs_a_random_dream_and_matches_the_naive_loop(monkeypatch):
    from omegaconf import OmegaConf
    from dllm.eval import bench
    small = dict(bench.SHAPES["dream_7b_shape"], vocab=288, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
    monkeypatch.setitem(bench.SHAPES, "small_dream_shape", small)
    cfg = OmegaConf.load(__import__("dllm.configs", fromlist=["x"]).__path__[0] + "/bench.yaml")
    cfg.merge_with({"models": ["small_dream_shape"], "samplers": ["static"], "batch_sizes": [2], "gen_lengths": [8],
                    "block_length": 4, "prompt_length": 6, "device": "cpu"})
    rows, _ = bench.run(cfg)
    assert {r["cache"] for r in rows if r["sampler"] == "static"} == {"none", "prefix", "dual"}
    assert next(r for r in rows if r["sampler"] == "static" and r["cache"] == "none")["matches_naive"] is True


def test_eval_and_compare_accept_dream(folder, dream, tmp_path):
    import csv
    import os
    import subprocess
    import sys
    from dllm.eval.evaluate import evaluate
    from dllm.eval.tasks.synthetic import SyntheticSuite
    task = SyntheticSuite(tasks=("copy", "add"), n_per_task=2)
    m = evaluate(dream, dllm.load_tokenizer(folder), task, Static(steps=8, remasking="entropy", schedule="dream"),
                 tmp_path / "eval", gen_length=8, block_length=8, batch_size=4, progress=False)
    assert m["n"] == 4 and m["nfe_per_example"] <= 8
    args = ["models=[dream_v0_instruct_7b]", f"+model_overrides.dream_v0_instruct_7b.name_or_path={folder}",
            "+model_overrides.dream_v0_instruct_7b.gen_length=8", "+model_overrides.dream_v0_instruct_7b.block_length=8",
            "task_overrides.n_per_task=2", "+task_overrides.tasks=[copy]",
            "grid=[{sampler:static},{sampler:dream},{sampler:threshold}]", "learn2pd_filters={}",
            "logger.mode=disabled", "progress=false", f"hydra.run.dir={tmp_path / 'compare'}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "dllm.eval.compare", *args], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "compare" / "results.csv").open()))
    assert {row["sampler"].split("(")[0] for row in rows} >= {"static", "threshold"} and len(rows) == 3


def test_lm_eval_adapter_accepts_dream(folder):
    pytest.importorskip("lm_eval")
    from dllm.eval.lm_eval_adapter import DLLM
    from lm_eval.api.instance import Instance
    lm = DLLM(pretrained=str(folder), sampler="threshold", threshold=0.5, gen_length=8, block_length=8,
              batch_size=2, device="cpu")
    assert lm.model.family == "dream"
    contexts = ["the cat", "in the hat and"]
    out = lm.generate_until([Instance("generate_until", doc={}, arguments=(c, {"until": ["never"]}), idx=0)
                             for c in contexts], disable_tqdm=True)
    direct = [lm.tokenizer.decode(dllm.generate(lm.model, [lm.tokenizer(c).input_ids], Threshold(0.5), gen_length=8,
                                                block_length=8).sequences[0], skip_special_tokens=True)
              for c in contexts]
    assert out == direct


def test_learn2pd_and_dparallel_on_dream(ckpt_dir, dream, tmp_path):
    from test_distill import run_dparallel, run_learn2pd
    from dllm.samplers import EntropyThreshold, Learn2PD
    from dllm.samplers.policy import load_filter
    path = run_learn2pd(dream, tmp_path / "l2pd", 2)
    assert load_filter(path, block_length=4).block_length == 4
    out = dllm.generate(dream, prompts(2), Learn2PD(str(path), accept=0.5), gen_length=8, block_length=4)
    assert all(len(s) <= 8 for s in out.sequences)
    shutil.copytree(ckpt_dir("dream", n_kv_heads=2), tmp_path / "teacher")
    out = run_dparallel(tmp_path / "dpar", 2)
    student = dllm.load(out)
    assert student.family == "dream" and student.logit_shift and student.stop_ids == dream.stop_ids
    a, teacher = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "teacher" / "model.safetensors"))
    assert a.keys() == teacher.keys() and any(not torch.equal(a[k], teacher[k]) for k in a)   # Dream names, trained
    dllm.generate(student, prompts(2), EntropyThreshold(0.5), gen_length=8, block_length=4)
