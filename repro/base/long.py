"""The toy base's long-context pre-training (`repro.long_pretrain`), the step a model vendor takes before
anyone fine-tunes: the finished L0 base, RoPE-extended (`model.rope`, YaRN x `repro.length_factor`), fully
trained on base samples up to factor x L0 whose gold documents sit where natural text puts evidence (mostly
at the start and the end: Beta(gold_beta, gold_beta) per gold). A pretrained model learns "closer to the
edges is more relevant" from its text; this stage teaches the toy base the same, at the length where the
arms train and the evaluation asks.

    long_dir = ensure_long_base(cfg, base_dir)     # <cache>/toybase-<hash>-long-<hash>/, built once

The build is `repro.base.train.train_toy_base` on a derived config (`long_base_config`: repro.base's
length, placement, batch and schedule replaced by the stage's), so it validates, checkpoints and resumes as
the L0 build does; it stops after `steps` (no accuracy target) or its time budget.
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.fsio import digest
from repro.base.cache import base_fingerprint, ensure_built
from repro.config import ReproConfig

logger = logging.getLogger(__name__)

_STAGE_VERSION = 1  # bump when the stage changes in a way the config does not show


def long_base_config(cfg: ReproConfig) -> ReproConfig:
    """`cfg` with `repro.base` set up for the long pre-training: context factor x L0 (samples and validation
    prompts that long), the stage's placement, questions per sample, batch, LR schedule and step count;
    no curriculum, no recall warm-up, no name-read loss, no accuracy target (it runs its steps). Worlds,
    tokenizer corpus, prompt loss weight and seed stay the L0 base's."""
    b, long = cfg.repro.base, cfg.repro.long_pretrain
    context = cfg.repro.length_factor * b.context
    stage = b.model_copy(
        update={
            "context": context,
            "min_tokens": long.min_tokens or b.context,
            "curriculum_steps": 0,
            "recall_warmup_steps": 0,
            "name_read_weight": 0.0,
            "gold_beta": long.gold_beta,
            "gold_beta_scope": "every",
            "records_per_sample": long.records_per_sample,
            "answer_styles": dict(long.answer_styles),
            "batch_size": long.batch_size,
            "max_steps": long.steps,
            "lr": long.lr,
            "warmup_steps": long.warmup_steps,
            "eval_every": long.eval_every,
            "eval_questions": long.eval_questions,
            "target_accuracy": 1.0,
            "time_budget_min": long.time_budget_min,
        }
    )
    return cfg.model_copy(update={"repro": cfg.repro.model_copy(update={"base": stage})})


def long_fingerprint(cfg: ReproConfig) -> str:
    """Hash of what the long-pretrained base depends on: the L0 base's fingerprint, the stage's recipe and
    the RoPE extension it trains under."""
    recipe = {
        "version": _STAGE_VERSION,
        "base": base_fingerprint(cfg),
        "long": cfg.repro.long_pretrain.model_dump(mode="json", exclude={"time_budget_min"}),
        "factor": cfg.repro.length_factor,
        "rope": cfg.model.rope.model_dump(mode="json"),
    }
    return digest(recipe, length=12)


def long_base_dir(cfg: ReproConfig, base_dir: Path) -> Path:
    """Where the long-pretrained base of the L0 base `base_dir` is cached: beside it, `-long-<hash>`."""
    return Path(base_dir).with_name(f"{Path(base_dir).name}-long-{long_fingerprint(cfg)}")


def ensure_long_base(cfg: ReproConfig, base_dir: Path, resume: bool = True) -> Path:
    """The long-pretrained base of `base_dir` (the finished L0 base of `cfg`), built once, checkpointed at
    every validation and trained on from there by the next call when a run stopped early (`resume=False`
    takes an unfinished one as it is)."""
    if cfg.repro.long_pretrain.steps <= 0:
        raise ValueError("repro.long_pretrain.steps: 0 means no long pre-training")
    return ensure_built(
        long_base_config(cfg), long_base_dir(cfg, base_dir), long_fingerprint(cfg), resume, init_from=base_dir
    )
