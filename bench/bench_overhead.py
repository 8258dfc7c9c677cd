"""Framework overhead: the Ray Train + DeepSpeed loop with 1 worker vs a plain single-process PyTorch loop.

    python -m bench.bench_overhead [--pairs 5] [--samples 64] [--steps 24] [--warmup 2] [--threads 2]

Both sides train the tiny demo model (4-bit QLoRA, `PackedCausalLM`, AdamW, the LR schedule, clipping) from
the same seed on the same packed rows (demo samples composed by data_gen, packed by `longctx_core.train.packing`),
in the same order, the same number of optimizer steps; the first `--warmup` steps are not timed.
- Ray side: a `TorchTrainer` with 1 worker running the project's worker phases (`setup_model`: DeepSpeed
  ZeRO-2 engine; `setup_data`: the Ray Data shard; `train_step`), timed around `train_step` only.
- Plain side: `bench.fixtures.plain_train` in a spawned process: the same `build_engine` without DeepSpeed,
  a torch optimizer step.
The two sides run as `--pairs` interleaved pairs, the order alternating (A B, B A, A B, ...), so load
drifting on a shared machine hits both sides alike; each pair gives a ratio, and the result is the median
ratio with its range (a single ratio on a shared 2-core machine moved between 0.67x and 1.27x).
Both use `--threads` torch threads: Ray caps a worker's OMP threads at its CPU reservation, which would
measure the reservation rather than the framework.

Writes bench/results/overhead.json: `value` the median Ray tokens/s, `baseline` the median plain tokens/s,
`ratio` their quotient, `pair_ratio` {median, min, max, each} (aim: median >= 0.9); `memory` holds the peak RSS per worker next to the plain process's; `loss_max_abs_diff` checks
that both sides really ran the same steps.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import (
    command_line,
    interleaved_pairs,
    local_ray,
    parse_args,
    print_table,
    quiet_process,
    spread,
    write_result,
)
from bench.fixtures import compose_samples, demo_config, plain_train
from longctx_core.train.memory import peak_rss_gb

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def _plain_in_child(cfg_dict: dict, rows: list[dict], warmup: int, threads: int) -> dict:
    """Spawned-process entry: collate `rows` one per micro-batch and run `plain_train`; returns its result."""
    from longctx_core.config import config_from_dict
    from longctx_core.train.packing import collate_packed

    cfg = config_from_dict(cfg_dict)
    batches = [collate_packed([r], 0) | {"real": len(r["input_ids"])} for r in rows]
    return plain_train(cfg, batches, warmup, threads)


def _ray_worker(loop_config: dict) -> None:
    """Ray Train loop: the project's worker phases, timing `train_step` over this shard's micro-batches."""
    import ray.train
    import torch

    from longctx_core.train.worker import Run, micro_batches, setup_data, setup_model, train_step

    torch.set_num_threads(loop_config["threads"])
    run = Run.from_loop_config(loop_config)
    built = setup_model(run)
    shard, pad_id = setup_data(built.hf_config)
    stream = micro_batches(shard, run.cfg.train)
    losses, seconds, tokens = [], 0.0, 0
    for i in range(loop_config["total_steps"]):
        micro = [next(stream)]
        t0 = time.perf_counter()
        stats = train_step(run, built, micro, pad_id)
        dt = time.perf_counter() - t0
        losses.append(stats["loss"])
        if i >= loop_config["warmup"]:
            seconds += dt
            tokens += stats["tokens"]
    stream.close()
    metrics = {"seconds": seconds, "tokens": tokens, "losses": losses, "peak_rss_gb": peak_rss_gb()}
    # Ray Train 2.x returns metrics to the driver only with a checkpoint: attach an empty one.
    with tempfile.TemporaryDirectory(prefix="bench-overhead-ckpt-") as folder:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def ray_train(cfg, rows: list[dict], warmup: int, threads: int, storage: str) -> dict:
    """Run `_ray_worker` on a 1-worker TorchTrainer over `rows[:warmup] + rows` (order preserved); returns
    {steps, seconds, tokens, tokens_per_s, losses, peak_rss_gb} as measured inside the worker."""
    import ray
    from ray.data import ExecutionOptions
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from longctx_core.infra.resources import cpus_per_actor
    from longctx_core.train.state import TRAIN_DATASET

    sequence = rows[:warmup] + rows
    ds = ray.data.from_items(sequence).materialize()
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "run_dir": storage,
            "total_steps": len(sequence),
            "warmup": warmup,
            "threads": threads,
        },
        # The reservation train() makes for one worker (half the cluster); the data is materialised.
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=False, resources_per_worker={"CPU": cpus_per_actor(1, 0.5, cap=8.0)}
        ),
        run_config=RunConfig(name="bench-overhead", storage_path=storage),
        datasets={TRAIN_DATASET: ds},
        dataset_config=DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
    )
    m = trainer.fit().metrics
    return m | {"steps": len(rows), "tokens_per_s": m["tokens"] / m["seconds"]}


def packed_rows(cfg, n_samples: int) -> list[dict]:
    """Demo samples composed with data_gen, packed into rows of `train.max_seq_len`; returns row dicts."""
    from longctx_core.train.packing import pack_samples

    samples, _ = compose_samples(cfg, n_samples)
    return [r.to_dict() for r in pack_samples(samples, cfg.train.max_seq_len, cfg.run.seed)]


OPTIONS = {
    "--pairs": (5, "interleaved (plain, Ray) pairs"),
    "--samples": (64, "demo samples composed and packed"),
    "--steps": (24, "timed optimizer steps (1 packed row each)"),
    "--warmup": (2, "untimed steps first (repeating the first rows)"),
    "--threads": (2, "torch threads on both sides"),
    "--seq-len": (2048, "train.max_seq_len (row length)"),
}


def prepare_environment() -> None:
    """Logging, and the environment the Ray side needs (before Ray is imported)."""
    quiet_process()
    # DeepSpeed's comm op compiles once into this cache (the one the tests use); Ray workers inherit it.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    # Ray Train gives a worker group 60 s to start; on a loaded 2-core machine importing torch in the
    # worker alone can take longer. Only takes effect for a Ray runtime this process starts.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


def run_plain(cfg, rows: list[dict], args) -> dict:
    """The plain side: `_plain_in_child` in a spawned process."""
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        job = pool.submit(_plain_in_child, cfg.model_dump(mode="json"), rows, args.warmup, args.threads)
        return job.result()


def run_ray(cfg, rows: list[dict], args) -> dict:
    """The Ray side: `ray_train` with its storage in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as storage:
        return ray_train(cfg, rows, args.warmup, args.threads, storage)


