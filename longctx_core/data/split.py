"""The train/eval split of QUESTIONS: a deterministic hash of the record id, so synthesis and evaluation
agree on which questions are held out without sharing any state.

    split_of("litm-3f2a9c...", eval_fraction=0.1, seed=0)  # -> "train" or "eval", the same everywhere
"""

from __future__ import annotations

from typing import Literal

from longctx_core.data.seeding import derive_seed

Split = Literal["train", "eval"]


def split_of(record_id: str, eval_fraction: float, seed: int) -> Split:
    """'eval' for about `eval_fraction` of record ids (a stable hash of (seed, id)), else 'train'."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    u = derive_seed("split", seed, record_id) / 2**64
    return "eval" if u < eval_fraction else "train"
