"""Sequence packing: efficiency on real and wide length distributions, and training tokens/s packed vs padded.

    python -m bench.bench_packing [--demo-samples 256] [--wide-samples 2000] [--train-samples 64]

1. Efficiency (real tokens / slot tokens) of `longctx_core.train.packing` on
   - the demo's distribution: samples composed by `data_gen` at `ray_jobs/configs/tiny_cpu.yaml`'s data config
     and tokenised with the chat template (`longctx_core.data.chat`), rows of `train.max_seq_len` tokens;
   - a wide distribution: lengths uniform in [1k, 32k] tokens, rows of 32,768 tokens.
   Both pack per `train.pack_window` window, as the training stream does (`estimate_packing`); baseline: one
   sample per row (what `train.packing=false` gives).
2. Training tokens/s of the tiny demo model (4-bit QLoRA, the project's `PackedCausalLM`) over the same
   composed samples of mixed lengths (targets uniform in 256-2048 tokens, rows of 2048; the composer cannot
   go much shorter: a record's documents and question alone take ~200): `--micro-batch` packed rows per
   micro-batch vs `--micro-batch` samples per micro-batch padded to their longest (the same row count and
   row-length cap per step). Three layouts:
   - packed, `longctx_packed` attention (causal SDPA per sample, no mask: `longctx_core.model.attention`);
   - packed, `sdpa` with transformers' dense block-diagonal mask (the previous path, reported as a line);
   - padded, `sdpa` (causal kernel, no mask).
   All in this process, interleaved (A B C A B C ..., `--repeats` passes each), each pass from the same
   initial weights, one epoch over the samples; tokens/s is the median over the passes, with its range.
   Both packed layouts train on the same batches, so their per-step losses must agree (`loss_max_abs_diff`).

Writes bench/results/packing.json: `value` the packed (`longctx_packed`) training tokens/s, `baseline` the
padded tokens/s, `ratio` their quotient; the dense-mask line is `train.packed_dense_mask`; the efficiencies
are in `efficiency`; `load_average` is the 1-minute load before and after the timed passes.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
from typing import NamedTuple

from bench.common import command_line, parse_args, print_table, quiet_process, write_result
from bench.fixtures import compose_samples, demo_config, plain_train

logger = logging.getLogger(__name__)


def efficiency(lengths: list[int], capacity: int, window: int) -> dict:
    """Packing efficiency of `lengths` in rows of `capacity` (FFD per window, as the training stream packs)
    next to one sample per row; returns {packed, one_per_row, rows, samples, samples_per_row}."""
    from longctx_core.train.packing import estimate_packing

    est = estimate_packing(lengths, capacity, window)
    return {
        "packed": est["efficiency"],
        "one_per_row": sum(min(n, capacity) for n in lengths) / (len(lengths) * capacity),
        "rows": est["rows"],
        "samples": est["samples"],
        "samples_per_row": est["samples_per_row"],
        "capacity": capacity,
        "window": window,
        "length_median": statistics.median(lengths),
    }


def wide_lengths(n: int, lo: int, hi: int, seed: int) -> list[int]:
    """`n` sample lengths drawn uniformly from [lo, hi] with `seed`."""
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def collate_micro_batches(rows: list[dict], batch: int, pad_id: int) -> list[dict]:
    """Micro-batches of `batch` consecutive rows, each padded to its longest row; returns collated batches
    (+ `real`: the tokens that belong to samples)."""
    from longctx_core.train.packing import collate_packed

    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    return [collate_packed(c, pad_id) | {"real": sum(len(r["input_ids"]) for r in c)} for c in chunks]


def batches_packed(samples, capacity: int, batch: int, pad_id: int, seed: int) -> list[dict]:
    """Packed rows of `samples` (FFD, seeded row order), `batch` rows per micro-batch; returns the batches."""
    from longctx_core.train.packing import pack_samples

    return collate_micro_batches([r.to_dict() for r in pack_samples(samples, capacity, seed)], batch, pad_id)


def batches_padded(samples, batch: int, pad_id: int) -> list[dict]:
    """One sample per row, `batch` rows per micro-batch padded to the longest; returns the batches."""
    from longctx_core.train.packing import one_per_row

    return collate_micro_batches([r.to_dict() for r in one_per_row(samples)], batch, pad_id)


def median_run(runs: list[dict]) -> dict:
    """The first of `runs` (same batches each) with seconds and tokens/s the median over all of them, and
    tokens/s per run and its [min, max] range."""
    speeds = [r["tokens_per_s"] for r in runs]
    return runs[0] | {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "tokens_per_s": statistics.median(speeds),
        "tokens_per_s_runs": speeds,
        "tokens_per_s_range": [min(speeds), max(speeds)],
    }


LAYOUTS = {  # name -> (packed rows?, model.attn_implementation)
    "packed": (True, "longctx_packed"),
    "packed_dense_mask": (True, "sdpa"),
    "padded": (False, "sdpa"),
}


OPTIONS = {
    "--demo-samples": (256, "samples at the demo's data config"),
    "--wide-samples": (2000, "lengths drawn from [1k, 32k]"),
    "--wide-capacity": (32768, "row length for the wide set"),
    "--train-samples": (32, "samples in the training comparison"),
    "--train-tokens": {
        "type": int,
        "nargs": 2,
        "default": (256, 2048),
        "metavar": ("MIN", "MAX"),
        "help": "target lengths of the training comparison's samples (mixed lengths, rows of MAX tokens)",
    },
    "--micro-batch": (2, "rows per micro-batch, both layouts"),
    "--warmup": (1, "untimed steps before each timed pass"),
    "--repeats": (3, "timed passes per layout, interleaved"),
}


def train_overrides(lo: int, hi: int) -> list[str]:
    """The training comparison's overrides of the demo config: samples of `lo`-`hi` tokens, rows of `hi`."""
    return [
        f"data.target_tokens={{min: {lo}, max: {hi}}}",
        f"train.max_seq_len={hi}",
        "model.lora.dropout=0.0",
    ]


