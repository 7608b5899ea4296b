"""The training mix over synthetic tasks: fixed by configuration, or steered by validation errors.

A fixed mix spends the same share of every batch on a task from the first step to the last, so tasks the model
has solved (copy and the index edits, early in tiny-sdar's run) keep the share that the tasks still behind (the
set-valued shuffle, sort, carries in add: which of them changes during the run) could use. The adaptive mix
reweights at fixed intervals by each task's error on a validation sample of the *train* split:

    w_k = base_k * (error_k + floor)

so the configured weights stay a prior, the share moves to where the errors are, and a solved task keeps
`floor / (error + floor)` of its configured share, enough to stay solved; when every task is solved the mix is
the configured one again. Reweighting domains by how far the model is from what it could reach is DoReMi's
idea (Xie et al., arXiv 2305.10429), here with the error of a task whose Bayes error is zero (the set-valued
task is scored by validity, which a perfect model also always meets) in place of DoReMi's excess loss over a
reference model.

The validation prompts come from the train split (their own seed stream), never from the test prompts the model
card reports, so the mix cannot be tuned on the numbers it is judged by.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def base_weights(names: Sequence[str], task_weights: Mapping[str, float] | None) -> list[float]:
    """One configured weight per task name (1 for names the mapping leaves out)."""
    task_weights = task_weights or {}
    unknown = set(task_weights) - set(names)
    if unknown:
        raise ValueError(f"task_weights names unknown tasks {sorted(unknown)}; the suite has {list(names)}")
    return [float(task_weights.get(n, 1.0)) for n in names]


def reweight(base: Sequence[float], accuracy: Sequence[float], floor: float) -> list[float]:
    """base_k * (1 - accuracy_k + floor): the mix after a validation pass (relative weights, not normalised)."""
    if floor <= 0:
        raise ValueError(f"mix_floor must be > 0 (a solved task would never be drawn again), got {floor}")
    if len(base) != len(accuracy) or any(not 0 <= a <= 1 for a in accuracy):
        raise ValueError(f"need one accuracy in [0, 1] per task, got {list(accuracy)} for {len(base)} tasks")
    return [b * (1 - a + floor) for b, a in zip(base, accuracy)]


def shares(weights: Sequence[float]) -> list[float]:
    """Each task's fraction of a batch in expectation."""
    total = sum(weights)
    return [w / total for w in weights]
