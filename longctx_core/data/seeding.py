"""Stable seeds: every random choice derives from (run seed, what it is for, which item), never from
process state, so results do not depend on worker count, block boundaries or PYTHONHASHSEED."""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A 64-bit integer that depends only on `parts` (their `str()`), stable across processes and runs."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")


def rng_for(*parts: object) -> random.Random:
    """A fresh `random.Random` seeded by `derive_seed(*parts)`."""
    return random.Random(derive_seed(*parts))
