"""Synthesis throughput at 32k tokens: Ray Data with 2 actors vs a plain single-process loop.

    python -m bench.bench_synthesis [--pairs 3] [--samples 96] [--target 32768] [--workers 2] [--vocab qwen]

Both sides compose the same planned samples (built-in corpus; `--vocab qwen`, the default: the real Qwen2.5
vocabulary, so 32k means 32k Qwen tokens; `--vocab bpe`: the tiny kit's BPE) with the same
function (`data_gen.synthesis.compose_task`), in one run, and must produce identical rows. Reported:
samples/s per core for each (Ray: samples/s divided by the actors' cores), end to end (Ray including
actor start-up) and steady state (measured inside the actors, from the first composition's start to the
last one's end: what a long job sees). The two sides run as `--pairs` interleaved pairs, the order
alternating (loop first, then Ray first, ...), so a shared machine's load drift hits both alike; each pair
gives its speed-ups, reported as median and range.
Writes bench/results/synthesis.json; `value` is the median Ray steady-state samples/s per core, `baseline`
the loop's median samples/s (one core), `ratio` value / baseline (parallel efficiency per core);
`speedup_steady` / `speedup_end_to_end` hold {median, min, max, each}.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from functools import partial

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
from bench.cpu_share import ROLES, CpuSampler
from bench.fixtures import plan_tasks

logger = logging.getLogger(__name__)
PARTS = ("startup_s", "tail_s", "busy", "ray_sample_s", "loop_sample_s")
VOCABS = {"qwen": "real Qwen2.5 tokenizer, 151,643 BPE ranks", "bpe": "tiny BPE tokenizer"}


def _plan(target: int, samples: int, records: int, vocab: str):
    """Tokenizer, driver-side preparation and task list for `samples` samples of `target` tokens."""
    from data_gen.synthesis import ComposeSettings
    from longctx_core.config import load_config
    from longctx_core.data.compose import PositionSpec

    cfg = load_config(
        None,
        [
            f"data.target_tokens=[{target}]",
            f"train.max_seq_len={target}",
            f"data.source.builtin.num_records={records}",
            "data.turns_per_sample=[3, 5]",
            "data.eval_fraction=0.05",
            f"model.tiny.vocab={vocab}",
        ],
    )
    path, tok, prep, tasks = plan_tasks(cfg, samples)
    settings = ComposeSettings(PositionSpec(), target, cfg.run.seed, "builtin")
    return path, tok, prep, tasks, settings


def _time_loop(tasks, tok, prep, settings) -> tuple[float, float, list[dict]]:
    """(seconds, median seconds per composition, rows) of the plain loop, from cold token-count caches (as
    each pair's fresh actors start)."""
    from data_gen.synthesis import compose_locally
    from longctx_core.data.token_count import forget_pieces

    forget_pieces()
    t0 = time.perf_counter()
    rows = list(compose_locally(tasks, tok, prep.pools, settings))
    return time.perf_counter() - t0, statistics.median(r["finished"] - r["started"] for r in rows), rows


_BARRIER = None  # set in each plain process by its pool's initializer


def _keep_barrier(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _plain_part(args) -> list[tuple[float, float]]:
    """(started, finished) of each composition of one plain process's share (`--processes`); the processes
    start composing together, once every one has its tokenizer (as the actors' steady span assumes)."""
    part, spec, pools, settings = args
    from data_gen.light_tokenizer import LightTokenizer
    from data_gen.synthesis import compose_locally

    tok = LightTokenizer.from_spec(spec)
    _BARRIER.wait()
    return [(r["started"], r["finished"]) for r in compose_locally(part, tok, pools, settings)]


def _steady_processes(tasks, tok, prep, settings, workers: int) -> float:
    """Steady-state samples/s of `workers` plain spawned processes (no Ray) composing an interleaved share of
    `tasks` each, measured like the actors' (first composition's start to the last one's end): what this
    machine's cores give any parallel composer (`--processes`)."""
    import multiprocessing

    from data_gen.light_tokenizer import spec_of

    spec = spec_of(tok)
    parts = [(tasks[i::workers], spec, prep.pools, settings) for i in range(workers)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_keep_barrier, initargs=(ctx.Barrier(workers),)) as pool:
        spans = [t for part in pool.map(_plain_part, parts) for t in part]
    assert len(spans) == len(tasks)
    return len(spans) / (max(f for _, f in spans) - min(s for s, _ in spans))


def _time_ray(tasks, tok, prep, settings, workers: int) -> dict:
    """The Ray Data actor pool, timed and taken apart: end-to-end seconds, steady-state samples/s (measured
    inside the actors: samples / (last composition's end - first composition's start)), start-up (call to
    the first composition's start: actor processes, imports, tokenizer, pools), the tail (last composition's
    end to the last row in the driver), the actors' busy fraction over the steady span, and the median
    seconds one composition takes inside an actor. Steady speed-up = workers x busy x (loop's seconds per
    sample / an actor's): idle actors and slower compositions (cores shared with Ray's own processes) are
    the two ways it falls short of `workers`. `cores`: the cores each role used over the steady span
    (`bench.cpu_share`): what the actors got, and what the driver and Ray's own processes took."""
    from data_gen.synthesis import compose_on_ray

    t0 = time.time()
    with CpuSampler() as cpu:
        rows = list(compose_on_ray(tasks, tok, prep.pools, settings, workers, batch_size=2))
    end = time.time()
    first, last = min(r["started"] for r in rows), max(r["finished"] for r in rows)
    spent = [r["finished"] - r["started"] for r in rows]
    return {
        "cores": cpu.cores(first, last),
        "ray_s": end - t0,
        "steady": len(rows) / (last - first),
        "startup_s": first - t0,
        "tail_s": end - last,
        "busy": sum(spent) / (workers * (last - first)),
        "ray_sample_s": statistics.median(spent),
        "rows": rows,
    }


def _cores_line(cores: dict[str, float]) -> str:
    return ", ".join(f"{role} {cores[role]:.2f}" for role in ROLES) + f" (sum {sum(cores.values()):.2f})"


OPTIONS = {
    "--pairs": (3, "interleaved (loop, Ray) pairs"),
    "--samples": (96, "samples per side"),
    "--target": (32768, "tokens per sample"),
    "--workers": (2, "Ray Data actors"),
    "--records": (4000, "built-in records (= distractor pool)"),
    "--processes": {
        "action": "store_true",
        "help": "also time plain processes, no Ray actors (once before Ray starts, then in every pair)",
    },
    "--vocab": {
        "choices": ("qwen", "bpe"),
        "default": "qwen",
        "help": "tokenizer: real Qwen2.5 or the tiny kit's BPE",
    },
}


def _processes_before_ray(job: tuple, workers: int) -> float:
    """The plain processes' steady speed-up over the loop before any Ray runtime exists: what the cores give
    on their own."""
    loop_s = _time_loop(*job)[0]
    return _steady_processes(*job, workers) * loop_s / len(job[0])


def _print_pair(pair: int, args, n: int, timed: dict) -> None:
    """One pair's line (rates, speed-ups, where the time went) and the cores each role used."""
    print(
        f"pair {pair + 1}/{args.pairs}: loop {n / timed['loop_s']:.2f} samples/s, Ray steady {timed['steady']:.2f}"
        f" ({timed['speedup_steady']:.2f}x), end to end {n / timed['ray_s']:.2f} ({timed['speedup_end_to_end']:.2f}x);"
        f" start-up {timed['startup_s']:.2f} s, tail {timed['tail_s']:.2f} s, actors busy {timed['busy']:.0%},"
        f" {1000 * timed['ray_sample_s']:.0f} ms/sample in an actor vs {1000 * timed['loop_sample_s']:.0f} in the loop",
        flush=True,
    )
    print(f"  cores used over the steady span: {_cores_line(timed['cores'])}", flush=True)


def measure_pairs(job: tuple, args) -> tuple[list[dict], bool, list[dict]]:
    """`--pairs` interleaved (loop, Ray) pairs on `job` (tasks, tokenizer, preparation, settings), each printed;
    returns each pair's timings and speed-ups, whether both paths gave identical rows in every pair, and the
    last pair's loop rows."""
    n = len(job[0])
    pairs, same = [], True
    for pair in interleaved_pairs(
        args.pairs, partial(_time_loop, *job), partial(_time_ray, *job, args.workers)
    ):
        (loop_s, loop_sample_s, loop_rows), timed = pair.baseline, pair.candidate
        ray_rows = timed.pop("rows")
        timed |= {"loop_s": loop_s, "loop_sample_s": loop_sample_s}
        if args.processes:
            timed["speedup_processes"] = _steady_processes(*job, args.workers) * loop_s / n
        same = same and sorted(r["row"] for r in loop_rows) == sorted(r["row"] for r in ray_rows)
        timed |= {
            "speedup_steady": timed["steady"] * loop_s / n,
            "speedup_end_to_end": loop_s / timed["ray_s"],
        }
        pairs.append(timed)
        _print_pair(pair.index, args, n, timed)
    return pairs, same, loop_rows


def summarize(pairs: list[dict], n: int, processes: bool) -> dict:
    """Medians over the pairs: samples/s of the loop, of Ray end to end and steady, the speed-ups' spread, the
    parts the steady speed-up is made of and the cores each role used."""
    return {
        "loop_rate": statistics.median(n / p["loop_s"] for p in pairs),
        "ray_rate": statistics.median(n / p["ray_s"] for p in pairs),
        "steady": statistics.median(p["steady"] for p in pairs),
        "speedup_steady": spread([p["speedup_steady"] for p in pairs]),
        "speedup_end_to_end": spread([p["speedup_end_to_end"] for p in pairs]),
        "parts": {k: statistics.median(p[k] for p in pairs) for k in PARTS},
        "cores_used": {r: statistics.median(p["cores"][r] for p in pairs) for r in ROLES},
        "speedup_processes": spread([p["speedup_processes"] for p in pairs]) if processes else None,
    }


def report_rates(args, n: int, pairs: int, cores: int, fig: dict, no_ray: float | None) -> None:
    """The table of samples/s and the speed-ups' lines."""
    loop_rate, ray_rate, steady = fig["loop_rate"], fig["ray_rate"], fig["steady"]
    table = [
        ("plain loop (1 process)", 1, loop_rate, loop_rate),
        (f"Ray Data, {args.workers} actors, end to end", cores, ray_rate, ray_rate / cores),
        (f"Ray Data, {args.workers} actors, steady state", cores, steady, steady / cores),
    ]
    print_table(
        f"synthesis: {n} samples of {args.target} tokens (built-in corpus, {VOCABS[args.vocab]}), medians of "
        f"{pairs} interleaved pairs",
        table,
        ("path", "cores", "samples/s", "samples/s/core"),
    )
    up_steady, up_e2e = fig["speedup_steady"], fig["speedup_end_to_end"]
    print(
        f"speed-up steady: median {up_steady['median']:.2f}x (range {up_steady['min']:.2f}-{up_steady['max']:.2f}); "
        f"end to end: median {up_e2e['median']:.2f}x (range {up_e2e['min']:.2f}-{up_e2e['max']:.2f})"
    )
    plain = fig["speedup_processes"]
    if plain:
        print(
            f"{args.workers} plain processes (no actors; Ray runtime up), steady: median {plain['median']:.2f}x "
            f"the loop (range {plain['min']:.2f}-{plain['max']:.2f})"
            + (f"; before Ray started: {no_ray:.2f}x" if no_ray is not None else "")
        )


def report_parts(args, n: int, fig: dict, n_tokens: list[int], same: bool, failed: int) -> None:
    """Where the steady speed-up goes, the cores used, the sample lengths and the rows' check."""
    parts = fig["parts"]
    print(
        f"where the steady speed-up goes (medians): {args.workers} actors x busy {parts['busy']:.2f} x loop/actor "
        f"time per sample {parts['loop_sample_s'] / parts['ray_sample_s']:.2f}; end to end adds start-up "
        f"{parts['startup_s']:.2f} s and tail {parts['tail_s']:.2f} s to a {n / fig['steady']:.2f} s steady run"
    )
    print(f"cores used over the steady span (medians): {_cores_line(fig['cores_used'])}")
    print(
        f"tokens per sample: min {min(n_tokens)}  median {statistics.median(n_tokens)}  max {max(n_tokens)}"
    )
    print(f"identical rows from both paths: {same}; failed samples: {failed}")


def main(argv=None) -> dict:
    args = parse_args("bench.bench_synthesis", __doc__, argv, OPTIONS)
    quiet_process()
    import ray

    _, tok, prep, tasks, settings = _plan(args.target, args.samples, args.records, args.vocab)
    job = (tasks, tok, prep, settings)
    # The plain processes once before any Ray runtime exists (only where none is up yet).
    no_ray = None
    if args.processes and not ray.is_initialized():
        no_ray = _processes_before_ray(job, args.workers)
        print(f"before Ray starts: {args.workers} plain processes, steady {no_ray:.2f}x the loop", flush=True)
    with local_ray(args.workers):
        # Actors each get a share of the cluster; per-core figures divide by the cores the actors occupy.
        cores = min(args.workers, int(ray.cluster_resources()["CPU"]))
        load_before = os.getloadavg()
        pairs, same, loop_rows = measure_pairs(job, args)
    n = len(tasks)
    fig = summarize(pairs, n, args.processes)
    ok = [json.loads(r["row"]) for r in loop_rows if r["row"]]
    n_tokens = [r["n_tokens"] for r in ok]
    report_rates(args, n, len(pairs), cores, fig, no_ray)
    report_parts(args, n, fig, n_tokens, same, n - len(ok))
    return write_result(
        "synthesis",
        value=fig["steady"] / cores,
        unit=f"samples/s/core ({args.target} {args.vocab} tokens)",
        baseline=fig["loop_rate"],
        command=command_line("bench.bench_synthesis", argv),
        end_to_end_per_core=fig["ray_rate"] / cores,
        speedup_end_to_end=fig["speedup_end_to_end"],
        speedup_steady=fig["speedup_steady"],
        samples=n,
        target_tokens=args.target,
        workers=args.workers,
        vocab=args.vocab,
        tokens={"min": min(n_tokens), "median": statistics.median(n_tokens), "max": max(n_tokens)},
        identical_rows=same,
        parts=fig["parts"],
        cores_used=fig["cores_used"],
        speedup_processes=fig["speedup_processes"],
        speedup_processes_before_ray=no_ray,
        failed=n - len(ok),
        load_average={"before": load_before, "after": os.getloadavg()},
    )


if __name__ == "__main__":
    main()
