"""The toy base's training loop as named phases: `setup_model` (fresh, or resumed from a checkpoint),
`setup_data`, `train_step`, and a validation + `save_checkpoint` every `eval_every` steps, until validation
exact match reaches `target_accuracy`, `max_steps` run out or this run's `time_budget_min` is spent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longctx_core.model.tiny import build_tiny_model, train_tokenizer
from repro.base.checkpoint import load_checkpoint, save_checkpoint
from repro.base.feed import RowFeed
from repro.base.model import model_shape, tokenizer_texts
from repro.base.samples import Row, qa_rows, recall_rows
from repro.base.step import (
    adamw,
    attention_inputs,
    lr_schedule,
    name_read_nll,
    optimizer_step,
    weighted_batch,
    weighted_loss,
)
from repro.base.validate import validate, validation_prompts
from repro.base.worlds import World, base_worlds, heldout_questions
from repro.config import ReproConfig, ToyBaseConfig

logger = logging.getLogger(__name__)

LOG_EVERY = 25  # steps between loss log lines


@dataclass
class Progress:
    """Where a build stands over all its runs; saved as the checkpoint's build_state.json."""

    steps: int = 0
    tokens: int = 0
    minutes: float = 0.0  # of the runs before this one
    curve: list[dict] = field(default_factory=list)  # one entry per validation
    runs: list[dict] = field(default_factory=list)  # {from_step, to_step, minutes, threads} per earlier run

    def state(self, first_step: int, minutes: float, threads: int) -> dict:
        """The build state after this run's first `minutes` (this run started at `first_step`)."""
        run = {
            "from_step": first_step,
            "to_step": self.steps,
            "minutes": round(minutes, 2),
            "threads": threads,
        }
        return asdict(self) | {"minutes": round(self.minutes + minutes, 2), "runs": [*self.runs, run]}


