"""dllm-compare end to end on a reduced grid: table, CSV, Pareto plot, speed-ups against the baseline."""
from __future__ import annotations

import csv
import os
import subprocess
import sys


def test_compare_end_to_end(ckpt_dir, tmp_path):
    sdar = ckpt_dir("sdar", n_kv_heads=2, block_size=4)
    llada = ckpt_dir("llada", n_kv_heads=2)
    args = ["models=[tiny_sdar,tiny_llada]", f"+model_overrides.tiny_sdar.name_or_path={sdar}",
            f"+model_overrides.tiny_llada.name_or_path={llada}", "+model_overrides.tiny_llada.gen_length=8",
            "+model_overrides.tiny_llada.block_length=8", "+model_overrides.tiny_sdar.gen_length=8",
            "task_overrides.n_per_task=2", "+task_overrides.tasks=[copy,add]",
            "grid=[{sampler:static},{sampler:threshold,sweep:{threshold:[0.9,0.5]}},{sampler:s2d2}]",
            "learn2pd_filters.tiny_sdar=null", "learn2pd_filters.tiny_llada=null", "logger.mode=disabled", "progress=false", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "dllm.eval.compare", *args], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    labels = {(row["model"], row["sampler"]) for row in rows}
    assert ("tiny_sdar", "s2d2") in labels and ("tiny_llada", "s2d2") not in labels   # S2D2 needs block-causal
    assert {("tiny_llada", "threshold(threshold=0.5)"), ("tiny_sdar", "static")} <= labels
    for row in rows:
        assert row["n"] == "4" and row["set_validity"] == ""          # no set-valued task in this grid
        assert float(row["det_accuracy"]) == float(row["accuracy"])
        assert row["cache"] == ("block_fused" if row["model"] == "tiny_sdar" else "prefix")   # cache=auto, resolved
        assert "speedup" not in row and "tokens_per_second" not in row   # wall-clock columns only with timed=true
        if row["sampler"] == "static":
            assert float(row["nfe_reduction"]) == 1.0
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert "| tiny_sdar | synthetic | static |" in (tmp_path / "table.md").read_text()
    assert "threshold(threshold=0.9)" in r.stdout
    # re-running into the same folder resumes: every run is already complete
    again = subprocess.run([sys.executable, "-m", "dllm.eval.compare", *args], env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and list(csv.DictReader((tmp_path / "results.csv").open()))[0]["accuracy"] == \
        rows[0]["accuracy"]


def test_split_accuracy_separates_the_set_valued_task():
    from dllm.eval.compare import split_accuracy
    m = {"accuracy": 0.5, "accuracy_by_task": {"copy": 1.0, "add": 0.5, "shuffle": 0.0}}
    assert split_accuracy(m) == {"det_accuracy": 0.75, "set_validity": 0.0}
    assert split_accuracy({"accuracy": 0.3}) == {"det_accuracy": None, "set_validity": None}


def test_learn2pd_joins_the_grid_only_for_models_with_a_filter():
    from omegaconf import OmegaConf
    from dllm.eval.compare import grid
    cfg = OmegaConf.create({"grid": [{"sampler": "static"}, {"sampler": "threshold", "sweep": {"threshold": [0.9, 0.5]}}],
                            "learn2pd_filters": {"tiny_sdar": "tiny-sdar/learn2pd_filter.safetensors"}})
    sdar = dict(grid(cfg, "tiny_sdar"))
    assert list(sdar) == ["static", "threshold(threshold=0.9)", "threshold(threshold=0.5)", "learn2pd"]
    assert sdar["learn2pd"].filter == "tiny-sdar/learn2pd_filter.safetensors" and sdar["learn2pd"].accept == 0.96
    assert "learn2pd" not in dict(grid(cfg, "tiny_llada"))


def test_time_speedup_only_from_a_timed_warmed_up_measurement(monkeypatch):
    import dllm
    from dllm.eval import compare
    from dllm.samplers import Threshold
    rows = [{"model": "m", "task": "t", "sampler": s, "nfe_per_example": n} for s, n in (("static", 8.0), ("thr", 2.0))]
    plain = compare.with_speedups([dict(r) for r in rows], "static")
    assert [r["nfe_reduction"] for r in plain] == [1.0, 4.0] and "time_speedup" not in plain[1]
    assert compare.columns(plain) == compare.COLUMNS and compare.COLUMNS[3:5] == ["cache", "nfe_reduction"]
    timed = compare.with_speedups([{**r, "tokens_per_second": tps} for r, tps in zip(rows, (100.0, 250.0))], "static")
    assert timed[1]["time_speedup"] == 2.5 and compare.columns(timed)[-2:] == ["tokens_per_second", "time_speedup"]
    calls = []
    real = dllm.generate
    monkeypatch.setattr(dllm, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, tok = dllm.load("tiny-sdar"), dllm.load_tokenizer("tiny-sdar")
    tps = compare.timed_speed(model, [tok("copy : 1 2 =").input_ids], Threshold(0.9), repeats=3, gen_length=8,
                              block_length=4, cache="auto", seed=0)
    assert tps > 0 and len(calls) == 4                   # one warm-up run, then the three timed ones
