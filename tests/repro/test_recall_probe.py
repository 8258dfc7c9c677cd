"""The recall probe (`python -m bench.bench_recall_probe`) at tiny sizes: it trains each learning rate, writes a
well-formed result in the benchmarks' format, learns (beats chance and the untrained model), and is
deterministic with its seed. Results go to a temporary folder, never bench/results/."""

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
    """Two learning rates on a small alphabet (8 keys, 2 pairs a row), 120 steps: the written record has the
    benchmarks' format, and the higher rate learnt what the probe measures: its final loss on the repeated
    values is clearly below chance (ln 8: guessing among the alphabet, blind to the row's pairs), and far
    below the untrained model's first-step loss (about ln 300: guessing among the whole vocabulary)."""
    from bench import bench_recall_probe as recall_probe

    args = ["--lrs", "0.003", "0.0003", "--keys", "8", "--pairs", "2", "--steps", "120", "--batch", "8"]
    record = recall_probe.main([*args, "--shape", "num_hidden_layers=2"])
    written = json.loads((results / "recall_probe.json").read_text())
    assert written == json.loads(json.dumps(record, default=float))
    for key in REQUIRED:
        assert key in written, f"recall_probe.json lacks {key}"
    assert written["name"] == "recall_probe"
    assert written["command"].startswith("python -m bench.bench_recall_probe --lrs 0.003 0.0003")
    runs = {r["lr"]: r for r in written["runs"]}
    assert list(runs) == [0.003, 0.0003] and written["shape"] == {"num_hidden_layers": 2}
    assert written["chance"] == pytest.approx(math.log(8))
    # value: the best rate's final loss; baseline: the first rate's; ratio their quotient (below 1: better)
    best = min(runs.values(), key=lambda r: r["final_loss"])
    assert written["best_lr"] == best["lr"] and written["value"] == best["final_loss"]
    assert written["baseline"] == runs[0.003]["final_loss"]
    assert written["ratio"] == pytest.approx(best["final_loss"] / runs[0.003]["final_loss"])
    assert written["ratio"] <= 1.0
    for r in runs.values():
        assert math.isfinite(r["final_loss"]) and len(r["curve_every_100"]) == 2
        assert r["curve_every_100"][0] > math.log(300) - 0.6  # step 0: an untrained model, near uniform
    trained = runs[0.003]
    assert trained["final_loss"] < written["chance"] - 0.2, trained  # beats chance by a clear margin
    assert trained["final_loss"] < trained["curve_every_100"][0] - 3.0  # and the untrained model by far


def test_recall_probe_is_deterministic_with_its_seed():
    """Same seed, same loss curve to the bit; another seed, other rows and weights."""
    from bench.bench_recall_probe import probe

    shape = {"num_hidden_layers": 1}
    first, again = (probe(0.003, 2, 8, 12, 4, shape, seed=0) for _ in range(2))
    other = probe(0.003, 2, 8, 12, 4, shape, seed=1)
    assert first["curve"] == again["curve"] and first["final_loss"] == again["final_loss"]
    assert first["curve"] != other["curve"]
