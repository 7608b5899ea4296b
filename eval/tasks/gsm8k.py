"""GSM8K (Cobbe et al. 2021, arXiv 2110.14168) in the prompt formats dLLM papers use, and its answer scoring.

Prompt formats (eval.md §1; the protocol name belongs next to every reported number):
  k_shot     lm-eval `gsm8k` (EleutherAI/lm-evaluation-harness:lm_eval/tasks/gsm8k/gsm8k.yaml), used by LLaDA
             and Fast-dLLM: k train rationales "Question: {q}\\nAnswer: {rationale}" joined by "\\n\\n", then
             "Question: {q}\\nAnswer:". Shots are drawn as lm-eval's ContextSampler does (lm_eval/api/samplers.py):
             one `random.Random(1234)` advanced doc by doc, one extra draw and the doc itself dropped when the
             shots come from the evaluated split.
  zero_shot  "Question: {q}\\nAnswer:" + `instruction`; dParallel (LLaDA) uses BOXED_INSTRUCTION.
  cot        lm-eval `gsm8k_cot_zeroshot`: "Q: {q}\\nA: Let's think step by step." (dParallel, Dream).
  boxed      OpenCompass `gsm8k_0shot_v2_gen_17d799` (SDAR): "{q}\\nPlease reason step by step, and put ...".
With `chat_template=True` the whole prompt is one user turn, as lm-eval's `--apply_chat_template` without
`--fewshot_as_multiturn`.

Scoring: `correct` uses the ordered extraction of eval.md §1 (#### N, then \\boxed{N}, then "The answer is N",
then the last number) and compares numerically after stripping commas, "$" and a trailing "."
(`compare="numeric"`, so 18.0 == 18). `compare="lm_eval"` is lm-eval's exact string match instead
(`exact_match` with `regexes_to_ignore` and `ignore_case`), under which 18.0 != 18 (except for `cot`, whose
yaml also strips ".0"). `Score.detail` also reports lm-eval's two filters, strict-match (`#### N`; for `cot`
"The answer is N.") and flexible-extract, so published lm-eval numbers can be reproduced.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dllm.eval.tasks.base import Example, Score

HUB_ID = "openai/gsm8k"
FORMATS = ("k_shot", "zero_shot", "cot", "boxed")
COMPARE_MODES = ("numeric", "lm_eval")
BOXED_INSTRUCTION = " Please reason step by step, and put your final answer within \\boxed{}."  # dParallel
INVALID = "[invalid]"  # lm-eval RegexFilter's fallback when nothing matches

_TEMPLATES = {
    "k_shot": "Question: {q}\nAnswer:",
    "zero_shot": "Question: {q}\nAnswer:",
    "cot": "Q: {q}\nA: Let's think step by step.",
    "boxed": "{q}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
}
# lm-eval `until` lists: gsm8k.yaml, and gsm8k-cot-zeroshot.yaml for the "Q:"/"A:" format.
_STOPS = {"cot": ("Q:", "</s>", "<|im_end|>")}
_DEFAULT_STOP = ("Question:", "</s>", "<|im_end|>")

# lm-eval filters: strict-match (first hit), flexible-extract (last hit), regexes_to_ignore (applied in order)
# from gsm8k.yaml, and gsm8k-cot-zeroshot.yaml's own strict-match and extra "\.0+$" for the "cot" format.
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
STRICT_COT = re.compile(r"The answer is (\-?[0-9\.\,]+).")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
IGNORE_COT = IGNORE + (r"\.0+$",)
_ANSWER_IS = re.compile(r"the (?:final )?answer is[:\s]*\$?\s*(-?[0-9.,]*[0-9])", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?[0-9][0-9,]*(?:\.[0-9]+)?")


def strict_extract(text: str, pattern: re.Pattern = STRICT) -> str:
    """lm-eval strict-match: the first `#### N` (or the first hit of `pattern`, e.g. STRICT_COT)."""
    hits = pattern.findall(text)
    return hits[0].strip() if hits else INVALID


def flexible_extract(text: str) -> str:
    """lm-eval flexible-extract: the last number-like token (first non-empty group of the last hit)."""
    hits = FLEXIBLE.findall(text)
    return next(g for g in hits[-1] if g).strip() if hits else INVALID


def boxed_extract(text: str) -> str:
    """The first number inside the last `\\boxed{...}` (braces balanced, LaTeX `{,}` read as a comma)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return INVALID
    open_at, end, depth = start + len("\\boxed"), len(text), 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            end = i
            break
    hit = _NUMBER.search(text[open_at + 1:end].replace("{,}", ","))
    return hit.group(0) if hit else INVALID


def answer_is_extract(text: str) -> str:
    """The first "The answer is N" / "The final answer is N" (lm-eval CoT strict-match, OpenCompass base)."""
    hit = _ANSWER_IS.search(text)
    return hit.group(1) if hit else INVALID


def extract_answer(text: str) -> tuple[str, str]:
    """eval.md §1 takeaway 5: `#### N`, then `\\boxed{N}`, then "The answer is N", then the last number.

    Returns (answer, rule) with rule in strict | boxed | answer_is | flexible | none.
    """
    for rule, extract in (("strict", strict_extract), ("boxed", boxed_extract),
                          ("answer_is", answer_is_extract), ("flexible", flexible_extract)):
        answer = extract(text)
        if answer != INVALID:
            return answer, rule
    return INVALID, "none"


