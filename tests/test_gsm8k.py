"""GSM8K: extraction rules and normalisation on fixed strings, lm-eval-identical few-shot prompts, gold = 100%."""
from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA
from dllm.eval.tasks.base import Example, Task
from dllm.eval.tasks.gsm8k import (BOXED_INSTRUCTION, IGNORE_COT, INVALID, STRICT_COT, GSM8K, answer_is_extract,
                                   boxed_extract, extract_answer, flexible_extract, is_correct, normalize,
                                   strict_extract)

DATA = SHARED_DATA / "gsm8k"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="module")
def k_shot(cache):
    return GSM8K(data_dir=str(DATA), cache_dir=cache).examples()


@pytest.mark.parametrize("extract, text, expected", [
    (strict_extract, "so 3 + 4 = 7\n#### 7", "7"),
    (strict_extract, "#### -10 then #### 12", "-10"),                    # the first hit
    (strict_extract, "#### 1,600.", "1,600."),
    (strict_extract, "The answer is 7", INVALID),
    (flexible_extract, "3 apples and 5 pears make 8.", "8."),            # the last number-like token
    (flexible_extract, "she pays $18 in total", "$18"),
    (flexible_extract, "a drop of -3 degrees", "-3"),
    (flexible_extract, "no digits here", INVALID),
    (boxed_extract, "so \\boxed{18} dollars", "18"),
    (boxed_extract, "\\boxed{1} first, finally \\boxed{\\$1{,}600}", "$1,600"),  # last box, LaTeX comma
    (boxed_extract, "\\boxed{18 \\text{ eggs}}", "18"),
    (boxed_extract, "\\boxed{-10}", "-10"),
    (boxed_extract, "\\boxed{x}", INVALID),
    (answer_is_extract, "So the answer is 42. Done, the answer is 7.", "42"),
    (answer_is_extract, "The final answer is: $1,234", "1,234"),
    (answer_is_extract, "THE ANSWER IS -5", "-5"),
    (answer_is_extract, "the answer is unclear", INVALID),
])
def test_extraction_rules(extract, text, expected):
    assert extract(text) == expected


def test_cot_variant_of_lm_eval_filters():  # gsm8k-cot-zeroshot.yaml
    assert strict_extract("#### 3. The answer is 7. The answer is 8.", STRICT_COT) == "7."  # "." then " "
    assert strict_extract("the answer is 7.", STRICT_COT) == INVALID  # case-sensitive there
    assert is_correct("18.00", "18", "lm_eval", IGNORE_COT) and not is_correct("18.00", "18", "lm_eval")


