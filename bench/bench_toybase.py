"""Toy base build speed: steps/s of the repro's toy-base training loop with packed rows (transformers'
block-diagonal mask from restarting positions, SDPA) and samples composed ahead by a worker
(`repro.base.pack`, `repro.base.prefetch`, the preset) / one sample per padded row, composed in line (both
off), on the same rows from the same initial weights.

    python -m bench.bench_toybase [--seed 2] [--first 2000] [--steps 40] [--pairs 2] [--prefetch 2]
                                  [--packed-attn sdpa|longctx_packed] [--set repro.base.threads=1 ...]

The rows are the build's own (`repro.base.train.rows_for_step`: the preset's worlds, tokenizer and
curriculum; `--first` 2000 is past the curriculum, samples up to L0), so the figure is what a build at the
preset gains per step. Pairs are interleaved (baseline first, then the other, then the other way round);
the record has each run, the median steps/s of each side, the slot tokens (padded or packed) against the
real ones, and the largest loss difference between the two sides' steps (the same rows and weights: they
must train alike).
"""

from __future__ import annotations

import logging
import statistics
import time
from functools import partial

from bench.common import command_line, interleaved_pairs, parse_args, print_table, write_result

logger = logging.getLogger(__name__)

PRESET = "ray_jobs/configs/repro_cpu.yaml"


def setup(seed: int, overrides: list[str]):
    """(config, tokenizer, worlds, initial weights) of the preset's toy base for `seed`."""
    from longctx_core.model.tiny import build_tiny_model, train_tokenizer
    from repro.base.model import model_shape, tokenizer_texts
    from repro.base.worlds import base_worlds, heldout_questions
    from repro.config import load_repro_config, seed_config

    cfg = seed_config(load_repro_config(PRESET, overrides), seed)
    excluded = heldout_questions(cfg)
    tokenizer = train_tokenizer(tokenizer_texts(cfg, excluded), cfg.repro.base.vocab_size)
    worlds, _ = base_worlds(cfg, tokenizer, excluded)
    init = build_tiny_model(model_shape(cfg.repro.base), tokenizer).state_dict()
    return cfg, tokenizer, worlds, init


def run(
    cfg, tokenizer, worlds, init: dict, first: int, steps: int, pack: bool, prefetch: int, attn: str = "sdpa"
) -> dict:
    """`steps` training steps from `init` on the rows of steps first, first+1, ...; steps/s, losses and the
    real and slot tokens of the batches (counted after the timed steps)."""
    import torch

    from longctx_core.model.attention import resolve_attn_implementation
    from longctx_core.model.tiny import build_tiny_model
    from repro.base.feed import RowFeed
    from repro.base.model import model_shape
    from repro.base.step import adamw, weighted_batch
    from repro.base.train import rows_for_step, train_step

    b = cfg.repro.base
    torch.set_num_threads(b.threads)
    model = build_tiny_model(model_shape(b), tokenizer)
    model.load_state_dict(init)
    model.set_attn_implementation(resolve_attn_implementation(attn))
    model.config.use_cache = False
    model.train()
    opt = adamw(model, b.lr, b.weight_decay)
    pack_to = b.context if pack else None
    losses, batches = [], []
    with RowFeed(lambda step: rows_for_step(worlds, tokenizer, b, step), first, prefetch) as feed:
        started = time.perf_counter()
        for step in range(first, first + steps):
            rows = feed.take(step)
            loss, *_ = train_step(model, opt, rows, tokenizer.pad_token_id, b.lr, pack_to)
            losses.append(loss)
            batches.append(rows)
        seconds = time.perf_counter() - started
    return {
        "pack": pack,
        "prefetch": prefetch,
        "attn": attn,
        "steps_per_s": steps / seconds,
        "seconds": seconds,
        "real_tokens": sum(len(row[0]) for rows in batches for row in rows),
        "slot_tokens": sum(
            weighted_batch(rows, tokenizer.pad_token_id, pack_to)["input_ids"].numel() for rows in batches
        ),
        "losses": losses,
    }