def normalize(answer: str, ignore: tuple[str, ...] = IGNORE) -> str:
    """lm-eval's normalisation of prediction and reference: drop commas, "$", a rationale up to "#### ", one
    trailing "."; lowercase."""
    for pattern in ignore:
        answer = re.sub(pattern, "", answer)
    return answer.lower()


def is_correct(prediction: str, reference: str, compare: str = "numeric", ignore: tuple[str, ...] = IGNORE) -> bool:
    """numeric: |p - r| < 1e-6 after `normalize` (eval.md §1 takeaway 3); lm_eval: exact string equality."""
    p, r = normalize(prediction, ignore), normalize(reference, ignore)
    if compare == "lm_eval":
        return p == r
    try:
        return abs(float(p) - float(r)) < 1e-6
    except ValueError:  # "[invalid]", "1.2.3", ...
        return False


def load_rows(split: str, data_dir: str | Path | None = None, cache_dir: str | None = None) -> list[dict]:
    """GSM8K rows {question, answer} through `datasets`: `{data_dir}/{split}.jsonl`, else the hub's `main`."""
    from datasets import load_dataset  # deferred: `datasets` takes seconds to import; only loading needs it

    source = Path(data_dir) / f"{split}.jsonl" if data_dir is not None else f"{HUB_ID} (config main)"
    try:
        if data_dir is not None:
            ds = load_dataset("json", data_files={split: str(source)}, split=split, cache_dir=cache_dir)
        else:
            ds = load_dataset(HUB_ID, "main", split=split, cache_dir=cache_dir)
    except Exception as e:
        raise RuntimeError(f"could not load GSM8K {split!r} from {source}: {e}. Offline, pass data_dir= a "
                           f"folder holding {split}.jsonl (the project keeps one in shared/data/gsm8k).") from e
    return ds.to_list()


@dataclass
class GSM8K:
    prompt_format: str = "k_shot"   # one of FORMATS
    num_fewshot: int = 5            # k_shot only; lm-eval's default
    instruction: str = ""           # appended to the evaluated question, e.g. BOXED_INSTRUCTION
    chat_template: bool = False     # wrap the whole prompt as one user turn (needs `tokenizer`)
    tokenizer: Any = None
    compare: str = "numeric"        # one of COMPARE_MODES
    split: str = "test"
    fewshot_split: str = "train"
    seed: int = 1234                # lm-eval's fewshot_random_seed
    data_dir: str | None = None     # local folder with {split}.jsonl; None -> the hub
    cache_dir: str | None = None    # passed to datasets.load_dataset
    name: str = "gsm8k"

    def __post_init__(self) -> None:
        if self.prompt_format not in FORMATS:
            raise ValueError(f"prompt_format must be one of {FORMATS}, got {self.prompt_format!r}")
        if self.compare not in COMPARE_MODES:
            raise ValueError(f"compare must be one of {COMPARE_MODES}, got {self.compare!r}")
        if self.chat_template and self.tokenizer is None:
            raise ValueError("chat_template=True needs a tokenizer")

    @property
    def stop(self) -> tuple[str, ...]:
        return _STOPS.get(self.prompt_format, _DEFAULT_STOP)

    def examples(self) -> list[Example]:
        docs = load_rows(self.split, self.data_dir, self.cache_dir)
        pool = load_rows(self.fewshot_split, self.data_dir, self.cache_dir) if self.prompt_format == "k_shot" else []
        rng = random.Random(self.seed)
        return [Example(id=f"{self.name}/{self.split}/{i}", prompt=self._prompt(doc, pool, rng),
                        reference=doc["answer"].split("####")[-1].strip(),
                        meta={"question": doc["question"], "rationale": doc["answer"]})
                for i, doc in enumerate(docs)]

    def score(self, example: Example, completion: str) -> Score:
        text = _cut(completion, self.stop)  # idempotent when the loop already cut; keeps raw generations scorable
        answer, rule = extract_answer(text)
        strict, ignore = (STRICT_COT, IGNORE_COT) if self.prompt_format == "cot" else (STRICT, IGNORE)

        def ok(prediction: str) -> bool:
            return is_correct(prediction, example.reference, self.compare, ignore)

        return Score(correct=ok(answer), extracted=answer, detail={
            "rule": rule, "strict": ok(strict_extract(text, strict)), "flexible": ok(flexible_extract(text))})

    def _prompt(self, doc: dict, pool: list[dict], rng: random.Random) -> str:
        text = _TEMPLATES[self.prompt_format].format(q=doc["question"]) + self.instruction
        if self.prompt_format == "k_shot":
            text = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n"
                           for s in self._shots(doc, pool, rng)) + text
        return as_user_turn(self.tokenizer, text) if self.chat_template else text

    def _shots(self, doc: dict, pool: list[dict], rng: random.Random) -> list[dict]:
        # lm-eval ContextSampler.get_context: draw one extra when the pool is the evaluated split, drop the doc.
        n = self.num_fewshot + (self.fewshot_split == self.split)
        # random.sample picks by index only, so sampling indices consumes the RNG exactly as lm-eval's
        # rnd.sample(docs, n) does.
        drawn = [pool[j] for j in rng.sample(range(len(pool)), n)]
        return [s for s in drawn if s != doc][:self.num_fewshot]


def as_user_turn(tokenizer: Any, text: str) -> str:
    """`text` as the single user turn of the tokenizer's chat template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def _cut(text: str, stops: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]
