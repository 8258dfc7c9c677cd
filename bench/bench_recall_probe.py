"""Can the toy base's model shape learn key-value lookup, and at what learning rate? A two-minute probe.

    python -m bench.bench_recall_probe [--lrs 0.002 0.001 0.0003] [--pairs 4] [--keys 64] [--steps 1500]
                                 [--shape num_hidden_layers=2 num_attention_heads=8 ...]

The toy base of `make repro` must find a document by the entity's name before it can answer; at 2 CPU cores
that content lookup was what it failed to learn. This probe isolates it: multi-query associative recall on
random tokens (`repro.base.samples.recall_rows`' layout, `--pairs` (key, value) pairs from a `--keys`-token
alphabet, then every key again followed by its value), the preset's model shape (`repro.base`, vocabulary
cut to the alphabet; `--shape` overrides its fields), the base's optimizer step (`repro.base.step`: AdamW,
betas 0.9/0.95, grad-norm clip 1) with a 50-step warm-up, one torch thread.
The loss is on the repeated values only; ln(keys) is chance, 0 is perfect lookup.

For each learning rate it prints the mean loss over the last 10% of steps, and writes
bench/results/recall_probe.json (the benchmarks' result format): `value` the best learning rate's final
loss, `baseline` the first learning rate's (2e-3 by default), `ratio` their quotient (below 1: the best one
learnt more).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time

logger = logging.getLogger(__name__)

PRESET = "ray_jobs/configs/repro_cpu.yaml"
WARMUP_STEPS = 50


def probe(lr: float, pairs: int, keys: int, steps: int, batch: int, shape: dict, seed: int = 0) -> dict:
    """Train a fresh model of the preset's base shape on associative recall; the loss curve and timing."""
    import torch

    from longctx_core.model.tiny import build_tiny_model, train_tokenizer
    from repro.base.model import model_shape
    from repro.base.samples import recall_row
    from repro.base.step import adamw, lr_schedule, optimizer_step, weighted_batch, weighted_loss
    from repro.config import load_repro_config

    torch.manual_seed(seed)
    b = load_repro_config(PRESET).repro.base
    tokenizer = train_tokenizer(["key value lookup probe"] * 8, 300)
    model = build_tiny_model(model_shape(b.model_copy(update={"vocab_size": 300, **shape})), tokenizer)
    opt = adamw(model, lr, weight_decay=0.0)
    factor = lr_schedule(WARMUP_STEPS, None)
    rng = random.Random(seed)
    alphabet = [i for i in range(len(tokenizer)) if i not in set(tokenizer.all_special_ids)][:keys]
    losses, started = [], time.monotonic()
    for step in range(steps):
        rows = [recall_row(rng, alphabet, pairs) for _ in range(batch)]
        loss, _ = weighted_loss(model, weighted_batch(rows, tokenizer.pad_token_id))
        optimizer_step(model, opt, loss, lr * factor(step))
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10) :]
    return {
        "lr": lr,
        "final_loss": sum(tail) / len(tail),
        "seconds": time.monotonic() - started,
        "curve": losses,
    }


def main(argv: list[str] | None = None) -> dict:
    import torch

    from bench.common import command_line, print_table, write_result

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.002, 0.001, 0.0003])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--shape", nargs="*", default=[], metavar="FIELD=INT", help="repro.base shape overrides")
    args = ap.parse_args(argv)
    shape = {k: int(v) for k, v in (item.split("=", 1) for item in args.shape)}
    torch.set_num_threads(1)
    runs = [probe(lr, args.pairs, args.keys, args.steps, args.batch, shape) for lr in args.lrs]
    chance = math.log(args.keys)
    rows = [(r["lr"], r["final_loss"], r["final_loss"] / chance, r["seconds"]) for r in runs]
    print_table(
        f"associative recall, {args.pairs} pairs of {args.keys} tokens, {args.steps} steps (chance {chance:.3f})",
        rows,
        ("lr", "final loss", "x chance", "seconds"),
    )
    best = min(runs, key=lambda r: r["final_loss"])
    return write_result(
        "recall_probe",
        best["final_loss"],
        "nats (repeated values)",
        runs[0]["final_loss"],
        command_line("bench.bench_recall_probe", argv),
        best_lr=best["lr"],
        shape=shape,
        chance=chance,
        runs=[
            {k: v for k, v in r.items() if k != "curve"} | {"curve_every_100": r["curve"][::100]}
            for r in runs
        ],
    )


if __name__ == "__main__":
    main()
