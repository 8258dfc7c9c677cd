"""Sequence packing: efficiency on real and wide length distributions, and training tokens/s packed vs padded.

    python -m bench.bench_packing [--demo-samples 256] [--wide-samples 2000] [--train-samples 64]

1. Efficiency (real tokens / slot tokens) of `longctx_core.packing` on
   - the demo's distribution: samples composed by `data_gen` at `ray_jobs/configs/demo_cpu.yaml`'s data config
     and tokenised with the chat template (`longctx_core.chat`), rows of `train.max_seq_len` tokens;
   - a wide distribution: lengths uniform in [1k, 32k] tokens, rows of 32,768 tokens.
   Both pack per `train.pack_window` window, as the training stream does (`estimate_packing`); baseline: one
   sample per row (what `train.packing=false` gives).
2. Training tokens/s of the tiny demo model (4-bit QLoRA, the project's `PackedCausalLM`) over the same
   mixed-length samples (256-2048 tokens): `--micro-batch` packed rows per micro-batch vs `--micro-batch`
   samples per micro-batch padded to their longest (the same row count and row-length cap per step); both
   in this process, alternating (`--repeats` passes each), each pass from the same initial weights, one
   epoch over the samples; tokens/s is the mean over the passes.

Writes bench/results/packing.json: `value` the packed training tokens/s, `baseline` the padded tokens/s,
`ratio` their quotient; the efficiencies are in `efficiency`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
from pathlib import Path

from bench.common import command_line, print_table, write_result

logger = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "ray_jobs" / "configs" / "demo_cpu.yaml"


def demo_config(overrides: list[str] = ()):
    """The CPU demo preset with `overrides` applied; returns the validated Config."""
    from longctx_core.config import load_config

    return load_config(DEMO_CONFIG, list(overrides))


def compose_samples(cfg, n: int) -> tuple[list, str]:
    """Compose `n` training samples with data_gen at `cfg`'s data config (in this process) and tokenise them
    with the chat template; returns ([packing.Sample], tokenizer path). Failed compositions are skipped."""
    from data_gen.compose import PositionSpec
    from data_gen.pipeline import (
        ComposeSettings,
        _base_overhead,
        compose_locally,
        load_tokenizer,
        plan_samples,
        prepare_records,
        tokenizer_path,
    )
    from longctx_core.chat import tokenize_chat
    from longctx_core.packing import Sample

    path = tokenizer_path(cfg)
    tok = load_tokenizer(path)
    prep = prepare_records(cfg, tok)
    overhead = {lang: _base_overhead(tok, lang) for lang in ("en", "zh")}
    tasks = plan_samples(prep, cfg.data, cfg.run.seed, "train", n, overhead)
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


def efficiency(lengths: list[int], capacity: int, window: int) -> dict:
    """Packing efficiency of `lengths` in rows of `capacity` (FFD per window, as the training stream packs)
    next to one sample per row; returns {packed, one_per_row, rows, samples, samples_per_row}."""
    from longctx_core.packing import estimate_packing

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


def micro_batches(rows: list[dict], batch: int, pad_id: int) -> list[dict]:
    """Micro-batches of `batch` consecutive rows, each padded to its longest row; returns collated batches
    (+ `real`: the tokens that belong to samples)."""
    from longctx_core.packing import collate

    chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    return [collate(c, pad_id) | {"real": sum(len(r["input_ids"]) for r in c)} for c in chunks]


def batches_packed(samples, capacity: int, batch: int, pad_id: int, seed: int) -> list[dict]:
    """Packed rows of `samples` (FFD, seeded row order), `batch` rows per micro-batch; returns the batches."""
    from longctx_core.packing import pack_samples

    return micro_batches([r.to_dict() for r in pack_samples(samples, capacity, seed)], batch, pad_id)


def batches_padded(samples, batch: int, pad_id: int) -> list[dict]:
    """One sample per row, `batch` rows per micro-batch padded to the longest; returns the batches."""
    from longctx_core.packing import one_per_row

    return micro_batches([r.to_dict() for r in one_per_row(samples)], batch, pad_id)


def mean_run(runs: list[dict]) -> dict:
    """The first of `runs` (same batches each) with seconds and tokens/s averaged over all of them."""
    return runs[0] | {
        "seconds": sum(r["seconds"] for r in runs) / len(runs),
        "tokens_per_s": sum(r["tokens_per_s"] for r in runs) / len(runs),
        "tokens_per_s_runs": [r["tokens_per_s"] for r in runs],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_packing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--demo-samples", type=int, default=256, help="samples at the demo's data config")
    parser.add_argument("--wide-samples", type=int, default=2000, help="lengths drawn from [1k, 32k]")
    parser.add_argument("--wide-capacity", type=int, default=32768, help="row length for the wide set")
    parser.add_argument("--train-samples", type=int, default=32, help="samples in the training comparison")
    parser.add_argument(
        "--train-tokens",
        type=int,
        nargs=2,
        default=(256, 2048),
        metavar=("MIN", "MAX"),
        help="target lengths of the training comparison's samples (mixed lengths, rows of MAX tokens)",
    )
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per micro-batch, both layouts")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per layout, alternating")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from bench.bench_overhead import plain_train

    cfg = demo_config()
    window = cfg.train.pack_window
    demo, _ = compose_samples(cfg, args.demo_samples)
    demo_eff = efficiency([len(s) for s in demo], cfg.train.max_seq_len, window)
    wide = wide_lengths(args.wide_samples, 1024, 32768, cfg.run.seed)
    wide_eff = efficiency(wide, args.wide_capacity, window)

    lo, hi = args.train_tokens
    tcfg = demo_config(
        [f"data.target_tokens={{min: {lo}, max: {hi}}}", f"train.max_seq_len={hi}", "model.lora.dropout=0.0"]
    )
    mixed, _ = compose_samples(tcfg, args.train_samples)
    mixed_eff = efficiency([len(s) for s in mixed], hi, window)
    pad_id = 0  # labels are -100 on padding and nothing real attends to it: the id does not matter
    layouts = {
        "packed": batches_packed(mixed, hi, args.micro_batch, pad_id, tcfg.run.seed),
        "padded": batches_padded(mixed, args.micro_batch, pad_id),
    }
    # Alternate the layouts (A-B-A-B ...) so load drifting on a shared machine hits both alike.
    runs = {name: [] for name in layouts}
    for _ in range(args.repeats):
        for name, batches in layouts.items():
            runs[name].append(plain_train(tcfg, batches, args.warmup))
    packed, padded = (mean_run(runs[name]) for name in ("packed", "padded"))

    print_table(
        "packing efficiency (real tokens / slot tokens), FFD per window as in training",
        [
            (
                f"demo ({len(demo)} composed samples)",
                demo_eff["capacity"],
                demo_eff["length_median"],
                demo_eff["packed"],
                demo_eff["one_per_row"],
                demo_eff["samples_per_row"],
            ),
            (
                f"mixed {lo}-{hi} ({len(mixed)} composed)",
                hi,
                mixed_eff["length_median"],
                mixed_eff["packed"],
                mixed_eff["one_per_row"],
                mixed_eff["samples_per_row"],
            ),
            (
                f"wide 1k-32k uniform ({len(wide)} lengths)",
                wide_eff["capacity"],
                wide_eff["length_median"],
                wide_eff["packed"],
                wide_eff["one_per_row"],
                wide_eff["samples_per_row"],
            ),
        ],
        ("distribution", "row tokens", "median len", "packed", "1 per row", "samples/row"),
    )
    print_table(
        f"training, tiny demo model (4-bit QLoRA), {len(mixed)} samples of {lo}-{hi} tokens",
        [
            (
                f"packed rows, {args.micro_batch} per micro-batch",
                packed["steps"],
                packed["slot_tokens"],
                packed["seconds"],
                packed["tokens_per_s"],
            ),
            (
                f"1 sample per row, {args.micro_batch} per micro-batch",
                padded["steps"],
                padded["slot_tokens"],
                padded["seconds"],
                padded["tokens_per_s"],
            ),
        ],
        ("layout", "steps", "slot tokens", "seconds", "real tokens/s"),
    )
    command = command_line("bench.bench_packing", argv)
    return write_result(
        "packing",
        value=packed["tokens_per_s"],
        unit="training tokens/s, packed (tiny model, CPU)",
        baseline=padded["tokens_per_s"],
        command=command,
        efficiency={"demo": demo_eff, "mixed": mixed_eff, "wide_1k_32k": wide_eff},
        train={
            "packed": packed,
            "padded": padded,
            "micro_batch": args.micro_batch,
            "target_tokens": [lo, hi],
        },
    )


if __name__ == "__main__":
    main()
