"""Mixing sources by share of training tokens, streaming and deterministic for a seed.

    stream = interleave(main=("builtin", rows_a), others=[("sharegpt", 0.3, rows_b)])
    for name, row in stream: ...          # rows carry `n_tokens`

The main source is read to its end and decides the size of the mixture; every other source `i` is drawn so
that its tokens stay at `share_i` of all tokens taken so far: the next row comes from the source whose
deficit `share_i x tokens_total - tokens_i` is largest (the main source's share is 1 - sum of the others).
A source that runs out stops contributing and its achieved share falls short (stats report it). After the
last row the achieved share of each source is within one row of its target, so on a mixture of T tokens
whose longest row has L tokens, |achieved - share| <= L / T (the tolerance the tests hold it to).

Nothing depends on timing or worker count: the order is a function of the sources' row orders, and a
seeded shuffle buffer (`shuffled`) spreads the rows taken from a large source over the whole of it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)


def shuffled(rows: Iterable[dict], buffer: int, rng: random.Random) -> Iterator[dict]:
    """`rows` in a seeded streaming order: a buffer of `buffer` rows, each step yielding a random one of
    them and refilling its slot (holds at most `buffer` rows)."""
    pool: list[dict] = []
    for row in rows:
        if len(pool) < buffer:
            pool.append(row)
            continue
        i = rng.randrange(buffer)
        yield pool[i]
        pool[i] = row
    rng.shuffle(pool)
    yield from pool


@dataclass
class SourceTally:
    """What a source contributed: rows, tokens, its target share."""

    name: str
    share: float
    samples: int = 0
    tokens: int = 0
    exhausted: bool = False

    def to_dict(self, total_tokens: int) -> dict:
        return {
            "samples": self.samples,
            "tokens": self.tokens,
            "share_target": self.share,
            "share_achieved": self.tokens / total_tokens if total_tokens else 0.0,
            "exhausted": self.exhausted,
        }


class Mixer:
    """The interleaving state; iterate `rows()`, then read `tallies` (see the module docstring)."""

    def __init__(self, main: tuple[str, Iterable[dict]], others: list[tuple[str, float, Iterable[dict]]]):
        total = sum(share for _, share, _ in others)
        if total >= 1:
            raise ValueError(f"shares of the mixed-in sources sum to {total:g}; must be < 1")
        self.tallies = [SourceTally(main[0], 1.0 - total)] + [SourceTally(n, s) for n, s, _ in others]
        self._iters = [iter(main[1])] + [iter(rows) for _, _, rows in others]

    @property
    def total_tokens(self) -> int:
        return sum(t.tokens for t in self.tallies)

    def _pick(self) -> int:
        total = self.total_tokens
        best, best_deficit = -1, None
        for i, t in enumerate(self.tallies):
            if t.exhausted:
                continue
            deficit = t.share * total - t.tokens
            if best_deficit is None or deficit > best_deficit:  # ties: the earlier source (main first)
                best, best_deficit = i, deficit
        return best

    def rows(self) -> Iterator[tuple[str, dict]]:
        """Yield (source name, row) until the main source is exhausted."""
        while not self.tallies[0].exhausted:
            i = self._pick()
            row = next(self._iters[i], None)
            tally = self.tallies[i]
            if row is None:
                tally.exhausted = True
                if i:
                    logger.warning(
                        "mix source %r ran out after %d samples (%d tokens): its share will fall short",
                        tally.name,
                        tally.samples,
                        tally.tokens,
                    )
                continue
            tally.samples += 1
            tally.tokens += int(row["n_tokens"])
            yield tally.name, row

    def report(self) -> dict[str, dict]:
        """Per source: samples, tokens, share target and achieved, whether it ran out."""
        total = self.total_tokens
        return {t.name: t.to_dict(total) for t in self.tallies}


def interleave(
    main: tuple[str, Iterable[dict]], others: list[tuple[str, float, Iterable[dict]]]
) -> Iterator[tuple[str, dict]]:
    """Shorthand for `Mixer(main, others).rows()` when the tallies are not needed."""
    return Mixer(main, others).rows()
