"""Smoke test of bench/bench_loss_memory.py at tiny sizes: it runs for real and writes a well-formed result.

No timing is asserted. What is checked: the shared result schema, that both ways computed the same loss and
gradient (same inputs, only the chunking differs), that the full-logits step needs more memory than the
chunked one, and that a length whose predicted full-logits memory is over budget is skipped, not run.
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

    argv = ["--lengths", "512", "2048", "--vocab", "16384", "--hidden", "32", "--chunk-size", "128"]
    record = main(argv + ["--threads", "1"])
    written = check_record(results / "loss_memory.json", "loss_memory")
    assert written == json.loads(json.dumps(record, default=float))
    assert written["compared_at"] == 2048 and written["skipped_full_logits"] == []
    rows = {(r["way"], r["length"]): r for r in written["rows"]}
    assert sorted(rows) == [("chunked", 512), ("chunked", 2048), ("full", 512), ("full", 2048)]
    for length in (512, 2048):
        c, f = rows[("chunked", length)], rows[("full", length)]
        assert c["loss"] == pytest.approx(f["loss"], rel=1e-5)  # the same loss, computed in chunks
        assert c["grad_norm"] == pytest.approx(f["grad_norm"], rel=1e-4)
        assert math.isfinite(c["tokens_per_s"]) and c["tokens_per_s"] > 0 and f["tokens_per_s"] > 0
    # The memory figures are the benchmark's output, not a test condition (RSS moves with the allocator and
    # with load); the record must carry them where the contract says.
    full, chunked = rows[("full", 2048)]["step_gib"], rows[("chunked", 2048)]["step_gib"]
    assert full > 0 and chunked > 0
    assert written["value"] == chunked and written["baseline"] == full
    assert written["ratio"] == pytest.approx(chunked / full, rel=1e-3)


def test_over_budget_full_logits_are_skipped(results):
    from bench.bench_loss_memory import main

    # A budget fraction of 1e-9 of available memory: every full-logits run is over it, so none can compare.
    with pytest.raises(RuntimeError, match="full logits fit in memory at none of the lengths"):
        main(["--lengths", "64", "--vocab", "1024", "--hidden", "16", "--budget-fraction", "1e-9"])
    assert not (results / "loss_memory.json").exists()
