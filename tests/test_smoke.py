"""Small runs behave like small runs: a 20-step pretraining run finishes in well under a minute, says what its
final evaluation will cost before it starts, and prints progress lines into a log that is not a terminal."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from dllm.eval.progress import LineProgress


def test_pretrain_smoke_run_is_quick_and_logs_progress(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dllm.distill.cli", "pipeline=pretrain", "model=tiny_sdar",
                        "pipeline.steps=20", "pipeline.threads=1", "logger.mode=disabled", f"hydra.run.dir={tmp_path}"],
                       env=env, capture_output=True, text=True, timeout=300)      # stdout/stderr are pipes: no TTY
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert seconds < 60, f"a 20-step smoke run took {seconds:.0f} s"
    assert "final evaluation decodes 4 held-out prompts per task" in r.stdout     # announced, scaled to the run
    lines = [line for line in r.stderr.splitlines() if line.startswith("sdar block_diffusion_loss: ")]
    assert len(lines) >= 10 and lines[-1].startswith("sdar block_diffusion_loss: 20/20 (100%)"), r.stderr[-2000:]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "No Threshold sweep" in card and "eval_n_per_task: 4" in card


def test_line_progress_prints_every_few_percent(capsys):
    import io
    buf = io.StringIO()
    bar = LineProgress(range(200), desc="job", file=buf)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 21 and lines[0].startswith("job: 0/200 (0%)") and lines[-1].startswith("job: 200/200 (100%)")
    assert lines[-1].endswith("loss=0.5")
    unknown = io.StringIO()
    bar = LineProgress(total=None, desc="x", file=unknown)
    bar.update(3)
    assert unknown.getvalue().splitlines()[-1].startswith("x: 3/?")


def test_final_evaluation_sizes_follow_the_run():
    import pytest
    from omegaconf import OmegaConf
    from dllm.distill.cli import eval_n, eval_sizes
    assert eval_sizes(20, None, None) == (4, 0)               # a smoke run: a few prompts, no sweep
    for steps in (6000, 17000, 24000):                          # the README's ablation and the shipped recipes
        assert eval_sizes(steps, None, None) == (200, 100)
    assert eval_sizes(20, 7, 0) == (7, 0)                       # explicit values win
    with pytest.raises(ValueError, match="final_eval_n"):
        eval_sizes(20, 0, None)
    assert [eval_n(OmegaConf.create({"steps": s, "eval_n": None})) for s in (5, 300, 1500, 20000)] == [2, 25, 25, 25]
    assert eval_n(OmegaConf.create({"steps": 5, "eval_n": 0})) == 0
