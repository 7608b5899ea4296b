"""The adaptive task mix: the reweighting rule and batches that follow the mix (its resume: test_pretrain.py)."""
from __future__ import annotations

import pytest
import torch

from dllm.distill.data import Batches
from dllm.distill.mix import base_weights, reweight, shares
from dllm.eval.tasks.synthetic import SET_VALUED, TASKS, suite


def test_weights_follow_the_errors_and_solved_tasks_keep_a_floor():
    w = reweight([1.0, 2.0, 3.0], [1.0, 0.5, 0.0], floor=0.1)
    assert w == pytest.approx([0.1, 1.2, 3.3])
    # every task solved: the configured mix again
    assert shares(reweight([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], 0.05)) == pytest.approx(shares([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="mix_floor"):
        reweight([1.0], [1.0], 0.0)
    with pytest.raises(ValueError, match="accuracy"):
        reweight([1.0, 1.0], [0.5], 0.1)


def test_base_weights_name_tasks_and_reject_unknown_ones():
    assert base_weights(["copy", "sort", "add"], {"sort": 3}) == [1.0, 3.0, 1.0]
    assert base_weights(["copy"], None) == [1.0]
    with pytest.raises(ValueError, match="unknown tasks"):
        base_weights(["copy"], {"sorting": 2})


def test_batches_draw_from_the_current_weights():
    b = Batches(suite("train"), 32, 16, 16, 0, left_pad=False, multiple_of=4)
    uniform = b[3]
    assert (uniform.excluded >= 0).any(1).sum() < 32       # a uniform mix: mostly not shuffle
    b.weights = [1.0 if t in SET_VALUED else 0.0 for t in TASKS]
    only = b[3]
    assert (only.excluded >= 0).any(1).all()               # every row now a shuffle row
    assert torch.equal(only.ids, b[3].ids)                  # still a pure function of (seed, step, weights)
