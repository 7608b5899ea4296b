"""The task protocol every evaluation task implements (synthetic, GSM8K, MBPP).

A task is a list of examples plus a scoring rule. The evaluation loop (`dllm.eval.evaluate`) only ever calls
`examples()`, reads `Example.prompt`, generates a completion, and calls `score(example, completion)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Example:
    id: str                  # stable id, used to resume interrupted runs and to merge rank shards
    prompt: str              # the exact text fed to the tokenizer (few-shot context and chat template applied)
    reference: Any           # gold answer, list of tests, ... (task specific, JSON-serialisable)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    correct: bool            # exact match / valid answer / all tests pass
    extracted: str           # what the scorer read from the completion (answer string or program)
    detail: dict = field(default_factory=dict)  # e.g. {"strict": True, "flexible": True} or execution status


@runtime_checkable
class Task(Protocol):
    name: str
    stop: Sequence[str]      # strings that end a completion (cut before scoring); may be empty

    def examples(self) -> list[Example]: ...

    def score(self, example: Example, completion: str) -> Score: ...