def measure_pairs(cfg, rows: list[dict], args) -> list[dict]:
    """`--pairs` interleaved (plain, Ray) pairs, each printed; returns {plain, ray, ratio} per pair."""
    pairs = []
    plain_side, ray_side = partial(run_plain, cfg, rows, args), partial(run_ray, cfg, rows, args)
    for pair in interleaved_pairs(args.pairs, plain_side, ray_side):
        plain, on_ray = pair.baseline, pair.candidate
        pairs.append({"plain": plain, "ray": on_ray, "ratio": on_ray["tokens_per_s"] / plain["tokens_per_s"]})
        print(
            f"pair {pair.index + 1}/{args.pairs} ({'plain, Ray' if pair.baseline_first else 'Ray, plain'}): plain "
            f"{plain['tokens_per_s']:.0f} tokens/s, Ray {on_ray['tokens_per_s']:.0f}, ratio {pairs[-1]['ratio']:.3f}",
            flush=True,
        )
    return pairs


def summarize(pairs: list[dict]) -> dict:
    """Median tokens/s of each side, the pair ratios' spread, the peak RSS of each side and the largest
    difference between the two sides' losses at the same step."""
    return {
        "plain_tps": statistics.median(p["plain"]["tokens_per_s"] for p in pairs),
        "ray_tps": statistics.median(p["ray"]["tokens_per_s"] for p in pairs),
        "pair_ratio": spread([p["ratio"] for p in pairs]),
        "peak_plain": max(p["plain"]["peak_rss_gb"] for p in pairs),
        "peak_ray": max(p["ray"]["peak_rss_gb"] for p in pairs),
        "diff": max(
            abs(a - b) for p in pairs for a, b in zip(p["plain"]["losses"], p["ray"]["losses"], strict=True)
        ),
    }


def report(args, steps: int, pairs: int, fig: dict) -> None:
    """The table of tokens/s and peak RSS, and the pair ratios' line."""
    print_table(
        f"framework overhead: {steps} timed steps on packed rows of {args.seq_len} tokens, "
        f"{args.threads} threads, tiny demo model (4-bit QLoRA), median of {pairs} interleaved pairs",
        [
            ("plain PyTorch loop (1 process)", fig["plain_tps"], fig["peak_plain"]),
            ("Ray Train + DeepSpeed ZeRO-2, 1 worker", fig["ray_tps"], fig["peak_ray"]),
        ],
        ("loop", "tokens/s", "peak RSS GiB"),
    )
    ratio = fig["pair_ratio"]
    print(
        f"pair ratios: median {ratio['median']:.3f}, range {ratio['min']:.3f}-{ratio['max']:.3f}; "
        f"max |loss diff| per step {fig['diff']:.2e}"
    )


def main(argv=None) -> dict:
    args = parse_args("bench.bench_overhead", __doc__, argv, OPTIONS)
    prepare_environment()
    overrides = [f"train.max_seq_len={args.seq_len}", "model.lora.dropout=0.0", "train.num_workers=1"]
    cfg = demo_config(overrides)  # dropout off: both sides must compute the same losses
    rows = packed_rows(cfg, args.samples)[: args.steps]
    with local_ray(2, log_to_driver=False):
        load_before = os.getloadavg()
        pairs = measure_pairs(cfg, rows, args)
    fig = summarize(pairs)
    report(args, len(rows), len(pairs), fig)
    return write_result(
        "overhead",
        value=fig["ray_tps"],
        unit="training tokens/s, Ray Train + DeepSpeed (1 worker) vs plain loop, medians of interleaved pairs",
        baseline=fig["plain_tps"],
        command=command_line("bench.bench_overhead", argv),
        pair_ratio=fig["pair_ratio"],
        pairs=[
            {"plain_tokens_per_s": p["plain"]["tokens_per_s"], "ray_tokens_per_s": p["ray"]["tokens_per_s"]}
            for p in pairs
        ],
        memory={"peak_rss_gb_per_worker": fig["peak_ray"], "peak_rss_gb_plain": fig["peak_plain"]},
        steps=len(rows),
        warmup=args.warmup,
        threads=args.threads,
        seq_len=args.seq_len,
        loss_max_abs_diff=fig["diff"],
        losses={"plain": pairs[0]["plain"]["losses"], "ray": pairs[0]["ray"]["losses"]},
        load_average={"before": load_before, "after": os.getloadavg()},
    )


if __name__ == "__main__":
    main()
