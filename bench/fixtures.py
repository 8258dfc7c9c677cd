"""What several benchmarks share: the demo config, samples composed at it, and the plain PyTorch loop that
is the baseline of the training benchmarks. Every benchmark imports this module, `bench.common` and the
library; none imports another benchmark.

    cfg = demo_config(["train.max_seq_len=1024"])         # ray_jobs/configs/tiny_cpu.yaml + overrides
    samples, tokenizer_path = compose_samples(cfg, 32)    # data_gen's samples, tokenised as training does
    run = plain_train(cfg, collated_batches, warmup=1)    # the plain loop: {seconds, tokens_per_s, losses, ...}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from longctx_core.train.memory import peak_rss_gb

logger = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "ray_jobs" / "configs" / "tiny_cpu.yaml"


def demo_config(overrides: list[str] = ()):
    """The CPU demo preset with `overrides` applied; returns the validated Config."""
    from longctx_core.config import load_config

    return load_config(DEMO_CONFIG, list(overrides))


def plan_tasks(cfg, n: int):
    """data_gen's preparation for `n` training samples at `cfg`'s data config, in this process; returns
    (tokenizer path, tokenizer, prepared records, planned tasks)."""
    from data_gen.synthesis import (
        base_overheads,
        plan_samples,
        prepare_records,
    )
    from data_gen.tokenizer import chat_tokenizer, tokenizer_path

    path = tokenizer_path(cfg)
    tok = chat_tokenizer(path)
    prep = prepare_records(cfg, tok)
    overhead = base_overheads(tok)
    return path, tok, prep, plan_samples(prep, cfg.data, cfg.run.seed, "train", n, overhead)


def compose_samples(cfg, n: int) -> tuple[list, str]:
    """Compose `n` training samples with data_gen at `cfg`'s data config (in this process) and tokenise them
    with the chat template; returns ([packing.Sample], tokenizer path). Failed compositions are skipped."""
    from data_gen.synthesis import ComposeSettings, compose_locally
    from longctx_core.data.chat import tokenize_chat
    from longctx_core.data.compose import PositionSpec
    from longctx_core.train.packing import Sample

    path, tok, prep, tasks = plan_tasks(cfg, n)
    settings = ComposeSettings(
        PositionSpec.from_config(cfg.data.gold_position), cfg.train.max_seq_len, cfg.run.seed, "builtin"
    )
    samples = []
    for res in compose_locally(tasks, tok, prep.pools, settings):
        if res["row"]:
            row = json.loads(res["row"])
            chat = tokenize_chat(tok, row["messages"])
            samples.append(Sample(row["id"], chat.input_ids, chat.labels))
    return samples, path


def real_tokens(batch: dict) -> int:
    """Tokens of a collated batch that belong to samples (its `real` entry, else every slot)."""
    return int(batch["real"]) if "real" in batch else int(batch["input_ids"].numel())


def plain_train(cfg, batches: list[dict], warmup: int = 1, threads: int | None = None) -> dict:
    """The plain PyTorch loop: `build_engine` without DeepSpeed, trained on `batches[:warmup]` (untimed)
    then on all of `batches` (timed), one optimizer step per micro-batch, the loss normalised by labelled
    tokens as in `worker.train_step`, gradients clipped as DeepSpeed clips them.

    Returns {steps, seconds, tokens (real), slot_tokens, tokens_per_s, losses, peak_rss_gb}.
    """
    import torch

    from longctx_core.train.engine import build_engine

    if threads:
        torch.set_num_threads(threads)
    sequence = batches[:warmup] + batches
    built = build_engine(cfg, total_steps=len(sequence), use_deepspeed=False)
    model, opt, sched = built.loss_model, built.optimizer, built.scheduler
    model.train()
    losses, seconds, tokens, slots = [], 0.0, 0, 0
    for i, batch in enumerate(sequence):
        b = {k: v for k, v in batch.items() if k in ("input_ids", "labels", "position_ids")}
        t0 = time.perf_counter()
        n_label = max(1, int((b["labels"][:, 1:] != -100).sum()))
        loss_sum, _ = model(**b)
        (loss_sum / n_label).backward()
        if cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(built.params, cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(loss_sum.detach()) / n_label)
        if i >= warmup:
            seconds += dt
            tokens += real_tokens(batch)
            slots += int(b["input_ids"].numel())
    return {
        "steps": len(batches),
        "seconds": seconds,
        "tokens": tokens,
        "slot_tokens": slots,
        "tokens_per_s": tokens / seconds,
        "losses": losses,
        "peak_rss_gb": peak_rss_gb(),
    }
