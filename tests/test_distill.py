"""Distillation pipelines: trajectory collection, Learn2PD filter training, dParallel certainty forcing, the shared
loop (resume, data parallelism) and the entropy-threshold sampler."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import dllm
from conftest import prompts
from dllm.distill.collect import collect, load_trajectories, responses
from dllm.distill.checkpoint import load_state
from dllm.distill.data import Batch
from dllm.distill.dparallel import (CertaintySettings, answer_blocks, certainty_entropy, certainty_masks,
                                    dparallel, encode_pairs)
from dllm.distill.learn2pd import (FilterSettings, filter_loss, filter_rows, held_out_metrics, learn2pd, new_filter,
                                   split_examples)
from dllm.distill.loop import LoopSettings
from dllm.distill.pretrain import Decoding
from dllm.eval.distributed import Dist
from dllm.eval.tracking import Tracker
from dllm.loading import resolve
from dllm.protocols import Block, StepInput
from dllm.samplers import EntropyThreshold, Learn2PD, Static
from dllm.samplers.policy import FEATURE, load_filter

DEC = Decoding(gen_length=8, block_length=4)
ONE = Dist(0, 1, None)
NO_LOG = Tracker("disabled", "dllm", ".", {})
FILTER = FilterSettings(hidden=None, activation="relu", lr=3e-3, weight_decay=0.01, held_out=0.25, accept=0.9)
CF = CertaintySettings(lr=1e-3, weight_decay=0.01, mask_ratio=0.5, eps=1e-3, temperature=0.5, entropy_weight=2.0)


def test_collect_shards_labels_and_resume(llada, tmp_path):
    ps = prompts(10)
    collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=4, batch_size=3)
    manifest, data = load_trajectories(tmp_path)
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{i:05d}.safetensors" for i in range(3)]
    assert manifest["feature"] == list(FEATURE) and manifest["num_examples"] == 10
    # one token per step: 8 steps per example, one commit each, and the label is top-1 == final token
    assert data["step_example"].bincount().tolist() == [8] * 10
    assert data["commit"].sum(1).tolist() == [1] * 80
    assert [p for p, _ in responses(data)] == ps
    for i in (0, 37, 79):
        e, s = data["step_example"][i], data["block_start"][i]
        o = data["canvas_offsets"][e]
        final = data["canvas"][o + s:o + s + 4]
        assert torch.equal(data["label"][i], data["top1"][i] == final)
    # resuming adds nothing; a removed last shard is recomputed identically
    before = {f.name: f.stat().st_mtime_ns for f in tmp_path.glob("shard-*")}
    collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=4, batch_size=3)
    assert {f.name: f.stat().st_mtime_ns for f in tmp_path.glob("shard-*")} == before
    last = tmp_path / "shard-00002.safetensors"
    old = load_file(str(last))
    last.unlink()
    collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=4, batch_size=3)
    assert all(torch.equal(v, load_file(str(last))[k]) for k, v in old.items())
    with pytest.raises(ValueError, match="other settings"):
        collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=2, shard_size=4)


def run_learn2pd(model, run_dir, steps, resume=False):
    return learn2pd(model, prompts(8), dec=DEC, f=FILTER, loop=LoopSettings(steps, 16, 2, None), seed=0, dist=ONE,
                    run_dir=run_dir, filter_path=run_dir / "filter.safetensors", resume=resume, tracker=NO_LOG,
                    shard_size=4, collect_batch=8, eval_tasks=[], accepts=[], taus=[], info={"model": "tiny"})


def test_learn2pd_round_trip_and_resume(sdar, tmp_path):
    path = run_learn2pd(sdar, tmp_path / "full", 6)
    net = load_filter(path, block_length=4)
    assert net.meta["model"] == "tiny"
    out = dllm.generate(sdar, prompts(3), Learn2PD(str(path), accept=0.5), gen_length=8, block_length=4)
    assert all(len(s) <= 8 for s in out.sequences)
    with pytest.raises(ValueError, match="block_length"):
        load_filter(path, block_length=8)
    # interrupted after 3 steps (checkpoint every 2, plus the end), then resumed: the same curve and weights
    run_learn2pd(sdar, tmp_path / "cut", 3)
    run_learn2pd(sdar, tmp_path / "cut", 6, resume=True)
    full, cut = load_state(tmp_path / "full"), load_state(tmp_path / "cut")
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in cut["history"]]
    a, b = load_file(str(path)), load_file(str(tmp_path / "cut" / "filter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_filter_scores_the_slots_it_decides():
    """An AR-converted model's decoded slots predict the next token, confidently: scored on every slot (the
    reference), the filter learns that confidence means "not final" and accepts none of the masked slots; scored on
    the masked ones it accepts them. With every slot scored the loss is the plain mean BCE."""
    g = torch.Generator().manual_seed(0)
    masked = torch.rand(2048, 4, generator=g) < 0.5                                # [M, S]
    conf = torch.where(masked, 0.9 + 0.1 * torch.rand(2048, 4, generator=g), 0.97)
    label = masked.clone()                        # masked: final; decoded: their own token lost to the next one
    data = {"masked": masked, "conf": conf, "label": label, "step_example": torch.arange(2048)}
    accepted = {}
    for slots in ("all", "masked"):
        feat, lab, scored, _ = filter_rows(data, slots)
        f = FilterSettings(None, "relu", 1e-2, 0.0, 0.0, 0.9, slots)
        net = new_filter(4, f, 0)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        for _ in range(300):
            loss = filter_loss(net(feat), lab, scored)
            opt.zero_grad()
            loss.backward()
            opt.step()
        accepted[slots] = held_out_metrics(net, feat, lab, scored, masked, 0.9)["accepted"]
    assert accepted["all"] < 0.1 and accepted["masked"] > 0.9, accepted
    feat, lab, scored, _ = filter_rows(data, "all")
    logits = torch.randn(feat.shape, generator=g)
    torch.testing.assert_close(filter_loss(logits, lab, scored),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, lab))
    with pytest.raises(ValueError, match="label_slots"):
        FilterSettings(None, "relu", 1e-2, 0.0, 0.0, 0.9, "decoded")


def run_dparallel(run_dir, steps, resume=False, lora=None):
    model = dllm.load(run_dir.parent / "teacher")
    return dparallel(model, run_dir.parent / "teacher", prompts(8), dec=DEC, s=CF, loop=LoopSettings(steps, 4, 2, 1.0),
                     lora=lora, seed=0, dist=ONE, run_dir=run_dir, export_dir=run_dir / "model", resume=resume,
                     tracker=NO_LOG, shard_size=8, collect_batch=8, eval_tasks=[], thresholds=[], info={})


def test_dparallel_resume_equals_uninterrupted_and_exports(ckpt_dir, tmp_path):
    shutil.copytree(ckpt_dir("llada", n_kv_heads=2), tmp_path / "teacher")
    out = run_dparallel(tmp_path / "full", 4)
    student = dllm.load(out)
    run_dparallel(tmp_path / "cut", 3)
    run_dparallel(tmp_path / "cut", 4, resume=True)
    full, cut = load_state(tmp_path / "full"), load_state(tmp_path / "cut")
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in cut["history"]]
    a, b = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    teacher = load_file(str(tmp_path / "teacher" / "model.safetensors"))
    assert any(not torch.equal(a[k], teacher[k]) for k in a)
    dllm.generate(student, prompts(2), EntropyThreshold(0.5), gen_length=8, block_length=4)


def test_dparallel_lora_merges_into_a_plain_checkpoint(ckpt_dir, tmp_path):
    pytest.importorskip("peft")
    shutil.copytree(ckpt_dir("llada", n_kv_heads=2), tmp_path / "teacher")
    out = run_dparallel(tmp_path / "lora", 2, lora={"r": 4, "alpha": 8})
    a, teacher = load_file(str(out / "model.safetensors")), load_file(str(tmp_path / "teacher" / "model.safetensors"))
    assert a.keys() == teacher.keys()                      # merged: no adapter weights left
    assert any(not torch.equal(a[k], teacher[k]) for k in a)


def test_certainty_masks_partition_block_b():
    pairs = [([5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), ([5], [1, 2, 3])]
    batch = encode_pairs(pairs, 10, left_pad=True, multiple_of=1, pad_id=0, eos_id=11, stop_ids=(11,))
    blk = answer_blocks(batch, 4, block_causal=False)
    assert blk[0].tolist() == [-1] * 3 + [0] * 4 + [1] * 4 + [2] * 2 and blk[1].tolist() == blk[0].tolist()
    assert batch.ids[1].tolist() == [0, 0, 5, 1, 2, 3] + [11] * 7      # left-padded, EOS-filled
    for seed in range(20):
        m, c, suffix = certainty_masks(blk, torch.Generator().manual_seed(seed))
        assert not (m & c).any() and not ((m | c) & suffix).any()
        b = torch.where(m | c, blk, -1).amax(1)                         # the chosen block of each row
        assert torch.equal(m | c, blk == b[:, None])                     # the two copies partition block b
        assert torch.equal(suffix, blk > b[:, None])
        assert not ((m | c | suffix) & ~batch.answer).any()             # the prompt is never masked


def test_certainty_entropy_only_on_correct_predictions():
    target = torch.tensor([[1, 2, 3]])
    logits = torch.randn(1, 3, 8)
    logits[0, torch.arange(3), torch.tensor([4, 5, 6])] = 10.0          # argmax is wrong everywhere
    sel = torch.ones(1, 3, dtype=torch.bool)
    assert certainty_entropy(logits, target, sel, 0.5).item() == 0.0
    logits[0, 0, 1] = 20.0                                               # slot 0 becomes correct
    h = certainty_entropy(logits, target, sel, 0.5)
    p = torch.softmax(logits[0, 0] / 0.5, -1)
    assert torch.allclose(h, -(p * p.log()).sum(), atol=1e-6)


def test_block_causal_blocks_follow_the_absolute_grid():
    pairs = [([5, 6, 7], [1, 2]), ([5, 6, 7, 8, 9], [1])]
    batch = encode_pairs(pairs, 6, left_pad=False, multiple_of=4, pad_id=0, eos_id=11, stop_ids=(11,))
    blk = answer_blocks(batch, 4, block_causal=True)
    assert blk[0].tolist() == [-1, -1, -1, 0, 1, 1, 1, 1, 2, 2, 2, 2] and blk[1, 5:].tolist() == [1, 1, 1, 2, 2, 2, 2]


def test_entropy_threshold_below_zero_is_one_token_per_step_by_entropy():
    V = 64
    logits = torch.full((1, 3, V), -30.0)
    logits[0, 0, :2] = torch.tensor([0.6, 0.4]).log()                   # conf 0.6, entropy 0.67
    logits[0, 1, 0] = torch.tensor(0.7).log()                           # conf 0.7, entropy ~1.85
    logits[0, 1, 1:] = torch.tensor(0.3 / (V - 1)).log()
    logits[0, 2] = 0.0                                                  # uniform: entropy ln 64
    masked = torch.ones(1, 3, dtype=torch.bool)
    inp = StepInput(torch.zeros(1, 3, dtype=torch.long), logits, masked, Block(0, 3), 0, torch.Generator(),
                    None, mask_id=V - 1)
    out, _ = EntropyThreshold(-1.0).step(inp, EntropyThreshold(-1.0).init_state(1, 1, torch.device("cpu")))
    assert out.commit.tolist() == [[True, False, False]]                # lowest entropy, not highest confidence
    out, _ = EntropyThreshold(1.0).step(inp, None)
    assert out.commit.tolist() == [[True, False, False]]
    out, _ = EntropyThreshold(2.0).step(inp, None)
    assert out.commit.tolist() == [[True, True, False]]


def test_entropy_threshold_one_commit_per_step_in_generation(sdar):
    steps = []
    out = dllm.generate(sdar, prompts(3), EntropyThreshold(-1.0), gen_length=8, block_length=4,
                        on_step=lambda r: steps.append(r.commit.sum(1)))
    assert all((c <= 1).all() for c in steps) and out.stats["nfe"] >= 8


def cli(args, torchrun=False, timeout=240):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29600 + os.getpid() % 1000)] if torchrun else [sys.executable]
    r = subprocess.run(launcher + ["-m", "dllm.distill.cli", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _pipeline_args(pipeline: str, tmp_path) -> list[str]:
    if pipeline in ("pretrain", "ar"):   # a smaller fresh model: the pipeline builds it from model.init
        return ["model.init.d_model=32", "model.init.n_layers=2", "model.init.d_ff=64", "pipeline.warmup=1",
                "pipeline.eval_every=0", "pipeline.final_eval_n=1", "pipeline.sweep_n=1", "pipeline.taus=[0.5]"]
    # a private copy of the shipped model: it may be retrained while the test runs
    shutil.copytree(resolve("tiny-sdar"), tmp_path / "teacher")
    return [f"model.name_or_path={tmp_path / 'teacher'}", "pipeline.task.n_per_task=1", "pipeline.eval_n=0"]


@pytest.mark.parametrize("pipeline", ["dparallel", "learn2pd", "pretrain", "ar"])
def test_two_processes_equal_one(pipeline, tmp_path):
    common = [f"pipeline={pipeline}", "model=tiny_sdar", "model.device=cpu", "pipeline.steps=3",
              "pipeline.batch_size=4", "logger.mode=disabled", *_pipeline_args(pipeline, tmp_path)]
    cli(common + [f"hydra.run.dir={tmp_path / 'one'}"])
    cli(common + [f"hydra.run.dir={tmp_path / 'two'}"], torchrun=True)
    one, two = load_state(tmp_path / "one"), load_state(tmp_path / "two")
    assert torch.allclose(torch.tensor([r["loss"] for r in one["history"]]),
                          torch.tensor([r["loss"] for r in two["history"]]), atol=1e-6)
    # Adam divides by sqrt(v): a gradient that is ~0 on a trained teacher can flip sign under a different float
    # summation order and move that one weight by ~2 lr, so check that all but a sliver of weights agree to 1e-6
    # (a wrong shard or a missing all-reduce moves nearly every weight)
    diff = torch.cat([(v - two["model"][k]).abs().flatten() for k, v in one["model"].items()])
    assert (diff > 1e-6).float().mean() < 1e-3 and diff.max() < 1e-2


def test_teacher_prompts_from_the_mbpp_and_gsm8k_train_splits():
    from conftest import SHARED_DATA
    from dllm.eval.tasks.gsm8k import GSM8K
    from dllm.eval.tasks.mbpp import MBPP
    if not (SHARED_DATA / "mbpp").is_dir() or not (SHARED_DATA / "gsm8k").is_dir():
        pytest.skip("no local MBPP / GSM8K copy")
    ids = {int(e.id.rsplit("/", 1)[1]) for e in MBPP(split="train", data_dir=str(SHARED_DATA / "mbpp")).examples()}
    assert min(ids) >= 601 and max(ids) <= 974 and len(ids) > 300
    assert len(GSM8K(split="train", data_dir=str(SHARED_DATA / "gsm8k")).examples()) > 7000
    with pytest.raises(ValueError, match="split"):
        MBPP(split="validation")


def test_garbage_shard_or_manifest_names_the_file(llada, tmp_path):
    ps = prompts(4)
    collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=2)
    shard = tmp_path / "shard-00001.safetensors"
    good = shard.read_bytes()
    shard.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="shard-00001.safetensors is not a readable trajectory shard.*delete it"):
        load_trajectories(tmp_path)
    shard.unlink()      # as the message says: collection resumes at the missing shard
    collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=2)
    assert shard.read_bytes() == good
    (tmp_path / "manifest.json").write_text('{"shards": [')
    for call in (lambda: load_trajectories(tmp_path),
                 lambda: collect(llada, ps, Static(steps=8), tmp_path, gen_length=8, block_length=4, shard_size=2)):
        with pytest.raises(ValueError, match="manifest.json is not a trajectory manifest.*collect .* again"):
            call()


def test_learn2pd_resume_messages(sdar, tmp_path):
    with pytest.warns(UserWarning, match="resume=true but .*state.pt does not exist: starting from step 0"):
        run_learn2pd(sdar, tmp_path, 3, resume=True)
    with pytest.raises(ValueError, match="state.pt is at step 3, beyond pipeline.steps=2"):
        run_learn2pd(sdar, tmp_path, 2, resume=True)
    state = tmp_path / "state.pt"
    state.write_bytes(state.read_bytes()[:500])                       # a cut Learn2PD state
    with pytest.raises(ValueError, match=r"state.pt is unreadable \(RuntimeError"):
        run_learn2pd(sdar, tmp_path, 6, resume=True)


@pytest.mark.parametrize("pipeline", ["learn2pd", "dparallel"])
def test_teacher_prompts_and_comparison_follow_the_models_own_suite(pipeline):
    """v1 models keep the synthetic teacher prompts they were distilled on; a v2 model's are its long tasks, its
    final comparison is on their test split and decodes them with its suite tokenizer."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from dllm.distill.cli import _eval_tasks, own_suite
    from dllm.eval.tasks.synthetic import SyntheticSuite
    with initialize_config_module("dllm.configs", version_base="1.3"):
        v1 = compose("distill", overrides=[f"pipeline={pipeline}", "model=tiny_sdar"])
        v2 = compose("distill", overrides=[f"pipeline={pipeline}", "model=tiny_sdar_v2", "pipeline.eval_n=3"])
    assert instantiate(v1.pipeline.task).examples() == SyntheticSuite(split="train", n_per_task=64, seed=1).examples()
    assert own_suite(v1) == ("synthetic", "words") and own_suite(v2) == ("long", "suite")
    examples = instantiate(v2.pipeline.task).examples()
    assert len(examples) == 128 and examples[0].prompt.startswith("Question:") and "[BEGIN]" in examples[-1].prompt
    assert [(t.name, t.split, len(t.examples())) for t in _eval_tasks(v2)] == [("gsm_synth", "test", 3),
                                                                               ("mbpp_synth", "test", 3)]
    # tiny-llada-v2 serves less than it was trained on (long): teacher prompts and comparison follow `serves`
    with initialize_config_module("dllm.configs", version_base="1.3"):
        part = compose("distill", overrides=[f"pipeline={pipeline}", "model=tiny_llada_v2", "pipeline.eval_n=3"])
    assert own_suite(part) == (("mbpp_synth",), "suite")
    assert {e.id.split("/")[0] for e in instantiate(part.pipeline.task).examples()} == {"mbpp_synth"}
    assert [t.name for t in _eval_tasks(part)] == ["mbpp_synth"]


