"""The toy base's training rows, composed ahead: while step s trains, a worker process composes the rows of
steps s+1 ... s+ahead. Composing a step's 32 samples costs about half of what training on them does on 2
cores, and it is pure Python, so overlapping the two buys most of that time back.

    with RowFeed(lambda step: rows_for_step(worlds, tokenizer, b, step), first=0, ahead=2) as feed:
        rows = feed.take(0)     # then take(1), take(2), ... in order

Rows are a function of the step alone (`repro.base.samples`), so a fed build sees exactly the rows of an
in-line one; `ahead=0` composes in line, in this process. The worker is forked: it inherits the worlds and
the tokenizer instead of receiving them, and it never touches torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable

from repro.base.samples import Row

logger = logging.getLogger(__name__)

_MAKE_ROWS: Callable[[int], list[Row]] | None = None  # what a forked worker calls (set before the fork)


def _rows_at(step: int) -> list[Row]:
    assert _MAKE_ROWS is not None, "RowFeed worker started without its row maker"
    return _MAKE_ROWS(step)


class RowFeed:
    """The rows of steps `first`, `first` + 1, ... (`make_rows(step)`), `ahead` steps composed in advance by one
    forked worker process. Take them in order with `take(step)`; use as a context manager (the worker ends
    at exit). An error in `make_rows` is raised by the `take` of its step."""

    def __init__(self, make_rows: Callable[[int], list[Row]], first: int, ahead: int) -> None:
        self.make_rows, self.next, self.ahead = make_rows, first, ahead
        self.pending: dict[int, multiprocessing.pool.AsyncResult] = {}
        self.pool = None

    def __enter__(self) -> RowFeed:
        global _MAKE_ROWS
        if self.ahead > 0:
            # the Rust tokenizer's thread pool does not survive a fork; one thread per process is what it uses
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            _MAKE_ROWS = self.make_rows
            self.pool = multiprocessing.get_context("fork").Pool(1)
        return self

    def __exit__(self, *exc) -> None:
        global _MAKE_ROWS
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        _MAKE_ROWS = None

    def take(self, step: int) -> list[Row]:
        """The rows of `step` (the next one in order), after queuing the `ahead` steps that follow it."""
        if step != self.next:
            raise ValueError(f"RowFeed: rows of step {step} asked for, step {self.next} is next")
        self.next += 1
        if self.pool is None:
            return self.make_rows(step)
        for s in range(step, step + self.ahead + 1):
            if s not in self.pending:
                self.pending[s] = self.pool.apply_async(_rows_at, (s,))
        return self.pending.pop(step).get()
