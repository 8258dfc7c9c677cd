"""Smoke test of bench/bench_loss_memory.py at tiny sizes: it runs for real and writes a well-formed result.

No timing is asserted. What is checked: the shared result schema (value and baseline the two ways' memory at
the compared length), that both ways computed the same loss and gradient (same inputs, only the chunking
differs), that the full-logits step needs more memory than the chunked one (peak RSS, a memory measure, not
a time), and that a length whose predicted full-logits memory is over budget is skipped, not run.
"""

from __future__ import annotations

import json
import math

import pytest

# pytest puts this folder on sys.path (no __init__.py here): share the result-schema check, not copy it.
from test_bench import check_record


@pytest.fixture
def results(tmp_path, monkeypatch):
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    return tmp_path


def test_loss_memory_smoke(results):
    from bench.bench_loss_memory import main

    length, vocab = 2048, 16384
    argv = ["--lengths", "512", str(length), "--vocab", str(vocab), "--hidden", "32", "--chunk-size", "128"]
    record = main(argv + ["--threads", "1"])
    assert record["compared_at"] == length and record["skipped_full_logits"] == []
    rows = {(r["way"], r["length"]): r for r in record["rows"]}
    assert sorted(rows) == [("chunked", 512), ("chunked", length), ("full", 512), ("full", length)]
    # value: the chunked step's memory at the longest length both ran; baseline: the full logits' there
    full, chunked = rows[("full", length)]["step_gib"], rows[("chunked", length)]["step_gib"]
    written = check_record(results / "loss_memory.json", "loss_memory", chunked, full)
    assert written == json.loads(json.dumps(record, default=float))
    for n in (512, length):
        c, f = rows[("chunked", n)], rows[("full", n)]
        assert c["loss"] == pytest.approx(f["loss"], rel=1e-5)  # the same loss, computed in chunks
        assert c["grad_norm"] == pytest.approx(f["grad_norm"], rel=1e-4)
        assert math.isfinite(c["tokens_per_s"]) and c["tokens_per_s"] > 0 and f["tokens_per_s"] > 0
    # The promise, on memory alone (peak RSS, no timing): full logits need more than the chunked loss. They
    # hold at least one fp32 [length, vocab] logits buffer (3 at peak: logits, log-softmax, their gradient);
    # the chunked loss only chunk-sized ones. Both steps share the allocator's own growth, so the check is
    # on the difference: the full logits need at least half a logits buffer more than the chunked loss.
    one_logits_gib = length * vocab * 4 / 2**30
    assert full >= 0.9 * one_logits_gib, (full, one_logits_gib)
    assert full - chunked >= 0.5 * one_logits_gib and written["ratio"] < 1.0, (chunked, full, one_logits_gib)


def test_over_budget_full_logits_are_skipped(results):
    from bench.bench_loss_memory import main

    # A budget fraction of 1e-9 of available memory: every full-logits run is over it, so none can compare.
    with pytest.raises(RuntimeError, match="full logits fit in memory at none of the lengths"):
        main(["--lengths", "64", "--vocab", "1024", "--hidden", "16", "--budget-fraction", "1e-9"])
    assert not (results / "loss_memory.json").exists()
