"""The command line as a newcomer meets it: a user error is one line naming the key and exit status 2 (the
traceback on request), `limit` spreads over a suite's tasks, a multirun labels its outputs and writes nothing
into the working folder, Learn2PD finds a shipped model's filter, and an [UNK] prompt is flagged once."""
from __future__ import annotations

import logging
import sys

import pytest
from omegaconf import OmegaConf

from dllm.eval.cli_errors import EXIT_USER_ERROR, UserError, build_sampler, check_cache
from dllm.eval.evaluate import take_spread
from dllm.eval.tasks.synthetic import TASKS, SyntheticSuite


def cli(monkeypatch, module, args: list[str]):
    """Run a console script's main in this process; returns its exit status (output through capsys)."""
    import importlib
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module.rsplit(".", 1)[-1], *args])
    try:
        main()
        return 0
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("bad,key", [("sampler.threshold=abc", "sampler.threshold"), ("seed=1.5", "seed"),
                                     ("limit=-3", "limit"), ("cache=dual", "cache"), ("batch_size=0", "batch_size"),
                                     ("sampler=learn2pd model.name_or_path=nowhere", "sampler.filter")])
def test_eval_user_error_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, bad, key):
    code = cli(monkeypatch, "dllm.eval.run", [*bad.split(), "logger.mode=disabled", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR
    assert len(err) == 1 and err[0].startswith("run: error: ") and key in err[0], err
    assert not (tmp_path / "samples.jsonl").exists()          # nothing ran: checked before the model loaded


def test_a_real_process_prints_one_line_on_stderr_and_exits_2(tmp_path):
    import os
    import subprocess
    r = subprocess.run([sys.executable, "-m", "dllm.eval.run", "sampler.threshold=abc", "logger.mode=disabled",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "WANDB_MODE": "disabled"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "sampler.threshold='abc'" in r.stderr and "expected float" in r.stderr


def test_full_traceback_on_request(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError, match="seed"):
        cli(monkeypatch, "dllm.eval.run", ["seed=1.5", "logger.mode=disabled", f"hydra.run.dir={tmp_path}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    capsys.readouterr()
    code = cli(monkeypatch, "dllm.eval.run", ["seed=1.5", "verbose=true", "logger.mode=disabled",
                                              f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "check_ints" in err     # Hydra's own report: the frames


@pytest.mark.parametrize("module,args,key", [
    ("dllm.eval.compare", ["limit=-3"], "limit"),
    ("dllm.eval.compare", ["grid=[{sampler:threshold,set:{threshold:abc}}]"], "threshold"),
    ("dllm.eval.generate_cli", ["seed=1.5", "prompt=x"], "seed"),
    ("dllm.eval.generate_cli", [], "prompt"),
    ("dllm.eval.generate_cli", ["model=tiny_llada", "cache=block", "prompt=x"], "cache"),
    ("dllm.distill.cli", ["pipeline.steps=abc"], "pipeline.steps"),
    ("dllm.distill.cli", ["pipeline=learn2pd", "pipeline.limit=-3"], "limit"),
])
def test_every_command_reports_user_errors_in_one_line(monkeypatch, capsys, tmp_path, module, args, key):
    code = cli(monkeypatch, module, [*args, "logger.mode=disabled", f"hydra.run.dir={tmp_path}"]
               if module != "dllm.eval.generate_cli" else args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR and len(err) == 1 and key in err[0], err


def test_lm_eval_entry_reports_user_errors_in_one_line(monkeypatch, capsys):
    pytest.importorskip("lm_eval")
    code = cli(monkeypatch, "dllm.eval.lm_eval_adapter", ["--model", "dllm", "--model_args",
                                                          "pretrained=tiny-sdar,gen_length=0", "--tasks", "gsm8k",
                                                          "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR and "gen_length" in err[-1] and err[-1].startswith("lm_eval_adapter: error:")


def test_limit_spreads_across_the_suites_tasks():
    examples = SyntheticSuite(n_per_task=5).examples()
    picked = take_spread(examples, 20)
    per_task = {t: sum(ex.meta["task"] == t for ex in picked) for t in TASKS}
    assert len(picked) == 20 and set(per_task.values()) == {2, 3}         # 20 over 8 tasks: 2 or 3 each
    assert picked == [ex for ex in examples if ex in picked]               # suite order kept
    assert [ex.id for ex in take_spread(examples, 8)] == [f"{t}/test/0/0" for t in TASKS]
    assert take_spread(examples, 1000) == examples and take_spread(examples, None) == examples
    with pytest.raises(ValueError, match="limit"):
        take_spread(examples, -3)


def test_eval_limit_covers_every_task(monkeypatch, tmp_path, capsys):
    code = cli(monkeypatch, "dllm.eval.run", ["limit=8", "task.n_per_task=2", "progress=false", "logger.mode=disabled",
                                              f"hydra.run.dir={tmp_path}"])
    assert code == 0
    import json
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["n"] == 8 and sorted(m["accuracy_by_task"]) == sorted(TASKS)


def test_generate_multirun_labels_outputs_and_writes_nothing_here(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code = cli(monkeypatch, "dllm.eval.generate_cli", ["-m", "sampler=static,threshold",
                                                       'prompt="reverse : 12 45 07 99 ="'])
    out = capsys.readouterr().out
    assert code == 0
    assert [line.split()[1] for line in out.splitlines() if line.startswith("== ")] == \
        ["sampler=static", "sampler=threshold"]
    assert list(tmp_path.iterdir()) == []


def test_learn2pd_takes_the_shipped_filter_or_names_the_pipeline():
    cfg = OmegaConf.create({"_target_": "dllm.samplers.Learn2PD", "filter": "???", "accept": 0.96, "steps": None,
                            "temperature": 0.0})
    sampler = build_sampler(cfg, 12, model="tiny-sdar")
    assert sampler.filter.endswith("tiny-sdar/learn2pd_filter.safetensors")
    with pytest.raises(UserError, match=r"sampler\.filter.*dllm-distill pipeline=learn2pd"):
        build_sampler(cfg, 12, model="GSAI-ML/LLaDA-8B-Instruct")


def test_cache_mode_checked_from_config_json_alone():
    cfg = OmegaConf.create({"_target_": "dllm.CachePolicy", "mode": "dual", "refresh_every": None})
    assert check_cache(cfg, "tiny-llada").mode == "dual"
    with pytest.raises(UserError, match="block-causal"):
        check_cache(cfg, "tiny-sdar")
    with pytest.raises(UserError, match="cache.mode"):
        check_cache(OmegaConf.merge(cfg, {"mode": "dul"}))


def test_unknown_tokens_warn_once(caplog):
    import dllm
    from dllm.eval import evaluate as ev
    tok = dllm.load_tokenizer("tiny-sdar")
    ev._warned_unknown.discard(str(tok.name_or_path))
    with caplog.at_level(logging.WARNING, logger="dllm.eval.evaluate"):
        ev.encode(tok, "reverse : 12 45 =", False)
        assert not caplog.records
        ev.encode(tok, "Janet has 3 ducks.", False)
        ev.encode(tok, "How many eggs?", False)
    assert len(caplog.records) == 1 and "cannot represent" in caplog.records[0].getMessage()


COMMANDS = {"dllm-eval": "dllm.eval.run", "dllm-generate": "dllm.eval.generate_cli", "dllm-compare": "dllm.eval.compare",
            "dllm-bench": "dllm.eval.bench", "dllm-distill": "dllm.distill.cli"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_opens_with_usage_and_its_example_composes(monkeypatch, capsys, command):
    import shlex
    code = cli(monkeypatch, COMMANDS[command], ["--help"])
    text = capsys.readouterr().out
    assert code == 0 and text.startswith(f"{command}: ") and "powered by Hydra" not in text
    assert "Usage:" in text and "Most useful overrides:" in text and "== Config" in text
    lines = text.splitlines()
    example = shlex.split(lines[lines.index("Example:") + 1])
    assert example[0] == command
    # every override the help shows is accepted: the example composes (dllm-bench once listed a `model` group
    # that `dllm-bench model=...` rejected)
    assert cli(monkeypatch, COMMANDS[command], [*example[1:], "--cfg", "job"]) == 0, capsys.readouterr().err
    if command == "dllm-bench":
        assert "model (" not in text and "Config groups" not in text
    # the options a help page lists are the shipped configs, and a listed group lists all of them
    import re
    from pathlib import Path

    import dllm.configs
    configs = Path(dllm.configs.__file__).parent
    groups = text.split("Config groups (group=option):")[1].split("\n\n")[0] if "Config groups" in text else ""
    for group, options in re.findall(r"(\w+) \(([^)]*)\)", " ".join(groups.split())):
        listed = [o.strip() for o in options.split(",")]
        shipped = sorted(f.stem for f in (configs / group).glob("*.yaml"))
        assert all(list((configs / group).glob(f"{o}.yaml")) for o in listed), (group, listed)
        assert all(any(Path(f"{n}.yaml").match(f"{o}.yaml") for o in listed) for n in shipped), (group, shipped)