class Sets(NamedTuple):
    demo: list  # samples composed at the demo's data config
    mixed: list  # samples composed for the training comparison
    wide: list[int]  # lengths drawn from [1k, 32k]
    seed: int  # the training comparison's run.seed (its packed rows' order)


def compose_sets(args) -> tuple[Sets, dict]:
    """The three sets; returns them and the packing efficiency of each."""
    cfg = demo_config()
    window = cfg.train.pack_window
    demo, _ = compose_samples(cfg, args.demo_samples)
    demo_eff = efficiency([len(s) for s in demo], cfg.train.max_seq_len, window)
    wide = wide_lengths(args.wide_samples, 1024, 32768, cfg.run.seed)
    wide_eff = efficiency(wide, args.wide_capacity, window)
    tcfg = demo_config(train_overrides(*args.train_tokens))
    mixed, _ = compose_samples(tcfg, args.train_samples)
    mixed_eff = efficiency([len(s) for s in mixed], args.train_tokens[1], window)
    return Sets(demo, mixed, wide, tcfg.run.seed), {
        "demo": demo_eff,
        "mixed": mixed_eff,
        "wide_1k_32k": wide_eff,
    }


def measure_layouts(args, mixed: list, seed: int) -> tuple[dict, list[float]]:
    """`--repeats` interleaved training passes of each layout over the `mixed` samples; returns each
    layout's runs and the 1-minute load average before and after them."""
    lo, hi = args.train_tokens
    pad_id = 0  # labels are -100 on padding and nothing real attends to it: the id does not matter
    batches = {
        True: batches_packed(mixed, hi, args.micro_batch, pad_id, seed),
        False: batches_padded(mixed, args.micro_batch, pad_id),
    }
    cfgs = {
        attn: demo_config([*train_overrides(lo, hi), f"model.attn_implementation={attn}"])
        for _, attn in LAYOUTS.values()
    }
    # Interleave the layouts (A-B-C-A-B-C ...) so load drifting on a shared machine hits all alike.
    runs = {name: [] for name in LAYOUTS}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, (packed_rows, attn) in LAYOUTS.items():
            runs[name].append(plain_train(cfgs[attn], batches[packed_rows], args.warmup))
    return runs, [load_before, os.getloadavg()[0]]


