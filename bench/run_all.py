"""Run every CPU benchmark in sequence (`make bench`), print their tables and a final summary.

    python -m bench.run_all [--only packing overhead] [--smoke] [--results DIR]

Each benchmark's `main` runs in its own spawned process, so one's Ray runtime, threads and peak RSS do
not leak into the next. Results land in bench/results/<name>.json (or `--results`). Exit status 1 when any
benchmark failed (the others still run). `--smoke` passes each benchmark its tiny sizes (a quick check that
they all run; the figures then mean nothing).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

from bench.common import print_table

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]

# a miniature toy base for the toybase smoke run
TOYBASE_SMOKE = [
    "repro.base.hidden_size=32",
    "repro.base.intermediate_size=64",
    "repro.base.num_hidden_layers=1",
    "repro.base.vocab_size=400",
    "repro.base.worlds=2",
    "repro.base.records_per_world=60",
    "repro.base.batch_size=4",
    "repro.base.min_tokens=224",
    "data.source.builtin.num_records=120",
    "eval.qa.num_questions=4",
    "eval.qa.pool_records=120",
]

# name -> (module, smoke arguments); in the order they run.
BENCHMARKS = {
    "synthesis": (
        "bench.bench_synthesis",
        ["--pairs", "1", "--samples", "8", "--target", "4096", "--records", "400"],
    ),
    "packing": (
        "bench.bench_packing",
        [
            "--demo-samples",
            "12",
            "--wide-samples",
            "200",
            "--train-samples",
            "6",
            "--warmup",
            "0",
            "--repeats",
            "1",
        ],
    ),
    "import": ("bench.bench_import", ["--rows", "200", "--files", "2"]),
    "overhead": ("bench.bench_overhead", ["--pairs", "1", "--samples", "6", "--steps", "2", "--warmup", "1"]),
    "longctx": ("bench.bench_longctx", ["--multiples", "1", "2", "--steps", "1", "--warmup", "0"]),
    "toybase": (
        "bench.bench_toybase",
        ["--steps", "3", "--pairs", "1", "--first", "0", "--set", *TOYBASE_SMOKE],
    ),
    "eval": ("bench.bench_eval", ["--smoke", "--lengths", "448", "--questions", "2", "--new-tokens", "8"]),
    "demo": (
        "bench.bench_demo",
        [
            "--set",
            "model.name_or_path=tiny",
            "model.quantization.load_in_4bit=false",
            "data.num_samples=8",
            "train.max_steps=2",
            "eval.qa.lengths=[448]",
            "eval.qa.num_questions=2",
            "eval.qa.pool_records=200",
            "data.source.builtin.num_records=200",
        ],
    ),
    "loss_memory": (
        "bench.bench_loss_memory",
        ["--lengths", "512", "2048", "--vocab", "16384", "--hidden", "32", "--chunk-size", "128"],
    ),
}


def _child(module: str, argv: list[str], results: str | None) -> dict:
    """Spawned-process entry: point bench.common at `results` (if given) and run `module.main(argv)`;
    returns the record it wrote."""
    if results:
        import bench.common

        bench.common.RESULTS = Path(results)
    return importlib.import_module(module).main(argv)


def run_one(name: str, smoke: bool, results: str | None) -> dict:
    """Run benchmark `name` in a fresh process; returns {name, ok, seconds, record | error}."""
    module, smoke_args = BENCHMARKS[name]
    argv = list(smoke_args) if smoke else []
    t0 = time.perf_counter()
    try:
        with concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            record = pool.submit(_child, module, argv, results).result()
        return {"name": name, "ok": True, "seconds": time.perf_counter() - t0, "record": record}
    except Exception as exc:  # noqa: BLE001 - reported in the summary and the exit status, never swallowed
        logger.error("benchmark %s failed: %s: %s", name, type(exc).__name__, exc)
        return {
            "name": name,
            "ok": False,
            "seconds": time.perf_counter() - t0,
            "error": f"{type(exc).__name__}: {exc}",
        }


def summary_rows(outcomes: list[dict]) -> list[tuple]:
    """One summary row per benchmark: name, status, value, unit, baseline, ratio, seconds."""
    rows = []
    for o in outcomes:
        if o["ok"]:
            r = o["record"]
            rows.append((o["name"], "ok", r["value"], r["unit"], r["baseline"], r["ratio"], o["seconds"]))
        else:
            rows.append((o["name"], "FAILED", "-", o["error"][:80], "-", "-", o["seconds"]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that they run")
    parser.add_argument("--results", default=None, help="write results here instead of bench/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    load = os.getloadavg()[0]
    outcomes = []
    for name in args.only or list(BENCHMARKS):
        logger.info("running benchmark %s%s", name, " (smoke sizes)" if args.smoke else "")
        outcomes.append(run_one(name, args.smoke, args.results))
    print_table(
        f"benchmark summary (load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
        f"{os.cpu_count()} CPUs)",
        summary_rows(outcomes),
        ("benchmark", "status", "value", "unit", "baseline", "ratio", "seconds"),
    )
    failed = [o["name"] for o in outcomes if not o["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
