"""The product path's training speed on one GPU, beside the bare step of the same shape.

    python -m bench.gpu.product --run runs/gpu-product [--bare OUT/gpu_throughput_0.5b.json] [--out OUT]

Reads the `train/metrics.jsonl` that `ray_jobs.train` wrote for the run (one Ray Train worker, DeepSpeed,
packing, checkpointing and the per-step report included) and writes `gpu_product_<run name>.json`: `value`
the median tokens/s of the steps after the first `--skip`, `baseline` the bare step's tokens/s
(`bench.gpu.gpu_throughput`, same shape and row length) when its JSON is given, `ratio` their quotient: what
the framework costs on a GPU. Also the median MFU, the peak memory and the stage's wall time from its start
event to its last step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def summarize(metrics: Path, skip: int) -> dict:
    """Median tokens/s per worker (the logged figure counts every worker's tokens), MFU and step time over
    the steps after the first `skip`, the peak memory, and the stage's wall time, from a train
    `metrics.jsonl` (its last attempt). ValueError when no step is left to time."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "step" in r and "tokens_per_s" in r]
    timed = [r for r in steps if r["step"] > skip]
    if not timed:
        raise ValueError(f"{metrics}: {len(steps)} step(s), none after the first {skip} to time")
    starts = [r for r in rows if r.get("event") == "start"]
    start, world = (starts[-1]["time"], starts[-1]["world_size"]) if starts else (steps[0]["time"], 1)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed) / world,
        "workers": world,
        "step_time_s": statistics.median(r["step_time_s"] for r in timed),
        "mfu": statistics.median(mfus) if mfus else None,
        "peak_mem_gb": max(r.get("peak_mem_gb") or 0.0 for r in steps),
        "steps": len(steps),
        "timed_steps": len(timed),
        "packing_efficiency": statistics.median(r["packing_efficiency"] for r in timed),
        "stage_wall_s": steps[-1]["time"] - start,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.product", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder (run.storage_path/run.name)")
    parser.add_argument("--bare", default=None, help="gpu_throughput JSON of the same shape (the baseline)")
    parser.add_argument("--skip", type=int, default=2, help="untimed first steps (compilation, allocator)")
    parser.add_argument("--out", default="bench/results/gpu", help="result folder")
    args = parser.parse_args(argv)
    from bench.common import machine_info
    from longctx_core.infra.layout import RunLayout

    run = Path(args.run)
    figures = summarize(RunLayout(run).train.metrics, args.skip)
    bare = json.loads(Path(args.bare).read_text()) if args.bare and Path(args.bare).is_file() else None
    base = bare["value"] if bare else None
    record = {
        "name": f"gpu_product_{run.name}",
        "value": figures["tokens_per_s"],
        "unit": "training tokens/s per GPU through ray_jobs.train (1 Ray Train worker, DeepSpeed, packed rows)",
        "baseline": base,
        "ratio": figures["tokens_per_s"] / base if base else None,
        "command": "python -m bench.gpu.product " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        **figures,
        "bare": {k: bare.get(k) for k in ("name", "value", "mfu", "peak_mem_gb", "attn_implementation")}
        if bare
        else None,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{record['name']}.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    mfu = f"{figures['mfu']:.1%}" if figures["mfu"] is not None else "n/a"
    vs = f", {record['ratio']:.2f}x the bare step ({base:.0f})" if base else ""
    print(
        f"product path {run.name}: {figures['tokens_per_s']:.0f} tokens/s per GPU (median of {figures['timed_steps']}"
        f" steps){vs}, MFU {mfu}, peak memory {figures['peak_mem_gb']:.1f} GiB, stage {figures['stage_wall_s']:.0f} s"
    )
    return record


if __name__ == "__main__":
    main()
