"""Every example in the README and the model cards runs as written: each ```python block, and each `dllm-...`
command line (in ```bash / plain code blocks and in backticks), on the tiny models with cheap overrides
appended (few examples, few steps, a temporary run directory). Commands that need a GPU or a hub download are
listed in SKIPPED with the reason; a listed command that no longer appears in the docs fails the test, so the list
cannot rot."""
from __future__ import annotations

import importlib
import itertools
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "dllm" / "checkpoints").glob("*/README.md"))]
MODULES = {"dllm-eval": "dllm.eval.run", "dllm-generate": "dllm.eval.generate_cli", "dllm-compare": "dllm.eval.compare",
           "dllm-bench": "dllm.eval.bench", "dllm-distill": "dllm.distill.cli"}
SKIPPED = {   # command as written (shell-quoted as `commands` returns it) (after expanding a|b alternatives) -> why it cannot run here
    "dllm-lm-eval --model dllm --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,sampler=threshold --tasks gsm8k":
        "downloads LLaDA-8B-Instruct and GSM8K from the hub",
    "dllm-bench device=cuda 'models=[sdar_1_7b_shape,llada_8b_shape]' latency=true compile=true":
        "needs a CUDA GPU (real-size random models, torch.compile)",
}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[str]:
    """`dllm-...` lines of code blocks and `dllm-...` spans in backticks (joined across line breaks), with the
    table's escaped `\\|` alternatives (`pipeline=pretrain|learn2pd`) expanded into one command each."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        found += [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("dllm-")]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [" ".join(span.split()) for span in re.findall(r"`(dllm-[a-z-]+(?:\s[^`]*)?)`", outside)]
    out = []
    for cmd in found:
        words = shlex.split(cmd.replace("\\|", "|"))
        options = [[w.split("=", 1)[0] + "=" + v for v in w.split("=", 1)[1].split("|")]
                   if "=" in w and "|" in w and not w.startswith("'") else [w] for w in words]
        out += [" ".join(shlex.quote(w) for w in combo) for combo in itertools.product(*options)]
    return list(dict.fromkeys(out))


ALL = [(doc.relative_to(ROOT).as_posix(), cmd) for doc in DOCS for cmd in commands(doc.read_text())]


def tiny_ar(tmp: Path, tokenizer: str) -> Path:
    """A small random AR start (the format `pipeline=ar` exports) for the documented conversion commands."""
    import torch
    from dllm.distill.ar import ar_init, export_ar, qwen3_config
    from dllm.distill.pretrain import ModelInit, build_model
    model, config = build_model(ar_init(ModelInit("sdar", 32, 2, 4, 4, 64, False, 4, 1e4)), 0,
                                torch.device("cpu"), tokenizer)
    return export_ar(model, qwen3_config(config), tmp / "ar", "card", tokenizer)


def cheap(cmd: str, tmp: Path) -> list[str]:
    """The command's arguments with cheap settings for a CPU test: a later key replaces an earlier one."""
    words = shlex.split(cmd)
    args = dict(w.split("=", 1) if "=" in w else (w, None) for w in words[1:])
    pipeline = args.get("pipeline", "pretrain")
    extra = {
        "dllm-eval": {"limit": "2", "progress": "false"},
        "dllm-compare": {"limit": "1", "progress": "false"},
        "dllm-generate": {},
        "dllm-bench": {"batch_sizes": "[1]", "gen_lengths": "[8]", "block_length": "4", "prompt_length": "4",
                       "threads": "1"},
        "dllm-distill": {
            "pretrain": {"pipeline.steps": "2", "pipeline.final_eval_n": "1", "pipeline.sweep_n": "0",
                         "pipeline.eval_every": "0", "pipeline.mix_every": "0", "export_dir": str(tmp / "model")},
            "ar": {"pipeline.steps": "2", "pipeline.warmup": "1", "pipeline.final_eval_n": "1",
                   "pipeline.eval_every": "0", "pipeline.batch_size": "2", "export_dir": str(tmp / "model")},
            "convert": {"pipeline.steps": "2", "pipeline.warmup": "1", "pipeline.final_eval_n": "1",
                        "pipeline.sweep_n": "0", "pipeline.eval_every": "0", "pipeline.batch_size": "2",
                        "pipeline.init": str(tiny_ar(tmp, args.get("pipeline.tokenizer", "suite"))),
                        "export_dir": str(tmp / "model")},
            "learn2pd": {"pipeline.steps": "2", "pipeline.task.n_per_task": "2", "pipeline.eval_n": "0",
                         "pipeline.filter_path": str(tmp / "filter.safetensors")},
            "dparallel": {"pipeline.steps": "2", "pipeline.task.n_per_task": "1", "pipeline.eval_n": "0",
                          "pipeline.batch_size": "4", "pipeline.ckpt_every": "2", "export_dir": str(tmp / "model")},
        }[pipeline] | {"pipeline.threads": "1"},
    }[words[0]]
    if words[0] not in ("dllm-generate", "dllm-bench"):
        extra["logger.mode"] = "disabled"
    if words[0] != "dllm-generate":
        extra["hydra.run.dir"] = str(tmp / "run")
    args.update(extra)
    return [k if v is None else f"{k}={v}" for k, v in args.items()]


def test_docs_have_examples_and_the_skip_list_is_current():
    assert len(ALL) >= 10 and len(python_blocks((ROOT / "README.md").read_text())) >= 1
    listed = {cmd for _, cmd in ALL}
    stale = [cmd for cmd in SKIPPED if cmd not in listed]
    assert not stale, f"SKIPPED names commands the docs no longer show: {stale}"
    unknown = [cmd for cmd in listed if cmd not in SKIPPED and cmd.split()[0] not in MODULES]
    assert not unknown, f"a documented command this test cannot run; run it or list it in SKIPPED: {unknown}"


@pytest.mark.parametrize("block", python_blocks((ROOT / "README.md").read_text()))
def test_readme_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("doc,cmd", ALL, ids=[f"{d}:{c[:60]}" for d, c in ALL])
def test_documented_command_runs(doc, cmd, tmp_path, monkeypatch, capsys):
    if cmd in SKIPPED:
        pytest.skip(SKIPPED[cmd])
    import torch
    monkeypatch.chdir(tmp_path)                         # nothing lands in the checkout
    name = shlex.split(cmd)[0]
    monkeypatch.setattr(sys, "argv", [name, *cheap(cmd, tmp_path)])
    threads = torch.get_num_threads()
    try:
        importlib.import_module(MODULES[name]).main()
    except SystemExit as e:
        assert e.code in (0, None), f"{cmd!r} from {doc} exited {e.code}: {capsys.readouterr().err[-2000:]}"
    finally:
        torch.set_num_threads(threads)                  # `threads=` overrides must not leak into other tests


DOCTESTED = ["dllm.generate", *(f"dllm.samplers.{m}" for m in ("static", "threshold", "factor", "entropy", "credit",
                                                                  "localleap", "freedave", "s2d2", "learn2pd", "eotp"))]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module):
    """help(dllm.generate) and every public sampler's docstring carry an example that runs as shown."""
    import doctest
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0, result