def efficiency_row(label: str, eff: dict) -> tuple:
    """A row of the efficiency table: `label` and `eff`'s figures."""
    return (
        label,
        eff["capacity"],
        eff["length_median"],
        eff["packed"],
        eff["one_per_row"],
        eff["samples_per_row"],
    )


def report_efficiency(args, sets: Sets, eff: dict) -> None:
    """The table of packing efficiencies of the three sets."""
    lo, hi = args.train_tokens
    print_table(
        "packing efficiency (real tokens / slot tokens), FFD per window as in training",
        [
            efficiency_row(f"demo ({len(sets.demo)} composed samples)", eff["demo"]),
            efficiency_row(f"mixed {lo}-{hi} ({len(sets.mixed)} composed)", eff["mixed"]),
            efficiency_row(f"wide 1k-32k uniform ({len(sets.wide)} lengths)", eff["wide_1k_32k"]),
        ],
        ("distribution", "row tokens", "median len", "packed", "1 per row", "samples/row"),
    )


def report_training(args, samples: int, train: dict, load: list[float]) -> None:
    """The table of the layouts' training tokens/s, and the packed losses' agreement."""
    lo, hi = args.train_tokens
    padded = train["padded"]
    print_table(
        f"training, tiny demo model (4-bit QLoRA), {samples} samples of {lo}-{hi} tokens",
        [
            (
                f"{label}, {args.micro_batch} per micro-batch",
                run["steps"],
                run["slot_tokens"],
                run["seconds"],
                run["tokens_per_s"],
                "{:.0f}-{:.0f}".format(*run["tokens_per_s_range"]),
                run["tokens_per_s"] / padded["tokens_per_s"],
            )
            for label, run in (
                ("packed rows, longctx_packed (per-sample SDPA)", train["packed"]),
                ("packed rows, sdpa + dense block-diagonal mask", train["packed_dense_mask"]),
                ("1 sample per row, sdpa (causal)", padded),
            )
        ],
        ("layout", "steps", "slot tokens", "median s", "median real tokens/s", "range", "vs padded"),
    )
    print(
        f"packed losses, longctx_packed vs dense mask: max |diff| {train['loss_max_abs_diff']:.2e}; "
        f"{args.repeats} interleaved passes per layout; 1-min load average {load[0]:.1f} -> {load[1]:.1f}"
    )


def main(argv=None) -> dict:
    args = parse_args("bench.bench_packing", __doc__, argv, OPTIONS)
    quiet_process()
    sets, eff = compose_sets(args)
    runs, load = measure_layouts(args, sets.mixed, sets.seed)
    packed, dense, padded = (median_run(runs[name]) for name in LAYOUTS)
    # Same batches, same initial weights: the two packed layouts must compute the same losses step by step.
    loss_diff = max(abs(a - b) for a, b in zip(packed["losses"], dense["losses"], strict=True))
    train = {
        "packed": packed,
        "packed_dense_mask": dense,
        "padded": padded,
        "ratio_dense_mask": dense["tokens_per_s"] / padded["tokens_per_s"],
        "loss_max_abs_diff": loss_diff,
        "micro_batch": args.micro_batch,
        "target_tokens": list(args.train_tokens),
        "repeats": args.repeats,
    }
    report_efficiency(args, sets, eff)
    report_training(args, len(sets.mixed), train, load)
    return write_result(
        "packing",
        value=packed["tokens_per_s"],
        unit="training tokens/s, packed rows with longctx_packed attention (tiny model, CPU, median)",
        baseline=padded["tokens_per_s"],
        command=command_line("bench.bench_packing", argv),
        efficiency=eff,
        train=train,
        load_average=load,
    )


if __name__ == "__main__":
    main()
