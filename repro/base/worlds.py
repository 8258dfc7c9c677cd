"""The toy base's worlds: QA records of `data.source.builtin` shape drawn with their own seeds, and the
questions the evaluation keeps for itself (never in any base training sample)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longctx_core.data.records import QARecord
from longctx_core.data.seeding import derive_seed
from longctx_core.eval.contexts import question_key

if TYPE_CHECKING:
    from repro.config import ReproConfig

logger = logging.getLogger(__name__)

VALIDATION_WORLD = "toy-base-validation"
TRAINING_WORLD = "toy-base-world"


def world_records(cfg: ReproConfig, world_seed: int, n: int | None = None) -> list[QARecord]:
    """The records of the `data.source.builtin`-shaped world for `world_seed` (first `n`, default all)."""
    from longctx_core.data.sources import iter_records

    source = cfg.data.source
    if n is not None:
        source = source.model_copy(update={"limit": n})
    return [r for r in iter_records(source, world_seed) if isinstance(r, QARecord)]


def training_world_records(cfg: ReproConfig, k: int) -> list[QARecord]:
    """The records of training world `k` (before the held-out questions are dropped)."""
    b = cfg.repro.base
    return world_records(cfg, derive_seed(TRAINING_WORLD, b.seed, k), b.records_per_world)


def heldout_questions(cfg: ReproConfig) -> set[str]:
    """Question keys the evaluation may ask: the eval split of the world of every arm seed (`repro.seeds`,
    as `run.seed`). No base training sample asks any of them."""
    from longctx_core.data.split import split_of

    keys: set[str] = set()
    for seed in sorted(set(cfg.repro.seeds) | {cfg.run.seed}):
        for rec in world_records(cfg, seed):
            if split_of(rec.id, cfg.data.eval_fraction, seed) == "eval":
                keys.add(question_key(rec.question))
    return keys


@dataclass
class World:
    """One training (or validation) world: its QA records and its distractor pool (same world only, so a
    distractor never shares a name with a gold document)."""

    records: list[QARecord]
    pool: object  # longctx_core.data.compose.DocPool


def _world(records: list[QARecord], tokenizer) -> World:
    from longctx_core.data.compose import DocPool

    docs = list({d: None for r in records for d in r.evidence_docs})
    return World(records, DocPool.build(docs, ["en"] * len(docs), tokenizer))


def base_worlds(cfg: ReproConfig, tokenizer, excluded: set[str]) -> tuple[list[World], World]:
    """(training worlds, validation world). Training records whose question is in `excluded` are dropped
    (their documents stay as distractors: a document is not a question); validation questions are also
    excluded from training."""
    b = cfg.repro.base
    val = world_records(cfg, derive_seed(VALIDATION_WORLD, b.seed), b.records_per_world)
    val_keys = {question_key(r.question) for r in val}
    worlds = []
    for k in range(b.worlds):
        recs = training_world_records(cfg, k)
        world = _world(recs, tokenizer)
        world.records = [r for r in recs if question_key(r.question) not in excluded | val_keys]
        worlds.append(world)
    return worlds, _world(val, tokenizer)
