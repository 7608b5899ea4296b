"""The long-answer suite (gsm_synth + mbpp_synth as one task), the task configs, and one evaluation through the
same protocol and scorers as every other task."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from dllm.distill.tokenizer import EOS_ID, MASK_ID, SUITE_VOCAB_SIZE, save_tokenizer
from dllm.eval.evaluate import evaluate
from dllm.eval.tasks.base import Task
from dllm.eval.tasks.long import LongSuite
from dllm.eval.tasks.programs import Programs
from dllm.eval.tasks.wordproblems import WordProblems
from dllm.samplers import Static
from dllm.testing import random_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "task"


@pytest.mark.parametrize("name, cls, size", [("gsm_synth", WordProblems, "n"), ("mbpp_synth", Programs, "n"),
                                             ("long", LongSuite, "n_per_task")])
def test_task_configs_instantiate(name, cls, size) -> None:
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / f"{name}.yaml"), {size: 3})
    task = instantiate(cfg, _convert_="all")
    assert isinstance(task, cls) and isinstance(task, Task) and task.name == name
    defaults = cls(**{size: 3})
    assert task.examples() == defaults.examples()          # the yaml spells out the code's defaults
    assert len(task.examples()) == (6 if name == "long" else 3)


def test_suite_dispatches_each_example_to_its_own_scorer() -> None:
    s = LongSuite(n_per_task=4, workers=2)
    examples = s.examples()
    assert [e.meta["task"] for e in examples] == ["gsm_synth"] * 4 + ["mbpp_synth"] * 4
    assert examples == WordProblems(n=4).examples() + Programs(n=4).examples()
    assert s.stop == ("Question:", "</s>", "<|im_end|>", "[DONE]")
    gold = [e.meta["rationale"] if e.meta["task"] == "gsm_synth" else e.meta["code"] + "\n[DONE]" for e in examples]
    wrong = [g.replace("####", "#### 1") if i < 4 else g.replace("return", "return 1 +", 1) for i, g in
             enumerate(gold)]
    many = s.score_many(examples + examples, gold + wrong)
    assert [m.correct for m in many] == [True] * 8 + [False] * 8
    assert "strict" in many[0].detail and many[4].detail["status"] == "passed"   # GSM8K's and MBPP's details
    assert [s.score(e, c).correct for e, c in zip(examples, gold)] == [True] * 8
    with pytest.raises(ValueError, match="tasks"):
        LongSuite(tasks=("gsm_synth", "nope"))
    with pytest.raises(ValueError, match="max_depth"):
        LongSuite(max_depth=3)
    assert LongSuite(tasks=("mbpp_synth",), n_per_task=2).stop == ("[DONE]",)


def test_evaluate_runs_the_long_suite_end_to_end(tmp_path) -> None:
    tok = AutoTokenizer.from_pretrained(save_tokenizer(tmp_path / "tok", "suite"))
    model, _ = random_model("sdar", vocab=SUITE_VOCAB_SIZE, mask_id=MASK_ID, eos_id=EOS_ID, block_size=4)
    m = evaluate(model, tok, LongSuite(n_per_task=2, workers=2), Static(steps=8), tmp_path / "run", gen_length=8,
                 block_length=4, batch_size=4, progress=False)
    assert m["n"] == 4 and set(m["accuracy_by_task"]) == {"gsm_synth", "mbpp_synth"} and m["accuracy"] == 0.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"gsm_synth", "mbpp_synth"}
