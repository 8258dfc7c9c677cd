"""The metrics sinks and resource sizing."""

from __future__ import annotations

import pytest

from longctx_core.infra.metrics import Metrics, read_jsonl
from longctx_core.infra.resources import cpus_per_actor


def test_cpus_per_actor_fits_two_cores():
    # 2 actors on a 2-CPU laptop must leave room for the read tasks that feed them.
    assert cpus_per_actor(2, share=0.5, total=2) == 0.5
    assert cpus_per_actor(3, share=0.5, total=2) == 0.33
    assert cpus_per_actor(8, share=0.75, total=64) == 1.0  # a big CPU pool: capped at one core each
    assert cpus_per_actor(4, share=0.5, total=0) == 1.0  # autoscaling from zero: ask for real CPUs
    with pytest.raises(ValueError):
        cpus_per_actor(0, total=2)


def test_metrics_jsonl_and_gauges(tmp_path, ray_local):
    path = tmp_path / "m" / "metrics.jsonl"
    m = Metrics("unit", jsonl_path=path, tags={"run": "t"})
    m.log({"loss": 2.5, "lr": 1e-4, "note": "x"}, step=1)
    m.log({"loss": 2.0}, step=2)
    rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 2.5 and rows[0]["note"] == "x" and rows[1]["loss"] == 2.0
    assert set(m._gauges) == {"loss", "lr"}  # numeric values became dashboard gauges
    off = Metrics("unit", jsonl_path=tmp_path / "off.jsonl", enabled=False)
    off.log({"loss": 1.0}, step=1)
    assert not (tmp_path / "off.jsonl").exists()
