"""MBPP: code extraction rules, lm-eval/OpenCompass prompt formats, split sizes, and gold code passing the sandbox."""
from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from dllm.eval.tasks.base import Task
from dllm.eval.tasks.mbpp import MBPP, SHOT_IDS, extract_code

DATA = SHARED_DATA / "mbpp"
GOLD_TIMEOUT = 10.0  # gold code is not always fast: task 123 alone takes ~4 s on a 2-core box


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    task = MBPP(data_dir=str(DATA), cache_dir=str(tmp_path_factory.mktemp("cache")), timeout=GOLD_TIMEOUT)
    return task, task.examples()


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory):
    task = MBPP(prompt_format="sanitized", data_dir=str(DATA), cache_dir=str(tmp_path_factory.mktemp("cache")),
                timeout=GOLD_TIMEOUT)
    return task, task.examples()


@pytest.mark.parametrize("completion, code, rule", [
    ("def f():\n    return 1\n", "def f():\n    return 1\n", "raw"),
    ("def f():\n    return 1\n[DONE]\nYou are an expert", "def f():\n    return 1\n", "done"),
    ("Sure:\n```python\ndef f():\n    return 1\n```\nIt returns 1.", "def f():\n    return 1", "fence"),
    ("```\ndef f():\n    return 1\n```", "def f():\n    return 1", "fence"),
    ("```Python\ndef f(): pass\n```\n```python\ndef g(): pass\n```", "def f(): pass", "fence"),  # the first
    ("Output:\n```\n3\n```\nCode:\n```python\ndef f(): pass\n```", "def f(): pass", "fence"),  # python first
    ("```python\ndef f():\n    return 1", "def f():\n    return 1", "fence"),  # unclosed: runs to the end
    ("```python\ndef f(): pass\n```\n[DONE]\n```python\nx\n```", "def f(): pass", "done+fence"),
])
def test_extract_code(completion, code, rule):
    assert extract_code(completion) == (code, rule)


def test_split_sizes_and_ids(full, sanitized):
    for (task, examples), name, size in ((full, "mbpp", 500), (sanitized, "mbpp_sanitized", 257)):
        ids = [ex.meta["task_id"] for ex in examples]
        assert isinstance(task, Task) and task.name == name and len(examples) == size
        assert ids == sorted(ids) and ids[0] == 11 and ids[-1] <= 510
        assert examples[0].id == f"{name}/test/11"


def test_lm_eval_prompt_has_the_three_shots_verbatim(full):
    task, examples = full
    rows = {r["task_id"]: r for r in map(json.loads, (DATA / "mbpp.jsonl").read_text().splitlines())}
    prompt = examples[0].prompt
    for i in SHOT_IDS:  # the original "\r\n" line ends are kept, as lm-eval's list_fewshot_samples has them
        assert f"[BEGIN]\n{rows[i]['code']}\n[DONE]\n\n" in prompt and "\r\n" in rows[i]["code"]
    assert prompt.startswith("You are an expert Python programmer, and here is your task: " + rows[2]["text"])
    assert prompt.endswith(f"{rows[11]['text']} Your code should pass these tests:\n\n"
                           + "\n".join(rows[11]["test_list"]) + "\n[BEGIN]\n")
    assert prompt.count("[BEGIN]\n") == 4 and prompt.count("\n[DONE]") == 3
    assert task.stop == ("[DONE]",)


def test_sanitized_prompt_is_zero_shot_with_all_asserts(sanitized):
    task, examples = sanitized
    for ex in examples:
        assert ex.prompt.startswith("You are an expert Python programmer, and here is your task:\n")
        assert ex.prompt.endswith("\n".join(ex.reference["tests"]) + "\n You should submit your final solution "
                                  "in the following format: ```python\n\n```")
        assert "[BEGIN]" not in ex.prompt
    assert max(len(ex.reference["tests"]) for ex in examples) > 3 and task.stop == ()
    assert sum(bool(ex.reference["imports"]) for ex in examples) == 13  # all 13 such rows are tests (eval.md §5)


def test_gold_code_passes(full, sanitized):
    for (task, examples), step in ((full, 12), (sanitized, 6)):  # ~40 tasks of each
        sample = examples[::step]
        scores = task.score_many(sample, [ex.meta["code"] + "\n[DONE]" for ex in sample])
        failed = [(ex.id, s.detail) for ex, s in zip(sample, scores) if not s.correct]
        assert failed == [] and {s.detail["rule"] for s in scores} == {"done"}


def test_task_367_needs_its_setup_code(full):
    task, examples = full
    ex = next(ex for ex in examples if ex.meta["task_id"] == 367)
    assert "root = Node(1)" in ex.reference["setup"]
    assert task.score(ex, ex.meta["code"]).correct
    bare = {**ex.reference, "setup": ""}  # what lm-eval runs: `root` is then undefined
    s = task.score(type(ex)(ex.id, ex.prompt, bare), ex.meta["code"])
    assert not s.correct and s.detail["status"] == "failed" and "NameError" in s.detail["error"]


def test_wrong_and_broken_code_fail(full):
    task, examples = full
    ex = examples[0]  # remove_Occ
    wrong = task.score(ex, "```python\ndef remove_Occ(s, ch):\n    return s\n```")
    broken = task.score(ex, "def remove_Occ(s, ch)\n    return s")
    assert (wrong.correct, wrong.detail["status"], wrong.detail["rule"]) == (False, "failed", "fence")
    assert (broken.correct, broken.detail["status"]) == (False, "error")
