"""MBPP (Austin et al. 2021, arXiv 2108.07732): Python tasks scored by running their asserts in a sandbox.

Formats (eval.md §2; the standard test split is task ids 11-510, google-research/google-research:mbpp/README.md):
  lm_eval    lm-eval `mbpp` (EleutherAI/lm-evaluation-harness:lm_eval/tasks/mbpp/mbpp.yaml, utils.py), as LLaDA,
             dParallel and OpenCompass's `[BEGIN]`/`[DONE]` configs: the `full` file, 500 tasks, 3 shots (ids 2,
             3, 4 with their original "\\r\\n" code) each "You are an expert Python programmer, and here is your
             task: {text} Your code should pass these tests:\\n\\n{3 asserts}\\n[BEGIN]\\n{code}\\n[DONE]",
             joined by "\\n\\n"; the prompt ends with "[BEGIN]\\n" and generation stops at "[DONE]".
  sanitized  OpenCompass `sanitized_mbpp_mdblock_0shot_nocot_gen_a2e416` (SDAR): the `sanitized` file, 257 tasks,
             0-shot, the answer asked for in a ```python block; `test_imports` are prepended to the program.
             No stop string: "\\n```\\n" would also match a plain opening fence and cut the code away.

Code extraction (the rule goes into Score.detail["rule"], since it moves scores by points, eval.md §2.4): cut at
"[DONE]" if present, then take the first ```python block (else the first ``` block; an unclosed block runs to
the end), else the raw text. The program is `test_imports + code + test_setup_code + asserts`, one per line;
`test_setup_code` is non-empty only for test task 367, which lm-eval drops (so 367 cannot pass there) and we
keep. `challenge_test_list` is unused, as in every harness. Pass = the program runs without raising
(dllm.eval.execution: bubblewrap, or with isolation="guard" the weak in-process guard), i.e. pass@1 with greedy
decoding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dllm.eval.execution import ISOLATIONS, ExecResult, check_program, check_programs
from dllm.eval.tasks.base import Example, Score
from dllm.eval.tasks.gsm8k import as_user_turn

HUB_ID = "google-research-datasets/mbpp"
FORMATS = ("lm_eval", "sanitized")
TEST_IDS = range(11, 511)
TRAIN_IDS = range(601, 975)     # the `full` file's train split (prompts for distillation)
SPLITS = {"test": TEST_IDS, "train": TRAIN_IDS}
SHOT_IDS = (2, 3, 4)
# format -> (hub config, local file name, task name)
_SOURCES = {"lm_eval": ("full", "mbpp.jsonl", "mbpp"),
            "sanitized": ("sanitized", "sanitized-mbpp.json", "mbpp_sanitized")}
_PY_FENCE = re.compile(r"```(?:python3?|py)\b[^\n]*\n(.*?)\n?(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_ANY_FENCE = re.compile(r"```[^\n]*\n(.*?)\n?(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> tuple[str, str]:
    """(code, rule): rule is "done", "fence", "done+fence" or "raw" (see the module docstring)."""
    text, rules = completion, []
    if "[DONE]" in text:
        text, rules = text[:text.index("[DONE]")], ["done"]
    fence = _PY_FENCE.search(text) or _ANY_FENCE.search(text)
    if fence:
        text, rules = fence.group(1), rules + ["fence"]
    return text, "+".join(rules) or "raw"


def build_program(code: str, reference: dict) -> str:
    """Test imports, the candidate code, setup code, then the asserts, one per line."""
    return "\n".join([*reference["imports"], code, reference["setup"], *reference["tests"]])


def lm_eval_text(row: dict) -> str:
    """lm-eval mbpp.yaml doc_to_text (test_list[0..2] only)."""
    tests = "\n".join(row["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {row['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def sanitized_text(row: dict) -> str:
    """OpenCompass sanitized_mbpp_mdblock_0shot_nocot_gen_a2e416 prompt (all asserts, newline-joined)."""
    tests = "\n".join(row["test_list"])
    return (f"You are an expert Python programmer, and here is your task:\n{row['prompt']}\n"
            f"Your code should pass these tests:\n\n{tests}\n"
            " You should submit your final solution in the following format: ```python\n\n```")


def load_rows(prompt_format: str, data_dir: str | Path | None = None,
              cache_dir: str | None = None) -> dict[int, dict]:
    """Every row of MBPP `full` or `sanitized` (all splits) by task_id, from `data_dir` or the hub."""
    from datasets import load_dataset  # deferred: `datasets` takes seconds to import; only loading needs it

    config, file_name, _ = _SOURCES[prompt_format]
    source = Path(data_dir) / file_name if data_dir is not None else f"{HUB_ID} (config {config})"
    try:
        if data_dir is not None:
            splits = [load_dataset("json", data_files=str(source), split="train", cache_dir=cache_dir)]
        else:
            splits = list(load_dataset(HUB_ID, config, cache_dir=cache_dir).values())
    except Exception as e:
        raise RuntimeError(f"could not load MBPP from {source}: {e}. Offline, pass data_dir= a folder holding "
                           f"{file_name} (the project keeps one in shared/data/mbpp).") from e
    return {row["task_id"]: row for split in splits for row in split.to_list()}


@dataclass
class MBPP:
    prompt_format: str = "lm_eval"  # one of FORMATS
    chat_template: bool = False     # the whole prompt as one user turn (dParallel), needs `tokenizer`
    tokenizer: Any = None
    timeout: float = 3.0            # s per program: HF code_eval's default (OpenCompass: 10); task 123's gold
                                    # code needs ~4 s on a 2-core box, so even it fails at 3 s there
    workers: int | None = None      # parallel programs in score_many; None = one per CPU
    data_dir: str | None = None     # local folder with mbpp.jsonl / sanitized-mbpp.json; None -> the hub
    cache_dir: str | None = None    # passed to datasets.load_dataset
    split: str = "test"             # test: ids 11-510 | train: ids 601-974 (teacher prompts for dllm-distill)
    isolation: str = "sandbox"      # sandbox (bubblewrap, refuses to run without it) | guard: the weak opt-in

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt_format must be one of {FORMATS}, got {self.prompt_format!r}")
        if self.chat_template and self.tokenizer is None:
            raise ValueError("chat_template=True needs a tokenizer")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {self.isolation!r}")

    @property
    def name(self) -> str:
        return _SOURCES[self.prompt_format][2]

    @property
    def stop(self) -> tuple[str, ...]:
        return ("[DONE]",) if self.prompt_format == "lm_eval" else ()

    def examples(self) -> list[Example]:
        rows = load_rows(self.prompt_format, self.data_dir, self.cache_dir)
        text, context = sanitized_text, ""
        if self.prompt_format == "lm_eval":
            # target_delimiter "" and fewshot_delimiter "\n\n" (mbpp.yaml); shot targets are "{code}\n[DONE]".
            text = lm_eval_text
            context = "".join(f"{text(rows[i])}{rows[i]['code']}\n[DONE]\n\n" for i in SHOT_IDS)
        return [self._example(rows[i], context + text(rows[i])) for i in SPLITS[self.split] if i in rows]

    def score(self, example: Example, completion: str) -> Score:
        code, rule = extract_code(completion)
        program = build_program(code, example.reference)
        return _score(code, rule, check_program(program, self.timeout, self.isolation))

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Score]:
        """`score` over a batch, running the programs `workers` at a time."""
        extracted = [extract_code(c) for c in completions]
        programs = [build_program(code, ex.reference) for (code, _), ex in zip(extracted, examples, strict=True)]
        results = check_programs(programs, self.timeout, self.workers, self.isolation)
        return [_score(code, rule, result) for (code, rule), result in zip(extracted, results)]

    def _example(self, row: dict, text: str) -> Example:
        reference = {"imports": row.get("test_imports") or [], "setup": row.get("test_setup_code") or "",
                     "tests": row["test_list"]}
        prompt = as_user_turn(self.tokenizer, text) if self.chat_template else text
        return Example(id=f"{self.name}/{self.split}/{row['task_id']}", prompt=prompt, reference=reference,
                       meta={"task_id": row["task_id"], "code": row["code"]})


def _score(code: str, rule: str, result: ExecResult) -> Score:
    return Score(correct=result.passed, extracted=code,
                 detail={"rule": rule, "status": result.status, "error": result.detail,
                         "seconds": round(result.seconds, 3)})