OPTIONS = {
    "--seed": (2, "the toy base's seed (worlds, weights, rows)"),
    "--first": (2000, "first step whose rows are trained on"),
    "--steps": (40, "timed steps per run"),
    "--pairs": (2, "interleaved (baseline, packed) pairs"),
    "--prefetch": (2, "steps composed ahead on the packed side"),
    "--packed-attn": {
        "default": "sdpa",
        "choices": ["sdpa", "longctx_packed"],
        "help": "attention of the packed side: sdpa (transformers' dense block-diagonal mask, what the build uses) "
        "or the library's longctx_packed (one SDPA call per sample)",
    },
    "--set": {
        "nargs": "*",
        "default": [],
        "help": "dotted overrides of the preset (smaller sizes for a smoke run)",
    },
}


def run_logged(base: tuple, args, pack: bool, prefetch: int, attn: str) -> dict:
    """`run` on `base` (config, tokenizer, worlds, initial weights) from `--first` for `--steps`, logged."""
    r = run(*base, args.first, args.steps, pack, prefetch, attn)
    logger.info("toybase bench: pack=%s prefetch=%d %.2f steps/s", pack, prefetch, r["steps_per_s"])
    return r


def measure_pairs(base: tuple, args) -> list[dict]:
    """`--pairs` interleaved (padded in line, packed composed ahead) pairs; returns the runs in the order
    they ran."""
    padded = partial(run_logged, base, args, False, 0, "sdpa")
    packed = partial(run_logged, base, args, True, args.prefetch, args.packed_attn)
    return [r for pair in interleaved_pairs(args.pairs, padded, packed) for r in pair.in_order]


def report(args, cfg, runs: list[dict], ratio: float, loss_diff: float) -> None:
    """The table of every run, and the ratio's line."""
    print_table(
        f"toy base steps/s (seed {args.seed}, steps {args.first}-{args.first + args.steps - 1}, "
        f"batch {cfg.repro.base.batch_size}, L0 {cfg.repro.base.context})",
        [
            (
                f"packed ({r['attn']}), {r['prefetch']} composed ahead" if r["pack"] else "padded, in line",
                r["steps_per_s"],
                r["real_tokens"] / r["slot_tokens"],
                r["seconds"],
            )
            for r in runs
        ],
        ("layout", "steps/s", "real/slot tokens", "seconds"),
    )
    print(f"ratio {ratio:.3f}; largest loss difference between the sides' steps {loss_diff:.2e}")


def main(argv=None) -> dict:
    args = parse_args("bench.bench_toybase", __doc__, argv, OPTIONS)
    base = setup(args.seed, args.set)
    cfg = base[0]
    runs = measure_pairs(base, args)
    padded = [r for r in runs if not r["pack"]]
    packed = [r for r in runs if r["pack"]]
    value = statistics.median(r["steps_per_s"] for r in packed)
    baseline = statistics.median(r["steps_per_s"] for r in padded)
    loss_diff = max(abs(a - b) for a, b in zip(packed[0]["losses"], padded[0]["losses"], strict=True))
    report(args, cfg, runs, value / baseline, loss_diff)
    return write_result(
        "toybase",
        value,
        "steps/s (packed, composed ahead)",
        baseline,
        command_line("bench.bench_toybase", argv),
        seed=args.seed,
        packed_attn=args.packed_attn,
        first_step=args.first,
        steps=args.steps,
        batch_size=cfg.repro.base.batch_size,
        context=cfg.repro.base.context,
        slot_efficiency={
            "padded": padded[0]["real_tokens"] / padded[0]["slot_tokens"],
            "packed": packed[0]["real_tokens"] / packed[0]["slot_tokens"],
        },
        loss_max_abs_diff=loss_diff,
        runs=[{k: v for k, v in r.items() if k != "losses"} for r in runs],
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
