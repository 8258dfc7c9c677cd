"""The recall probe (`python -m bench.bench_recall_probe`) at tiny sizes: it trains each learning rate and writes
a well-formed result in the benchmarks' format. Results go to a temporary folder, never bench/results/."""

from __future__ import annotations

import json
import math

import pytest

REQUIRED = ("name", "value", "unit", "baseline", "ratio", "command", "machine")


@pytest.fixture
def results(tmp_path, monkeypatch):
    """bench.common writes here for this test (the probe looks RESULTS up when it writes)."""
    import bench.common

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    return tmp_path


def test_recall_probe_trains_each_learning_rate_and_compares_them(results):
    from bench import bench_recall_probe as recall_probe

    args = ["--lrs", "0.002", "0.0003", "--steps", "30", "--pairs", "3", "--batch", "4"]
    record = recall_probe.main([*args, "--shape", "num_hidden_layers=2"])
    written = json.loads((results / "recall_probe.json").read_text())
    for key in REQUIRED:
        assert key in written, f"recall_probe.json lacks {key}"
    assert written["name"] == "recall_probe"
    for key in ("value", "baseline", "ratio"):
        assert isinstance(written[key], float) and math.isfinite(written[key]) and written[key] > 0, key
    assert written["ratio"] == pytest.approx(written["value"] / written["baseline"])
    assert written["command"].startswith("python -m bench.bench_recall_probe --lrs 0.002 0.0003")
    assert written["best_lr"] in (0.002, 0.0003) and [r["lr"] for r in written["runs"]] == [0.002, 0.0003]
    assert record["value"] == min(r["final_loss"] for r in written["runs"])
    assert record["baseline"] == written["runs"][0]["final_loss"]
    assert written["chance"] == pytest.approx(math.log(64)) and written["shape"] == {"num_hidden_layers": 2}