@pytest.mark.parametrize("pipeline", ["learn2pd", "dparallel"])
def test_round_trip_on_the_shipped_v2_model(pipeline, tmp_path):
    """The distillation pipelines on tiny-sdar-v2 from the command line (its long-task teacher prompts, its suite
    tokenizer), and what they write decodes a held-out long-task prompt."""
    if not (resolve("tiny-sdar-v2") / "model.safetensors").is_file():
        pytest.skip("tiny-sdar-v2 is not shipped in this checkout")
    from dllm.samplers import Learn2PD, load_filter
    shutil.copytree(resolve("tiny-sdar-v2"), tmp_path / "teacher")
    run = tmp_path / "run"
    cli([f"pipeline={pipeline}", "model=tiny_sdar_v2", f"model.name_or_path={tmp_path / 'teacher'}",
         "model.device=cpu", "pipeline.steps=3", "pipeline.task.n_per_task=2", "pipeline.eval_n=1",
         "pipeline.batch_size=4", "pipeline.ckpt_every=3", "pipeline.threads=1", "logger.mode=disabled",
         "pipeline.accepts=[0.9]" if pipeline == "learn2pd" else "pipeline.thresholds=[0.5]",
         "pipeline.taus=[0.9]" if pipeline == "learn2pd" else "pipeline.entropy_weight=2.0",
         f"hydra.run.dir={run}"], timeout=120)
    teacher, tok = dllm.load(tmp_path / "teacher"), dllm.load_tokenizer(tmp_path / "teacher")
    prompt = tok(build_long_prompt(), add_special_tokens=False).input_ids
    if pipeline == "learn2pd":
        net = load_filter(run / "filter.safetensors", block_length=4)
        assert net.meta["model"] == str(tmp_path / "teacher") and net.meta["task"] == "dllm.distill.suites.Suite"
        sampler, model = Learn2PD(net), teacher
    else:
        from dllm.samplers import EntropyThreshold
        sampler, model = EntropyThreshold(0.5), dllm.load(run / "model")
        assert model.vocab_size == teacher.vocab_size and model.block_size == teacher.block_size
        assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                          teacher.state_dict().values()))   # it trained
    out = dllm.generate(model, [prompt], sampler, gen_length=160, block_length=4)
    assert out.nfe >= 1 and out.sequences[0]


def build_long_prompt() -> str:
    from dllm.distill.suites import build_tasks
    return build_tasks("long", "test", 1, 0)[0].examples()[0].prompt


def test_held_out_split_leaves_examples_to_fit_on():
    """A seeded split that holds out at least one example; one that would leave nothing to fit on is a clear error
    naming the keys (found with a one-prompt run on a model that serves one task)."""
    train = split_examples(10, 0.2, seed=3)
    assert int(train.sum()) == 8 and torch.equal(train, split_examples(10, 0.2, seed=3))
    assert int(split_examples(2, 0.2, seed=0).sum()) == 1 and bool(split_examples(1, 0.0, seed=0).all())
    with pytest.raises(ValueError, match="leaves none to fit the filter on"):
        split_examples(1, 0.2, seed=0)
