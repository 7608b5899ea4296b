"""dllm-eval: samples and metrics, resume after interruption, two-process data parallelism, real tasks' plumbing."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest

import dllm
from dllm.eval import evaluate as ev
from dllm.eval.evaluate import TIMING_KEYS, evaluate, read_samples
from dllm.eval.tasks.synthetic import SyntheticSuite
from dllm.samplers import Threshold

from conftest import SHARED_DATA

TASK = SyntheticSuite(tasks=("copy", "reverse", "add"), n_per_task=5)
KW = dict(gen_length=8, block_length=4, batch_size=4, progress=False)


def stable(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMING_KEYS and k != "wall_seconds_this_run"}


def rows_without_timing(path):
    return [{k: v for k, v in r.items() if k not in ("seconds", "latency")} for r in read_samples(path)]


@pytest.fixture(scope="module")
def sdar_ckpt(ckpt_dir):
    return ckpt_dir("sdar", n_kv_heads=2, block_size=4)


def test_samples_and_metrics(sdar_ckpt, tmp_path):
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    m = evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)
    rows = read_samples(tmp_path / "samples.jsonl")
    assert len(rows) == m["n"] == 15
    assert set(rows[0]) >= {"id", "prompt", "completion", "extracted", "correct", "nfe", "tokens", "seconds"}
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == m["accuracy"]
    assert set(m["accuracy_by_task"]) == {"copy", "reverse", "add"}
    assert m["nfe_per_example"] == sum(r["nfe"] for r in rows) / 15
    assert 0 < m["tokens_per_forward"] and m["latency_p50"] <= m["latency_p99"]


def test_resume_after_interruption_equals_uninterrupted(sdar_ckpt, tmp_path, monkeypatch):
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    full = evaluate(model, tok, TASK, Threshold(0.7), tmp_path / "full", **KW)
    calls = {"n": 0}
    real = ev.run_batch

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt     # killed while the third batch is in flight
        return real(*a, **k)

    monkeypatch.setattr(ev, "run_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, tok, TASK, Threshold(0.7), tmp_path / "cut", **KW)
    monkeypatch.setattr(ev, "run_batch", real)
    partial = tmp_path / "cut" / "samples.jsonl"
    assert len(read_samples(partial)) == 8
    with partial.open("a") as f:
        f.write('{"id": "half a line')   # a line cut by the kill
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        resumed = evaluate(model, tok, TASK, Threshold(0.7), tmp_path / "cut", **KW)
    assert stable(resumed) == stable(full)
    assert rows_without_timing(partial) == rows_without_timing(tmp_path / "full" / "samples.jsonl")


def cli(args, env_extra=None, torchrun=False, timeout=240):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(29500 + os.getpid() % 1000)] if torchrun else [sys.executable]
    return subprocess.run(launcher + ["-m", "dllm.eval.run", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_two_process_eval_equals_one_process(sdar_ckpt, tmp_path):
    common = [f"model.name_or_path={sdar_ckpt}", "task.tasks=[copy,add]", "task.n_per_task=5", "gen_length=8",
              "block_length=4", "batch_size=3", "logger.mode=disabled", "progress=false", "model.device=cpu"]
    one = cli(common + [f"hydra.run.dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = cli(common + [f"hydra.run.dir={tmp_path / 'two'}"], torchrun=True)
    assert two.returncode == 0, two.stderr[-2000:]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert stable(m1) == stable(m2) and m2["n"] == 10
    assert rows_without_timing(tmp_path / "one" / "samples.jsonl") == \
        rows_without_timing(tmp_path / "two" / "samples.jsonl")
    assert (tmp_path / "two" / "samples.rank1.jsonl").is_file()


@pytest.mark.parametrize("task", ["gsm8k", "mbpp", "mbpp_sanitized"])
def test_real_tasks_run_end_to_end_from_local_data(ckpt_dir, tmp_path, task):
    folder = ckpt_dir("llada", n_kv_heads=2)
    sub = "gsm8k" if task == "gsm8k" else "mbpp"
    r = cli([f"model.name_or_path={folder}", f"task={task}", f"task.data_dir={SHARED_DATA / sub}", "limit=3",
             "gen_length=8", "block_length=8", "logger.mode=disabled", "progress=false", "model.device=cpu",
             f"hydra.run.dir={tmp_path}"] + (["task.num_fewshot=1"] if task == "gsm8k" else []))
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n"] == 3 and m["accuracy"] == 0.0          # a random model solves nothing, but every stage ran
    assert len(read_samples(tmp_path / "samples.jsonl")) == 3


@pytest.fixture(scope="module")
def full_run(sdar_ckpt, tmp_path_factory):
    """(model, tokenizer, folder of a finished run, its metrics), shared by the resume tests that copy it."""
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    folder = tmp_path_factory.mktemp("full")
    return model, tok, folder, evaluate(model, tok, TASK, Threshold(0.7), folder, **KW)


def test_duplicated_line_counts_once(full_run, tmp_path):
    model, tok, full, m = full_run
    shutil.copytree(full, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + lines[3:5]) + "\n")          # two rows appended a second time
    with pytest.warns(UserWarning, match="2 repeated example"):
        again = evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)
    assert again["n"] == m["n"] == 15 and stable(again) == stable(m)
    assert path.read_text().splitlines() == lines                   # rewritten without the repeats


@pytest.mark.parametrize("garbage", [b'[1, 2, 3]\n', b'"a string"\n', b'{"id": "copy-0"}\n',
                                     b'{"id": "\xff\xfe bad utf-8", "x": 1}\n'])
def test_resume_drops_and_redoes_unreadable_rows(full_run, tmp_path, garbage):
    model, tok, full, m = full_run
    shutil.copy(full / "identity.json", tmp_path)
    lines = (full / "samples.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b"".join(lines[:4]) + garbage + b"".join(lines[6:9]))   # rows 4, 5 and 9.. missing
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        resumed = evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)
    assert stable(resumed) == stable(m)
    by_id = lambda rows: sorted(rows, key=lambda r: r["id"])       # redone rows are appended at the end
    assert by_id(rows_without_timing(path)) == by_id(rows_without_timing(full / "samples.jsonl"))


def test_resume_under_another_identity_is_refused_naming_the_differences(sdar_ckpt, tmp_path):
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    first = evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **{**KW, "limit": 6})
    with pytest.raises(ev.RunFolderError, match=r"holds results of another run.*sampler: "
                                               r"'Threshold\(threshold=0.7, temperature=0.0\)' there, "
                                               r"'Threshold\(threshold=0.5, temperature=0.0\)' now; seed: 0 there, "
                                               r"1 now.*overwrite=true"):
        evaluate(model, tok, TASK, Threshold(0.5), tmp_path, **KW, seed=1)
    assert len(read_samples(tmp_path / "samples.jsonl")) == first["n"] == 6     # untouched
    fresh = evaluate(model, tok, TASK, Threshold(0.5), tmp_path, **KW, seed=1, overwrite=True)
    assert json.loads((tmp_path / "identity.json").read_text())["sampler"] == repr(Threshold(0.5))
    # the same identity with a bigger limit resumes: the 6 rows are kept, 9 run, as one clean run of 15
    evaluate(model, tok, TASK, Threshold(0.5), tmp_path / "grow", **{**KW, "limit": 6}, seed=1)
    grown = evaluate(model, tok, TASK, Threshold(0.5), tmp_path / "grow", **KW, seed=1)
    assert stable(grown) == stable(fresh) and fresh["n"] == 15
    by_id = lambda path: sorted(rows_without_timing(path), key=lambda r: r["id"])   # limit takes a spread first
    assert by_id(tmp_path / "grow" / "samples.jsonl") == by_id(tmp_path / "samples.jsonl")


def test_samples_without_identity_are_not_resumed_blindly(sdar_ckpt, tmp_path):
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)
    (tmp_path / "identity.json").unlink()
    with pytest.raises(ev.RunFolderError, match="holds samples but no identity.json"):
        evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)


def test_a_second_writer_gets_a_clear_error(sdar_ckpt, tmp_path):
    # another writer's lock: flock conflicts between open file descriptions, as between two dllm-eval processes
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    model, tok = dllm.load(sdar_ckpt), dllm.load_tokenizer(sdar_ckpt)
    with pytest.raises(ev.RunFolderError, match=r"being written by another evaluation \(pid 4242\)"):
        evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)
    assert not (tmp_path / "samples.jsonl").exists() and not (tmp_path / "identity.json").exists()
    os.close(fd)   # the kernel drops a lock with its holder (a killed run leaves no stale lock to delete by hand)
    assert evaluate(model, tok, TASK, Threshold(0.7), tmp_path, **KW)["n"] == 15


def test_dllm_eval_refuses_another_sampler_in_the_same_folder_before_writing_config(sdar_ckpt, tmp_path):
    from hydra import compose, initialize_config_module
    from dllm.eval.run import run

    def cfg(*extra):
        with initialize_config_module("dllm.configs", version_base="1.3"):
            return compose("eval", overrides=[f"model.name_or_path={sdar_ckpt}", "task.tasks=[copy]",
                                              "task.n_per_task=3", "gen_length=8", "block_length=4",
                                              "logger.mode=disabled", "progress=false", "model.device=cpu", *extra])
    assert run(cfg(), tmp_path)["n"] == 3
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ev.RunFolderError, match="holds results of another run.*threshold=0.5"):
        run(cfg("sampler.threshold=0.5"), tmp_path)
    assert (tmp_path / "config.yaml").read_text() == config           # still names the folder's own run
    assert run(cfg("sampler.threshold=0.5", "overwrite=true"), tmp_path)["n"] == 3
    assert "threshold: 0.5" in (tmp_path / "config.yaml").read_text()


def test_retrained_weights_under_the_same_name_do_not_resume(sdar_ckpt, tmp_path):
    """A checkpoint retrained or re-exported in place keeps its name; its fingerprint changes, so the old rows
    are refused instead of being mixed into the new model's results. The same files keep the fingerprint."""
    from safetensors.torch import load_file, save_file
    folder = tmp_path / "ckpt"
    shutil.copytree(sdar_ckpt, folder)
    model, tok = dllm.load(folder), dllm.load_tokenizer(folder)
    assert dllm.load(folder).weights_id == model.weights_id != ""
    evaluate(model, tok, TASK, Threshold(0.7), tmp_path / "run", **{**KW, "limit": 3})
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    retrained = dllm.load(folder)
    assert retrained.weights_id != model.weights_id
    with pytest.raises(ev.RunFolderError, match="holds results of another run.*weights: "):
        evaluate(retrained, tok, TASK, Threshold(0.7), tmp_path / "run", **{**KW, "limit": 3})