def setup_model(
    cfg: ReproConfig, excluded: set[str], resume_from: Path | None, init_from: Path | None = None
):
    """(model, tokenizer, optimizer, progress, whether the optimizer restarts on trained weights): a fresh
    tokenizer and model, those of `init_from` (a built base, loaded with `model.rope` applied: the start of
    its long pre-training), or those of `resume_from` (a build checkpoint, or a finished below-target base,
    saved without optimizer state)."""
    b = cfg.repro.base
    if resume_from is None and init_from is not None:
        from longctx_core.model.loading import load_model, load_tokenizer

        model_cfg = cfg.model.model_copy(
            update={"name_or_path": str(init_from), "tokenizer": None, "torch_dtype": "float32"}
        )
        model, tokenizer = load_model(model_cfg, quantize=False), load_tokenizer(model_cfg)
        logger.info("toy base: starting from %s with RoPE %s", init_from, model.config.rope_parameters)
        return model, tokenizer, adamw(model, b.lr, b.weight_decay), Progress(), False
    if resume_from is None:
        tokenizer = train_tokenizer(tokenizer_texts(cfg, excluded), b.vocab_size)
        model = build_tiny_model(model_shape(b), tokenizer)
        return model, tokenizer, adamw(model, b.lr, b.weight_decay), Progress(), False
    model, tokenizer, opt_state, prior = load_checkpoint(cfg, resume_from)
    opt = adamw(model, b.lr, b.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    logger.info(
        "toy base: resuming from %s at step %d (%.1f min so far%s)",
        resume_from,
        prior["steps"],
        prior["minutes"],
        "" if opt_state else "; fresh optimizer with a warm-up ramp",
    )
    return model, tokenizer, opt, Progress(**prior), opt_state is None


def setup_data(cfg: ReproConfig, tokenizer, excluded: set[str]) -> tuple[list[World], list[dict]]:
    """(training worlds, validation prompts), both without the `excluded` questions."""
    worlds, val_world = base_worlds(cfg, tokenizer, excluded)
    return worlds, validation_prompts(val_world, tokenizer, cfg.repro.base)


def learning_rate(b: ToyBaseConfig, first_step: int, fresh_optimizer: bool) -> Callable[[int], float]:
    """The LR at each step: the peak times the library's schedule over `max_steps`; an optimizer restarted
    on trained weights (`fresh_optimizer`) ramps up again over `warmup_steps`, as at the build's start."""
    factor = lr_schedule(b.warmup_steps, b.max_steps)
    ramp = lr_schedule(b.warmup_steps, None) if fresh_optimizer else (lambda _: 1.0)
    return lambda step: b.lr * factor(step) * ramp(step - first_step)


def rows_for_step(worlds: list[World], tokenizer, b: ToyBaseConfig, step: int) -> list[Row]:
    """The weighted rows of `step`: associative recall during the warm-up, then QA (numbered from the end of
    the warm-up: curriculum and sample seeds)."""
    if step < b.recall_warmup_steps:
        return recall_rows(tokenizer, b, step)
    return qa_rows(worlds, tokenizer, b, step - b.recall_warmup_steps)


def train_step(
    model, opt, rows: list[Row], pad_id: int, lr: float, pack_to: int | None = None, read_weight: float = 0.0
) -> tuple[float, float, float | None]:
    """One optimizer step on `rows` (packed into rows of `pack_to` tokens when given: `weighted_batch`);
    returns (loss, answer-token loss, name-read loss or None) before the step. With `read_weight`, the loss
    adds `read_weight` x `name_read_nll` of the rows' name reads."""
    batch = weighted_batch(rows, pad_id, pack_to)
    read = None
    if read_weight > 0 and len(batch["reads"]):
        with attention_inputs(model, batch["reads"][:, 4].unique().tolist()) as seen:
            loss, answer_loss = weighted_loss(model, batch)
        read = name_read_nll(model, seen, batch["reads"])
        loss = loss + read_weight * read
    else:
        loss, answer_loss = weighted_loss(model, batch)
    optimizer_step(model, opt, loss, lr)
    return loss.item(), answer_loss.item(), None if read is None else read.item()


def train_toy_base(
    cfg: ReproConfig,
    out_dir: Path,
    checkpoint: Path | None = None,
    resume_from: Path | None = None,
    init_from: Path | None = None,
) -> dict:
    """Train the toy base and save its HF folder into `out_dir`; returns the build summary (steps, minutes
    over all runs, validation curve, final accuracy).

    With `checkpoint`, the resumable state (weights, optimizer, step, curve) is written there at every
    validation. With `resume_from`, training goes on from its step: samples are a function of (seed, step),
    so the continuation sees what an uninterrupted build would have seen. With `init_from` (and nothing to
    resume), training starts from that built base (`repro.base.long`: its long pre-training)."""
    import torch

    b = cfg.repro.base
    torch.set_num_threads(b.threads)
    torch.manual_seed(b.seed)
    started = time.monotonic()
    excluded = heldout_questions(cfg)  # never seen by any part of the build, tokenizer included
    model, tokenizer, opt, progress, restarted = setup_model(cfg, excluded, resume_from, init_from)
    worlds, val_prompts = setup_data(cfg, tokenizer, excluded)
    log_setup(model, tokenizer, b, worlds, val_prompts)
    first_step = progress.steps
    lr_at = learning_rate(b, first_step, restarted)
    model.config.use_cache = False
    model.train()
    feed = RowFeed(lambda step: rows_for_step(worlds, tokenizer, b, step), first_step, b.prefetch)
    with feed:
        accuracy = train_loop(
            model, tokenizer, opt, b, progress, feed, val_prompts, checkpoint, started, lr_at
        )
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    total = progress.state(first_step, (time.monotonic() - started) / 60, b.threads)
    return {
        "steps": progress.steps,
        "tokens": progress.tokens,
        "minutes": total["minutes"],
        "validation_accuracy": accuracy,
        "reached_target": accuracy >= b.target_accuracy,
        "validation_questions": len(val_prompts),
        "curve": progress.curve,
        "runs": total["runs"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": b.threads,
    }


def train_loop(
    model,
    tokenizer,
    opt,
    b: ToyBaseConfig,
    progress: Progress,
    feed: RowFeed,
    val_prompts,
    checkpoint: Path | None,
    started: float,
    lr_at: Callable[[int], float],
) -> float:
    """Train from `progress.steps` until the target, `max_steps` or the time budget; validate (and
    checkpoint) every `eval_every` steps and at the end. Returns the last validation exact match."""
    first_step = progress.steps
    accuracy = progress.curve[-1]["accuracy"] if progress.curve else 0.0
    pack_to = b.context if b.pack else None
    while progress.steps < b.max_steps:
        rows = feed.take(progress.steps)
        loss, answer_loss, read_loss = train_step(
            model, opt, rows, tokenizer.pad_token_id, lr_at(progress.steps), pack_to, b.name_read_weight
        )
        progress.steps += 1
        progress.tokens += sum(len(row[0]) for row in rows)
        minutes = (time.monotonic() - started) / 60
        if progress.steps % LOG_EVERY == 0:
            logger.info(
                "toy base step %d: loss %.3f, answer loss %.3f%s, %.1f min",
                progress.steps,
                loss,
                answer_loss,
                "" if read_loss is None else f", name-read loss {read_loss:.3f}",
                progress.minutes + minutes,
            )
        over_time = minutes > b.time_budget_min
        if progress.steps % b.eval_every and progress.steps < b.max_steps and not over_time:
            continue
        accuracy = validate(model, tokenizer, val_prompts)
        point = {"step": progress.steps, "minutes": round(progress.minutes + minutes, 2)}
        progress.curve.append(point | {"accuracy": accuracy, "answer_loss": answer_loss})
        logger.info(
            "toy base step %d: validation exact match %.3f (target %.2f)",
            progress.steps,
            accuracy,
            b.target_accuracy,
        )
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, tokenizer, opt, progress.state(first_step, minutes, b.threads))
        if accuracy >= b.target_accuracy or over_time:
            break
    return accuracy


def log_setup(model, tokenizer, b: ToyBaseConfig, worlds: list[World], val_prompts: list[dict]) -> None:
    """One log line with the build's sizes."""
    logger.info(
        "toy base: %.2fM parameters, vocab %d, L0 %d, %d training worlds (%d questions), %d validation prompts",
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(tokenizer),
        b.context,
        len(worlds),
        sum(len(w.records) for w in worlds),
        len(val_prompts),
    )
