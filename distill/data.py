"""Tokenised training batches from the embedded suite: prompt, answer, EOS, EOS-filled to a fixed length.

Every row holds `prompt + answer + EOS` followed by more EOS up to `gen_length` answer slots, as LLaDA's SFT pads
with EOS and trains on the padding (arXiv 2502.09992 §2.3): the model learns to fill the slots after an answer
with EOS, which is what lets generation stop early. The answer region (answer, EOS and the EOS fill) is what
the objectives mask and score; the prompt is always clean.

Two alignments, matching `dllm.layout` at inference:
* `left_pad=True` (bidirectional, LLaDA): prompts are left-padded with pad tokens so every prompt ends at the
  same index and the answer region is exactly `gen_length` slots; position ids restart at 0 on each row's first
  real token and padding is masked out of attention, so a row sees what it sees at inference.
* `left_pad=False` (block-causal, SDAR): rows start at position 0 so the block grid is aligned to position 0
  (JetAstra/SDAR); the EOS fill runs to the end of the row, whose length is a multiple of the block size.

Tasks are anything with `name`, `split` and `draw(rng)` returning a `synthetic.Draw`: the short suite and the
long-answer tasks (`gsm_synth`, `mbpp_synth`) mix in one batch, each row padded to the longest prompt and answer
the run allows (`prompt_length`, `gen_length`). The tokenizer is the shipped models' word-level one unless one
is passed (e.g. `dllm.distill.tokenizer.build_suite_tokenizer()`, which the long tasks need).

Rows of a set-valued task (`shuffle`) also carry the one order their answer excludes (the prompt's own), so the
objectives can score their slots against the exact posterior instead of the one sampled order
(`dllm.distill.targets`). That posterior is over items, one per slot, so it needs a tokenizer that writes each
item as one token; under one that splits items into digits (the suite tokenizer) set-valued rows carry no
excluded order and are scored against their sampled order.

With `trim=True` a batch is only as long as its rows need: left padding that every row has is dropped
(bidirectional rows keep all `gen_length` answer slots, the canvas they are decoded on), and block-causal rows
end at the block holding the batch's last EOS (generation stops at the block that commits EOS, so a longer EOS
fill teaches nothing decoding uses). On the long tasks a fixed row of prompt_length + gen_length is mostly fill:
trimming halves the tokens a step computes.

Batches are a pure function of (seed, step, mix), so a resumed run needs only the step counter and the task
weights in force (`Batches.weights`, which the adaptive mix of `dllm.distill.mix` changes during training).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

import torch
from tokenizers import Tokenizer
from torch import Tensor

from dllm.distill.tokenizer import EOS_ID, PAD_ID, build_tokenizer
from dllm.eval.tasks.synthetic import ITEMS, SET_VALUED, SyntheticTask, training_draws


@dataclass
class Batch:
    ids: Tensor      # [B, L] clean tokens x_0
    pos: Tensor      # [B, L] position ids
    valid: Tensor    # [B, L] bool: a real token (False = left padding, never attended to)
    answer: Tensor   # [B, L] bool: answer region (answer, EOS, EOS fill): maskable and in the loss
    excluded: Tensor | None = None   # [B, L] long: on the item slots of a set-valued answer (a random order of the
                                     # prompt's items), the token the one excluded order puts there; -1 elsewhere

    def rows(self, r) -> "Batch":
        """The rows `r` (an index or slice) of every field."""
        return Batch(self.ids[r], self.pos[r], self.valid[r], self.answer[r],
                     None if self.excluded is None else self.excluded[r])

    def columns(self, c: slice) -> "Batch":
        """The columns `c` of every field."""
        return Batch(self.ids[:, c], self.pos[:, c], self.valid[:, c], self.answer[:, c],
                     None if self.excluded is None else self.excluded[:, c])

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(None if t is None else t.to(device)
                       for t in (self.ids, self.pos, self.valid, self.answer, self.excluded)))

    @property
    def padded(self) -> bool:
        return not bool(self.valid.all())


class Batches:
    """`batches[step]` -> the training batch of that step under the current `weights` (one per task, None:
    uniform), identical on every call and across runs."""

    def __init__(self, tasks: Sequence[SyntheticTask], batch_size: int, prompt_length: int, gen_length: int,
                 seed: int, left_pad: bool, multiple_of: int = 1, weights: Sequence[float] | None = None,
                 tokenizer: Tokenizer | None = None, trim: bool = False):
        self.tasks, self.batch_size, self.seed, self.left_pad = list(tasks), batch_size, seed, left_pad
        self.multiple_of, self.trim = multiple_of, trim
        self.weights = None if weights is None else list(weights)
        self.prompt_length, self.gen_length = prompt_length, gen_length
        length = prompt_length + gen_length
        self.length = -(-length // multiple_of) * multiple_of
        self.tok = build_tokenizer() if tokenizer is None else tokenizer
        # exact set-valued targets need one token per item (see the module docstring)
        self.item_tokens = all(len(self.tok.encode(x).ids) == 1 for x in ITEMS)

    def __getitem__(self, step: int) -> Batch:
        # a string seed goes through SHA-512 in `random.seed`: a stable, independent stream per (seed, step)
        rng = random.Random(f"pretrain/{self.seed}/{step}")
        drawn = list(itertools.islice(training_draws(rng, self.tasks, self.weights), self.batch_size))
        return self.encode([(d.prompt, d.answer) for _, d in drawn],
                           [" ".join(d.meta["items"]) if task.name in SET_VALUED and self.item_tokens else None
                            for task, d in drawn])

    def encode(self, pairs: Sequence[tuple[str, str]], excluded: Sequence[str | None] | None = None) -> Batch:
        """`excluded[r]`: for a set-valued row, the order its answer may not take (same words as the answer)."""
        B, L = len(pairs), self.length
        left_most, end_most = L, 0            # the least left padding and the furthest EOS over the rows
        ids = torch.full((B, L), EOS_ID, dtype=torch.long)
        order = torch.full((B, L), -1, dtype=torch.long)
        valid = torch.ones(B, L, dtype=torch.bool)
        answer = torch.zeros(B, L, dtype=torch.bool)
        pos = torch.arange(L).repeat(B, 1)
        for r, (prompt, ans) in enumerate(pairs):
            p, a = self.tok.encode(prompt).ids, self.tok.encode(ans).ids + [EOS_ID]
            if len(p) > self.prompt_length or len(a) > self.gen_length:
                raise ValueError(f"pair does not fit prompt_length={self.prompt_length}, gen_length="
                                 f"{self.gen_length} (answer counts its EOS): {prompt!r} -> {ans!r}")
            left = self.prompt_length - len(p) if self.left_pad else 0
            ids[r, :left] = PAD_ID
            valid[r, :left] = False
            pos[r] = (pos[r] - left).clamp(min=0)
            ids[r, left:left + len(p)] = torch.tensor(p)
            ids[r, left + len(p):left + len(p) + len(a)] = torch.tensor(a)
            if excluded is not None and excluded[r] is not None:
                e = self.tok.encode(excluded[r]).ids
                if len(e) != len(excluded[r].split(" ")):
                    raise ValueError(f"excluded order {excluded[r]!r} is not one token per item under this "
                                     "tokenizer; exact set-valued targets need a word-level tokenizer")
                if sorted(e) != sorted(a[:-1]):
                    raise ValueError(f"excluded order {excluded[r]!r} is not a reordering of the answer {ans!r}")
                order[r, left + len(p):left + len(p) + len(e)] = torch.tensor(e)
            end = left + len(p) + self.gen_length if self.left_pad else L
            answer[r, left + len(p):end] = True
            left_most, end_most = min(left_most, left), max(end_most, left + len(p) + len(a))
        batch = Batch(ids, pos, valid, answer, order if excluded is not None else None)
        if not self.trim:
            return batch
        if self.left_pad:
            return batch.columns(slice(left_most, L))
        return batch.columns(slice(0, -(-end_most // self.multiple_of) * self.multiple_of))
