"""The tasks a pretraining recipe (pretrain, ar, convert) trains on and reports: chosen by name in the config.

    pipeline.tasks: synthetic            # the short suite (`dllm.eval.tasks.synthetic`): the shipped v1 models
    pipeline.tasks: long                 # gsm_synth and mbpp_synth (`wordproblems`, `programs`)
    pipeline.tasks: all                  # both, short first; `pipeline.task_weights` sets the mix
    pipeline.tasks: [add, gsm_synth]     # any list of task names

`Suite` is the same selection as one prompt source, the teacher prompts of the distillation pipelines
(`pipeline=learn2pd|dparallel`, whose `pipeline.task` defaults to the model's own suite).

Every task is built at its default difficulty knobs, the ones the held-out test split (and `configs/task/*.yaml`)
uses, so the training draws and the card's held-out prompts come from the same distribution. All of them
implement `draw(rng)` for training and the `Task` protocol (`examples()`, `score()`, `stop`) for evaluation:
each is scored by its own scorer (exact match / validity, GSM8K's extraction, MBPP's sandboxed asserts).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dllm.eval.tasks.programs import NAME as PROGRAMS, Programs
from dllm.eval.tasks.synthetic import SET_VALUED, TASKS as SHORT, SyntheticTask
from dllm.eval.tasks.wordproblems import NAME as WORDPROBLEMS, WordProblems

LONG: tuple[str, ...] = (WORDPROBLEMS, PROGRAMS)
SUITES: dict[str, tuple[str, ...]] = {"synthetic": tuple(SHORT), "long": LONG, "all": (*SHORT, *LONG)}


def served_suite(model_cfg) -> str | tuple[str, ...]:
    """The tasks a model preset (`configs/model/*.yaml`) is measured on by `dllm-compare` and the distillation
    pipelines: `serves`, what its shipped checkpoint serves when that is less than it was trained on; else
    `data.tasks`, what it was trained on (`long` for the v2 presets); else (the v1 presets and every other model)
    the short synthetic suite."""
    from omegaconf import OmegaConf
    tasks = OmegaConf.select(model_cfg, "serves", default=None)
    if tasks is None:
        tasks = OmegaConf.select(model_cfg, "data.tasks", default="synthetic")
    return tasks if isinstance(tasks, str) else tuple(tasks)


def task_names(selection: str | Sequence[str]) -> tuple[str, ...]:
    """The task names of a suite name or of an explicit list (validated, order kept)."""
    names = SUITES.get(selection) if isinstance(selection, str) else tuple(selection)
    known = SUITES["all"]
    if names is None or not names or set(names) - set(known) or len(set(names)) != len(names):
        raise ValueError(f"pipeline.tasks must be one of {sorted(SUITES)} or a list of distinct task names from "
                         f"{list(known)}; got {selection!r}")
    return names


def build_tasks(selection: str | Sequence[str], split: str, n_per_task: int = 200, seed: int = 0) -> list:
    """One task per name: `n_per_task` distinct examples of `split` from `seed` (for evaluation), and `draw(rng)`
    for fresh training draws. For "synthetic" this is exactly `synthetic.suite(split, n_per_task, seed)`."""
    out = []
    for name in task_names(selection):
        if name == WORDPROBLEMS:
            out.append(WordProblems(split, n_per_task, seed))
        elif name == PROGRAMS:
            out.append(Programs(split, n_per_task, seed))
        else:
            out.append(SyntheticTask(name, split, n_per_task, seed))
    return out


@dataclass(frozen=True)
class Suite:
    """The examples of a suite (`tasks`: a name or list as in `task_names`), task after task. For "synthetic" they
    are `SyntheticSuite`'s (same tasks, order, split, size and seed)."""
    tasks: str | tuple[str, ...] = "synthetic"
    split: str = "train"
    n_per_task: int = 64
    seed: int = 1

    def examples(self) -> list:
        tasks = self.tasks if isinstance(self.tasks, str) else tuple(self.tasks)
        return [e for task in build_tasks(tasks, self.split, self.n_per_task, self.seed) for e in task.examples()]


def metric(name: str) -> str:
    """How the model card names a task's accuracy."""
    if name == WORDPROBLEMS:
        return "GSM8K answer"
    if name == PROGRAMS:
        return "asserts pass"
    return "validity" if name in SET_VALUED else "exact match"
