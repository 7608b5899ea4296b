"""Progress bars that also show in CI logs and `nohup` files: tqdm on a terminal, else a plain line every few
percent. tqdm itself either hides its bar when stderr is not a terminal (`disable=None`) or floods the log with
carriage-return frames; a log wants one readable line per step of progress.

    bar = progress(range(steps), total=steps, desc="pretrain")    # the one factory every loop uses
    for step in bar: ...; bar.set_postfix(loss=f"{loss:.3f}")
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from tqdm import tqdm

EVERY_PERCENT = 5          # a non-terminal log gets a line each time this much more of the work is done


class LineProgress:
    """The part of tqdm's interface the loops use (iterate, update, set_postfix, write, close), printed as
    `desc: done/total (pct%) elapsed rate postfix` lines to stderr."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", initial: int = 0,
                 every: float = EVERY_PERCENT, file=None):
        self.iterable, self.desc, self.n, self.initial = iterable, desc, initial, initial
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.every, self.file = every, file or sys.stderr
        self.postfix, self.t0, self.next_pct = "", time.perf_counter(), 0.0
        self._advance()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self) -> str:
        seconds = time.perf_counter() - self.t0
        rate = (self.n - self.initial) / seconds if seconds > 0 else 0.0
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}/{self.total if self.total is not None else '?'}{pct} {seconds:.0f}s " \
               f"{rate:.2f} it/s{post}"

    def _advance(self) -> None:
        """Print a line when progress has crossed the next multiple of `every` percent (or every item when the
        total is unknown or small)."""
        if self.total:
            pct = 100 * self.n / self.total
            if pct + 1e-9 < self.next_pct:
                return
            self.next_pct = (pct // self.every + 1) * self.every
        print(self._line(), file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._advance()

    def set_postfix(self, **kw) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self.total and self.n < self.total and self.n > self.initial:
            print(self._line() + " (stopped)", file=self.file, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", initial: int = 0,
             disable: bool = False):
    """A tqdm bar on a terminal, `LineProgress` lines otherwise, or a silent tqdm when `disable`."""
    if disable:
        return tqdm(iterable, total=total, desc=desc, initial=initial, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial)
    return LineProgress(iterable, total=total, desc=desc, initial=initial)