@pytest.mark.parametrize("text, expected", [
    ("5 + 2 = 7\n#### 7 and \\boxed{8}, the answer is 9, 10", ("7", "strict")),
    ("\\boxed{8}, the answer is 9, 10", ("8", "boxed")),
    ("the answer is 9, then 10", ("9", "answer_is")),
    ("first 9 then 10", ("10", "flexible")),
    ("nothing", (INVALID, "none")),
])
def test_extraction_order(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("prediction, reference, numeric, lm_eval", [
    ("1,600", "1600", True, True),
    ("$18", "18", True, True),
    ("18.", "18", True, True),
    ("18.0", "18", True, False),       # lm-eval compares strings, eval.md §1.1
    ("$18.00", "18", True, False),
    ("-10", "-10", True, True),
    ("10", "-10", False, False),
    ("1.2.3", "123", False, False),
    (INVALID, "18", False, False),
    ("2,125", "2,125", True, True),    # the reference is normalised too
])
def test_comparison_modes(prediction, reference, numeric, lm_eval):
    assert is_correct(prediction, reference, "numeric") is numeric
    assert is_correct(prediction, reference, "lm_eval") is lm_eval


def test_normalize_strips_the_rationale_like_lm_eval():
    assert normalize("He pays 2 * 9 = $<<2*9=18>>18.\n#### 1,018") == "1018"


def test_score_reports_strict_and_flexible_separately():
    task, ex = GSM8K(prompt_format="zero_shot"), Example(id="gsm8k/test/0", prompt="", reference="18")
    s = task.score(ex, "She makes 9 * 2 = 18 dollars. The answer is 18.0")
    assert (s.correct, s.extracted, s.detail) == (True, "18.0", {"rule": "answer_is", "strict": False,
                                                                  "flexible": True})
    s = GSM8K(compare="lm_eval").score(ex, "The answer is 18.0")
    assert not s.correct and not s.detail["flexible"]
    s = GSM8K(prompt_format="cot", compare="lm_eval").score(ex, "The answer is 18.0.")
    assert s.correct and s.detail == {"rule": "answer_is", "strict": True, "flexible": True}
    # the completion is cut at the stop strings first, so a run-on next question cannot supply the number
    s = task.score(ex, "so she makes 18\n\nQuestion: what is 3 + 4?\nAnswer: 7")
    assert s.correct and s.extracted == "18"


def test_k_shot_prompt_matches_lm_eval(k_shot):
    assert len(k_shot) == 1319 and k_shot[0].id == "gsm8k/test/0" and k_shot[0].reference == "18"
    prompt = k_shot[0].prompt
    blocks = prompt.split("\n\n")
    assert len(blocks) == 6 and prompt.endswith("\nAnswer:") and prompt.startswith("Question: ")
    assert all(b.startswith("Question: ") and "\nAnswer: " in b and "\n#### " in b for b in blocks[:5])
    # lm-eval's first draw from random.Random(1234) over the 7473 train rows is rows 6374, 3610, 957, 61, 742,
    # the order public dumps of lm-eval's 5-shot prompt for doc 0 show.
    firsts = ["Jen and Tyler", "Four people in a law firm", "A charcoal grill", "A bear is preparing", "Brendan"]
    assert all(b.startswith(f"Question: {f}") for b, f in zip(blocks, firsts))
    assert k_shot[1].prompt.split("\n\n")[0] != blocks[0]  # the RNG advances doc by doc


def test_k_shot_prompt_is_deterministic(k_shot, cache):
    again = GSM8K(data_dir=str(DATA), cache_dir=cache).examples()
    assert [e.prompt for e in again] == [e.prompt for e in k_shot]
    other_seed = GSM8K(data_dir=str(DATA), cache_dir=cache, seed=0).examples()
    assert other_seed[0].prompt != k_shot[0].prompt


def test_shots_from_the_evaluated_split_exclude_the_doc(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"because\n#### {i}"} for i in range(3)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = GSM8K(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), fewshot_split="test", num_fewshot=2)
    for i, ex in enumerate(task.examples()):  # 3 draws from 3 rows always include the doc: it must be dropped
        shots = ex.prompt.split("\n\n")[:-1]
        assert sorted(shots) == [f"Question: q{j}?\nAnswer: because\n#### {j}" for j in range(3) if j != i]


@pytest.mark.parametrize("fmt, instruction, ending, stop", [
    ("zero_shot", "", "\nAnswer:", "Question:"),
    ("zero_shot", BOXED_INSTRUCTION, "\nAnswer: Please reason step by step, and put your final answer within "
     "\\boxed{}.", "Question:"),
    ("cot", "", "\nA: Let's think step by step.", "Q:"),
    ("boxed", "", "?\nPlease reason step by step, and put your final answer within \\boxed{}.", "Question:"),
])
def test_zero_shot_formats(cache, fmt, instruction, ending, stop):
    task = GSM8K(prompt_format=fmt, instruction=instruction, data_dir=str(DATA), cache_dir=cache)
    first = task.examples()[0]
    assert isinstance(task, Task) and first.prompt.endswith(ending) and "####" not in first.prompt
    assert first.prompt.startswith(first.meta["question"] if fmt == "boxed" else "Q")
    assert task.stop[0] == stop and "</s>" in task.stop and "<|im_end|>" in task.stop


def test_chat_template_wraps_the_whole_prompt_as_one_user_turn(cache):
    class Tokenizer:
        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            assert add_generation_prompt and not tokenize and [m["role"] for m in messages] == ["user"]
            return f"<user>{messages[0]['content']}</user><assistant>"

    plain = GSM8K(data_dir=str(DATA), cache_dir=cache).examples()[0].prompt
    chat = GSM8K(data_dir=str(DATA), cache_dir=cache, chat_template=True, tokenizer=Tokenizer()).examples()[0]
    assert chat.prompt == f"<user>{plain}</user><assistant>"
    with pytest.raises(ValueError):
        GSM8K(chat_template=True)


@pytest.mark.parametrize("compare", ["numeric", "lm_eval"])
def test_gold_rationales_score_100_percent(k_shot, compare):
    task = GSM8K(data_dir=str(DATA), compare=compare)
    scores = [task.score(ex, ex.meta["rationale"]) for ex in k_shot]
    assert all(s.correct and s.detail["strict"] and s.detail["flexible"] for s in scores)


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    with pytest.raises(RuntimeError, match="data_dir="):
        GSM8K(data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path)).examples()
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # never touch the network in tests
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="openai/gsm8k"):
        GSM8K(cache_dir=str(tmp_path)).examples()
