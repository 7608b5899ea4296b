"""lm-eval adapter: generate_until equals dllm.generate, a local task runs through simple_evaluate, clear errors."""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("lm_eval")

import dllm  # noqa: E402
from dllm.eval.lm_eval_adapter import DLLM  # noqa: E402
from dllm.samplers import Threshold  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402

CONTEXTS = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10", "w11", "w12 w13 w14 w15"]


@pytest.fixture(scope="module")
def folder(ckpt_dir):
    return ckpt_dir("sdar", n_kv_heads=2, block_size=4)


@pytest.fixture(scope="module")
def lm(folder):
    return DLLM(pretrained=str(folder), sampler="threshold", threshold=0.5, gen_length=16, block_length=8,
                batch_size=3, device="cpu")


def request(context: str, **gen_kwargs) -> Instance:
    return Instance("generate_until", doc={}, arguments=(context, gen_kwargs), idx=0)


def direct(lm: DLLM, context: str, gen_length: int) -> str:
    ids = lm.tokenizer(context).input_ids
    seq = dllm.generate(lm.model, [ids], Threshold(0.5), gen_length=gen_length, block_length=8, seed=0).sequences[0]
    return lm.tokenizer.decode(seq, skip_special_tokens=True)


def test_generate_until_equals_dllm_generate(lm):
    # max_gen_toks 5 rounds up to one block of 8; the rest use gen_length 16: two batch groups, order kept
    limits = [16, 5, 16, 5]
    raw = [direct(lm, c, 8 if m == 5 else 16) for c, m in zip(CONTEXTS, limits)]
    assert all(isinstance(t, str) for t in raw) and len(raw[0].split()) > 2
    stop = raw[0].split()[2]                        # a word the first output really contains: it must be cut there
    reqs = [request(c, until=[stop, "never"], max_gen_toks=m) for c, m in zip(CONTEXTS, limits)]
    out = lm.generate_until(reqs, disable_tqdm=True)
    assert out == [t[:t.find(stop)] if stop in t else t for t in raw]
    assert out[0] == raw[0][:raw[0].find(stop)] and stop not in out[0]
    # a single `until` string and no max_gen_toks: the adapter's gen_length (16)
    assert lm.generate_until([request(CONTEXTS[2], until="never")], disable_tqdm=True) == [raw[2]]


def test_simple_evaluate_runs_a_local_task(folder, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"question": f"w{i} w{i + 1}", "answer": f"w{i + 2}"}) + "\n"
                            for i in range(1, 5)))
    (tmp_path / "toy.yaml").write_text(json.dumps({   # JSON is YAML
        "task": "dllm_toy", "dataset_path": "json", "test_split": "train", "output_type": "generate_until",
        "dataset_kwargs": {"data_files": str(data), "cache_dir": str(tmp_path / "hf_datasets")},
        "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["w9"], "max_gen_toks": 8},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}))
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    res = simple_evaluate(model="dllm", model_args=f"pretrained={folder},sampler=threshold,threshold=0.5,"
                                                   "gen_length=8,block_length=8,device=cpu",
                          tasks=["dllm_toy"], task_manager=tm, batch_size=2, bootstrap_iters=0, log_samples=True)
    assert 0.0 <= res["results"]["dllm_toy"]["exact_match,none"] <= 1.0
    assert len(res["samples"]["dllm_toy"]) == 4
    assert all(isinstance(s["resps"][0][0], str) for s in res["samples"]["dllm_toy"])


def test_unsupported_request_types(lm):
    for call in (lm.loglikelihood, lm.loglikelihood_rolling):
        with pytest.raises(ValueError, match="generate_until"):
            call([Instance("loglikelihood", doc={}, arguments=("w1", " w2"), idx=0)])


def test_model_args_errors(folder):
    with pytest.raises(ValueError, match="unknown model_arg 'thresh'.*threshold"):
        DLLM(pretrained=str(folder), thresh=0.5)
    with pytest.raises(ValueError, match="unknown model_arg 'sampler.steps'"):
        DLLM(pretrained=str(folder), **{"sampler.steps": 4})
    with pytest.raises(ValueError, match="multiple of the model's block_size"):
        DLLM(pretrained=str(folder), block_length=6)
    with pytest.raises(ValueError, match="batch_size"):
        DLLM(pretrained=str(folder), batch_size="auto")
    with pytest.raises(ValueError, match="no sampler config"):
        DLLM(pretrained=str(folder), sampler="nope")


def test_sampler_fields_from_text(folder):
    """The CLI may pass values as text: numeric fields are parsed, dotted and `sampler.` names reach nested ones."""
    lm = DLLM(pretrained=str(folder), sampler="s2d2", **{"sampler.threshold": "0.7", "router.cost": "2"},
              gen_length=8, block_length=8)
    s = lm.sampler_for(8)
    assert s.threshold == 0.7 and s.router.cost == 2
    static = DLLM(pretrained=str(folder), sampler="static", gen_length=16, block_length=8)
    assert static.sampler_for(16).steps == 16 and static.sampler_for(8).steps == 8   # ${gen_length} per request
