"""Smoke tests of the benchmarks at tiny sizes: each runs for real and writes a well-formed result.

No timing is asserted (the figures of a tiny run mean nothing); what is checked is the result's structure,
that its value and baseline are the candidate's and the baseline's figures as recomputed here from the raw
measurements it records (seconds, token counts, per-run figures) and its ratio their quotient, on the right
side of 1, and the invariants each benchmark rests on (same steps on both sides, packing efficiency bounds).
Results go to a temporary folder, never bench/results/.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("name", "value", "unit", "baseline", "ratio", "command", "measured_at", "machine")
MACHINE = ("python", "platform", "cpus", "torch", "torch_threads", "gpu")


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """bench.common writes here for this test (the benchmarks look RESULTS up when they write)."""
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    return tmp_path


def check_record(path: Path, name: str, value: float, baseline: float) -> dict:
    """Load a result file and check it against facts the caller derived from the record's raw measurements.

    `value` and `baseline` are the candidate's and the baseline's figures as the test recomputes them (from
    per-run seconds and token counts, the measured rows...), not the record's own `value`/`baseline`. Checks
    the schema every benchmark shares (bench/README.md: name, value, unit, baseline, ratio, the command that
    reproduces it, when and on what it was measured), that value and baseline are those two figures, both
    positive and finite, and that ratio is candidate over baseline: above 1 exactly when the candidate's
    figure is the larger. Returns the record."""
    record = json.loads(path.read_text())
    missing = [key for key in REQUIRED if key not in record]
    assert not missing, f"{path.name} lacks {missing}"
    assert record["name"] == name == path.stem
    assert isinstance(record["unit"], str) and record["unit"].strip()
    assert re.fullmatch(r"python -m (bench|repro)\.[a-z_.]+( .+)?", record["command"]), record["command"]
    time.strptime(record["measured_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert set(MACHINE) <= set(record["machine"]) and record["machine"]["cpus"] >= 1
    for figure in (value, baseline):
        assert isinstance(figure, (int, float)) and math.isfinite(figure) and figure > 0, figure
    assert record["value"] == pytest.approx(value, rel=1e-9), "value is not the candidate's figure"
    assert record["baseline"] == pytest.approx(baseline, rel=1e-9), "baseline is not the baseline's figure"
    ratio = record["ratio"]
    assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    assert ratio == pytest.approx(value / baseline, rel=1e-9)
    assert (ratio > 1) == (value > baseline) and (ratio < 1) == (value < baseline)
    return record


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_packing_smoke(results):
    from bench.bench_packing import main

    argv = ["--demo-samples", "6", "--wide-samples", "200", "--train-samples", "4", "--warmup", "0"]
    main(argv)
    raw = _read(results / "packing.json")["train"]
    # median of 3 timed passes on the same rows: the real tokens over the median pass's seconds
    packed, padded = raw["packed"], raw["padded"]
    record = check_record(
        results / "packing.json",
        "packing",
        packed["tokens"] / packed["seconds"],
        padded["tokens"] / padded["seconds"],
    )
    for run in (packed, padded):
        assert len(run["tokens_per_s_runs"]) == 3
        assert run["tokens_per_s_range"] == [min(run["tokens_per_s_runs"]), max(run["tokens_per_s_runs"])]
    for dist in ("demo", "mixed", "wide_1k_32k"):
        eff = record["efficiency"][dist]
        assert 0 < eff["one_per_row"] <= eff["packed"] <= 1, dist
        assert eff["rows"] <= eff["samples"]
    # Both layouts trained on exactly the same real tokens.
    train = record["train"]
    assert train["packed"]["tokens"] == train["padded"]["tokens"] > 0
    assert all(math.isfinite(x) for x in train["packed"]["losses"] + train["padded"]["losses"])


@pytest.mark.e2e
def test_overhead_smoke(results, ray_local):
    from bench.bench_overhead import main

    main(["--pairs", "2", "--samples", "4", "--steps", "1", "--warmup", "1"])
    pairs = _read(results / "overhead.json")["pairs"]
    record = check_record(
        results / "overhead.json",
        "overhead",
        statistics.median(p["ray_tokens_per_s"] for p in pairs),
        statistics.median(p["plain_tokens_per_s"] for p in pairs),
    )
    # two interleaved pairs (plain first, then Ray first), the medians and the per-pair ratios
    ratios = record["pair_ratio"]
    assert len(ratios["each"]) == len(record["pairs"]) == 2
    assert ratios["min"] <= ratios["median"] <= ratios["max"] and all(r > 0 for r in ratios["each"])
    # Same model, seed, rows and order on both sides: the Ray + DeepSpeed steps compute the plain loop's losses.
    assert len(record["losses"]["ray"]) == len(record["losses"]["plain"]) == 2
    assert record["loss_max_abs_diff"] < 1e-4
    mem = record["memory"]
    assert mem["peak_rss_gb_per_worker"] > 0 and mem["peak_rss_gb_plain"] > 0
    assert ray_local.is_initialized()  # a benchmark never shuts down a Ray runtime it did not start


def test_eval_smoke(results, ray_local):
    from bench.bench_eval import main
    from bench.run_all import BENCHMARKS

    main(BENCHMARKS["eval"][1])
    cells = _read(results / "eval.json")["per_length"].values()
    prompts = sum(c["prompts"] for c in cells)
    stage_s, plain_s = sum(c["stage_s"] for c in cells), sum(c["plain_s"] for c in cells)
    record = check_record(results / "eval.json", "eval", prompts / stage_s, prompts / plain_s)
    assert (record["ratio"] > 1) == (stage_s < plain_s)  # above 1: the stage's path took less time
    cell = record["per_length"]["448"]
    assert cell["prompts"] == 2 and cell["stage_s"] > 0 and cell["plain_s"] > 0
    assert cell["ratio"] == pytest.approx(cell["plain_s"] / cell["stage_s"])
    # the same greedy replies from the stage's batched path and a plain generate loop on the same weights
    assert cell["same_replies"] == 2
    assert ray_local.is_initialized()


def test_longctx_smoke(results):
    from bench.bench_longctx import main

    main(["--multiples", "1", "2", "--steps", "1", "--warmup", "0", "--threads", "1"])
    chunked = {c["length"]: c for c in _read(results / "longctx.json")["curve"]["chunked"]}
    # the chunked loss's throughput at the longest context against the shortest
    record = check_record(
        results / "longctx.json",
        "longctx",
        chunked[max(chunked)]["tokens_per_s"],
        chunked[min(chunked)]["tokens_per_s"],
    )
    assert f"at {max(chunked)} tokens" in record["unit"] and f"vs at {min(chunked)}" in record["unit"]
    assert record["original_context"] == 512
    for mode in ("chunked", "full_logits"):
        curve = record["curve"][mode]
        assert [c["length"] for c in curve] == [512, 1024]
        assert all(math.isfinite(c["loss"]) and c["tokens_per_s"] > 0 for c in curve)
    ratio = record["chunked_vs_full_at_longest"]["tokens_per_s_ratio"]
    assert math.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize("attn", ["sdpa", "longctx_packed"])
def test_toybase_smoke(results, attn):
    """Both layouts train the same rows from the same weights (with either attention on the packed side):
    their losses agree, and packing fills more of its slots than padding does."""
    from bench import bench_toybase
    from bench.run_all import BENCHMARKS

    bench_toybase.main([*BENCHMARKS["toybase"][1], "--packed-attn", attn])
    raw = _read(results / "toybase.json")
    # steps/s of each side from its timed steps and seconds (one run per side: --pairs 1)
    speed = {r["pack"]: raw["steps"] / r["seconds"] for r in raw["runs"]}
    record = check_record(results / "toybase.json", "toybase", speed[True], speed[False])
    assert [(r["pack"], r["prefetch"], r["attn"]) for r in record["runs"]] == [
        (False, 0, "sdpa"),
        (True, 2, attn),
    ]
    assert record["loss_max_abs_diff"] < 1e-3
    assert record["slot_efficiency"]["packed"] >= record["slot_efficiency"]["padded"]
    assert record["runs"][0]["real_tokens"] == record["runs"][1]["real_tokens"]


def test_gpu_benchmark_dry_run_through_run_sh(tmp_path):
    """The GPU script's CPU smoke mode, through run.sh as `make bench-gpu` calls it (tiny Qwen2 shape, 4-bit
    NF4 + LoRA + PackedCausalLM on packed rows); the product path has its own (slow) test."""
    env = os.environ | {
        "DRY_RUN": "1",
        "MODELS": "tiny",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
        "PRODUCT": "0",
    }
    proc = subprocess.run(
        ["bash", "bench/gpu/run.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_throughput_tiny_dryrun.json").read_text())
    for key in REQUIRED:
        assert key in record
    assert math.isfinite(record["value"]) and record["value"] > 0
    assert record["mfu"] is None and record["ratio"] is None  # no GPU peak to divide by on CPU
    assert record["attn_implementation"] == "sdpa"
    assert record["model_flops_per_step"] > 0
    assert all(math.isfinite(x) for x in record["losses"])
    assert (tmp_path / "log-tiny.txt").is_file()


@pytest.mark.slow
def test_gpu_product_path_dry_run_through_run_sh(tmp_path):
    """`make bench-gpu`'s product path in its CPU mode: ray_jobs.synthesize and ray_jobs.train on
    bench/gpu/product_gpu.yaml (demo sizes), then bench.gpu.product beside the bare step's JSON."""
    env = os.environ | {"DRY_RUN": "1", "MODELS": "tiny", "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "bench/gpu/run.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_product_gpu-product.json").read_text())
    assert record["steps"] == 4 and record["timed_steps"] == 2 and record["workers"] == 1
    assert math.isfinite(record["value"]) and record["value"] > 0 and record["mfu"] is None
    assert record["baseline"] is None  # no gpu_throughput_0.5b.json in a dry run (MODELS=tiny)
    assert "product path gpu-product:" in (tmp_path / "log-product.txt").read_text()


def test_product_summary_reads_the_last_attempt_per_worker(tmp_path):
    """bench.gpu.product: tokens/s per worker (the logged figure counts all workers), the steps after
    `skip`, the last attempt's start event for the stage's wall time; no step left to time is an error."""
    from bench.gpu.product import summarize

    def step(n, t, tps, mem):
        return {
            "step": n,
            "time": t,
            "tokens_per_s": tps,
            "step_time_s": 1.0,
            "packing_efficiency": 0.9,
            "peak_mem_gb": mem,
        }

    rows = [
        {"event": "start", "time": 100.0, "world_size": 2},
        step(1, 101.0, 10.0, 1.0),
        {"event": "start", "time": 200.0, "world_size": 2},  # a resumed attempt
        step(2, 202.0, 400.0, 3.0),
        step(3, 203.0, 800.0, 2.0),
        step(4, 204.0, 600.0, 2.5),
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = summarize(metrics, skip=2)
    assert got["tokens_per_s"] == 350.0  # median of 800 and 600, over 2 workers
    assert got["timed_steps"] == 2 and got["steps"] == 4 and got["workers"] == 2
    assert got["peak_mem_gb"] == 3.0 and got["mfu"] is None
    assert got["stage_wall_s"] == 4.0  # from the last start event
    with pytest.raises(ValueError, match="none after the first 9"):
        summarize(metrics, skip=9)


def test_run_all_reports_a_failure_with_exit_status(tmp_path, monkeypatch, capsys):
    from bench import run_all

    monkeypatch.setitem(run_all.BENCHMARKS, "broken", ("bench.no_such_benchmark", []))
    assert run_all.main(["--only", "broken", "--results", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: broken" in out and "ModuleNotFoundError" in out


@pytest.mark.slow
def test_run_all_smoke_synthesis(tmp_path):
    """`run_all --smoke` runs bench_synthesis's main in a child and collects its record (slow: its own Ray)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--smoke", "--only", "synthesis", "--results", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "synthesis.json").read_text())
    assert record["identical_rows"] is True
    assert math.isfinite(record["ratio"])
