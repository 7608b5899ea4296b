"""The long-answer suite: `gsm_synth` and `mbpp_synth` as one `Task` (configs/task/long.yaml, for dllm-compare).

Each example keeps its task name in `meta["task"]`, so results break down per task, and is scored by its own
task's scorer (GSM8K's extraction, MBPP's sandbox). Completions are cut at the union of the members' stop
strings: the GSM8K ones never occur in a correct program, nor "[DONE]" in a correct rationale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dllm.eval.tasks.base import Example, Score
from dllm.eval.tasks.programs import NAME as PROGRAMS, Programs
from dllm.eval.tasks.wordproblems import NAME as WORDPROBLEMS, OPS, WordProblems

TASKS: tuple[str, ...] = (WORDPROBLEMS, PROGRAMS)


@dataclass(frozen=True)
class LongSuite:
    tasks: tuple[str, ...] = TASKS
    split: str = "test"
    n_per_task: int = 100
    seed: int = 0
    # gsm_synth knobs (`wordproblems.Knobs`)
    min_steps: int = 2
    max_steps: int = 4
    max_operand: int = 20
    max_factor: int = 5
    max_value: int = 999
    ops: str = OPS
    # mbpp_synth knobs (`programs.Knobs`) and sandbox settings
    min_depth: int = 1
    max_depth: int = 2
    max_number: int = 20
    timeout: float = 3.0
    workers: int | None = None
    name: str = "long"

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {list(self.tasks)}")
        self.members()  # validate every knob eagerly

    def members(self) -> dict[str, WordProblems | Programs]:
        built = {WORDPROBLEMS: lambda: WordProblems(self.split, self.n_per_task, self.seed, self.min_steps,
                                                    self.max_steps, self.max_operand, self.max_factor,
                                                    self.max_value, self.ops),
                 PROGRAMS: lambda: Programs(self.split, self.n_per_task, self.seed, self.min_depth, self.max_depth,
                                            self.max_number, self.timeout, self.workers)}
        return {t: built[t]() for t in self.tasks}

    @property
    def stop(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for task in self.members().values() for s in task.stop))

    def examples(self) -> list[Example]:
        return [ex for task in self.members().values() for ex in task.examples()]

    def score(self, example: Example, completion: str) -> Score:
        return self.members()[example.meta["task"]].score(example, completion)

    def score_many(self, examples: Sequence[Example], completions: Sequence[str]) -> list[Score]:
        """`score` over a batch; each member scores its own examples at once (programs run in parallel)."""
        scores: list[Score | None] = [None] * len(examples)
        for name, task in self.members().items():
            rows = [i for i, ex in enumerate(examples) if ex.meta["task"] == name]
            many = getattr(task, "score_many", None)
            got = many([examples[i] for i in rows], [completions[i] for i in rows]) if many and rows else \
                [task.score(examples[i], completions[i]) for i in rows]
            for i, s in zip(rows, got):
                scores[i] = s
        if any(s is None for s in scores):
            names = sorted({str(ex.meta.get("task")) for ex in examples})
            raise ValueError(f"examples of tasks outside this suite ({list(self.tasks)}): {names}")
        return scores
