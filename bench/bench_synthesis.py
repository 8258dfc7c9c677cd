"""Synthesis throughput at 32k tokens: Ray Data with 2 actors vs a plain single-process loop.

    python -m bench.bench_synthesis [--samples 96] [--target 32768] [--workers 2]

Both sides compose the same planned samples (built-in corpus, the tiny BPE tokenizer) with the same
function (`data_gen.pipeline.compose_task`), in one run, and must produce identical rows. Reported:
samples/s per core for each (Ray: samples/s divided by the actors' cores), end to end (Ray including
actor start-up) and steady state (measured inside the actors, from the first composition's start to the
last one's end: what a long job sees).
Writes bench/results/synthesis.json; `value` is the Ray steady-state samples/s per core, `baseline` the
loop's samples/s (one core), `ratio` value / baseline (parallel efficiency per core).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

from bench.common import command_line, print_table, write_result
from bench.fixtures import plan_tasks

logger = logging.getLogger(__name__)


def _plan(target: int, samples: int, records: int):
    """Tokenizer, driver-side preparation and task list for `samples` samples of `target` tokens."""
    from data_gen.compose import PositionSpec
    from data_gen.pipeline import ComposeSettings
    from longctx_core.config import load_config

    cfg = load_config(
        None,
        [
            f"data.target_tokens=[{target}]",
            f"train.max_seq_len={target}",
            f"data.source.builtin.num_records={records}",
            "data.turns_per_sample=[3, 5]",
            "data.eval_fraction=0.05",
        ],
    )
    path, tok, prep, tasks = plan_tasks(cfg, samples)
    settings = ComposeSettings(PositionSpec(), target, cfg.run.seed, "builtin")
    return path, tok, prep, tasks, settings


def _time_loop(tasks, tok, prep, settings) -> tuple[float, list[dict]]:
    from data_gen.pipeline import compose_locally

    t0 = time.perf_counter()
    rows = list(compose_locally(tasks, tok, prep.pools, settings))
    return time.perf_counter() - t0, rows


def _time_ray(tasks, path, prep, settings, workers: int) -> tuple[float, float, list[dict]]:
    """(end-to-end seconds, steady-state samples/s, rows) for the Ray Data actor pool. Steady state is
    measured inside the actors: samples / (last composition's end - first composition's start)."""
    from data_gen.pipeline import compose_on_ray

    t0 = time.perf_counter()
    rows = list(compose_on_ray(tasks, path, prep.pools, settings, workers, batch_size=2))
    total = time.perf_counter() - t0
    span = max(r["finished"] for r in rows) - min(r["started"] for r in rows)
    return total, len(rows) / span, rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_synthesis", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--samples", type=int, default=96, help="samples per side")
    parser.add_argument("--target", type=int, default=32768, help="tokens per sample")
    parser.add_argument("--workers", type=int, default=2, help="Ray Data actors")
    parser.add_argument("--records", type=int, default=4000, help="built-in records (= distractor pool)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import ray

    path, tok, prep, tasks, settings = _plan(args.target, args.samples, args.records)
    loop_s, loop_rows = _time_loop(tasks, tok, prep, settings)
    if not ray.is_initialized():
        ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Actors each get a share of the cluster; per-core figures divide by the cores the actors occupy.
    cores = min(args.workers, int(ray.cluster_resources()["CPU"]))
    ray_s, steady, ray_rows = _time_ray(tasks, path, prep, settings, args.workers)
    ray.shutdown()

    same = sorted(r["row"] for r in loop_rows) == sorted(r["row"] for r in ray_rows)
    ok = [json.loads(r["row"]) for r in loop_rows if r["row"]]
    n_tokens = [r["n_tokens"] for r in ok]
    n = len(tasks)
    loop_rate = n / loop_s
    table = [
        ("plain loop (1 process)", 1, loop_s, loop_rate, loop_rate),
        (f"Ray Data, {args.workers} actors, end to end", cores, ray_s, n / ray_s, n / ray_s / cores),
        (f"Ray Data, {args.workers} actors, steady state", cores, float("nan"), steady, steady / cores),
    ]
    print_table(
        f"synthesis: {n} samples of {args.target} tokens (built-in corpus, tiny BPE tokenizer)",
        table,
        ("path", "cores", "seconds", "samples/s", "samples/s/core"),
    )
    print(
        f"tokens per sample: min {min(n_tokens)}  median {statistics.median(n_tokens)}  max {max(n_tokens)}"
    )
    print(f"identical rows from both paths: {same}; failed samples: {n - len(ok)}")
    command = command_line("bench.bench_synthesis", argv)
    return write_result(
        "synthesis",
        value=steady / cores,
        unit="samples/s/core (32k tokens)"
        if args.target == 32768
        else f"samples/s/core ({args.target} tokens)",
        baseline=loop_rate,
        command=command,
        end_to_end_per_core=n / ray_s / cores,
        speedup_end_to_end=loop_s / ray_s,
        speedup_steady=steady / loop_rate,
        samples=n,
        target_tokens=args.target,
        workers=args.workers,
        tokens={"min": min(n_tokens), "median": statistics.median(n_tokens), "max": max(n_tokens)},
        identical_rows=same,
        failed=n - len(ok),
    )


if __name__ == "__main__":
    main()
