"""Every gauge a Grafana panel charts (cluster/grafana/longctx.json) is really exported by a real stage run.

The real pipeline (synthesize -> train -> evaluate: `ray_jobs.pipeline.main` on the CPU demo preset cut to
8 samples, 2 steps on 1 worker, and the base model's passkey + perplexity prompts) runs on the session's
local Ray runtime. A thread scrapes that node's real Prometheus endpoint (the metrics export port of
`ray._private.worker.global_worker.node`) every second during the run and for a bounded while after it,
and keeps every `ray_longctx_*` series it saw: a gauge reaches the endpoint when its process next exports
(every `metrics_report_interval_ms`, 10 s by default, and once more when the process exits) and leaves it
about two intervals after its process stopped exporting. Then: every metric named in a panel's PromQL was
seen, with the labels that panel groups by, and the values the driver holds (synthesis throughput,
evaluation headline numbers) equal the run folder's files.

The one exception is `ray_longctx_train_mfu` without a GPU: MFU needs a GPU's peak FLOP/s, so on CPU the
train stage does not compute it; the test checks that its metrics.jsonl has no `mfu` either.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "cluster" / "grafana" / "longctx.json"
ARGV = [
    "--config",
    "ray_jobs/configs/tiny_cpu.yaml",
    "run.name=panels",
    "data.num_samples=8",
    "data.target_tokens={min: 384, max: 768}",
    "model.quantization.load_in_4bit=false",
    "train.max_seq_len=1024",
    "train.max_steps=2",
    "train.checkpoint_every=0",
    "train.num_workers=1",
    "eval.models=[{name: base, kind: base}]",
    "eval.max_new_tokens=8",
    "eval.qa.enabled=false",
    "eval.passkey.depths=[0.5]",
    "eval.passkey.lengths=[400]",
    "eval.perplexity.num_sequences=1",
    "eval.perplexity.lengths=[400]",
]
GPU_ONLY = {"ray_longctx_train_mfu": ("train", "mfu")}


def panel_queries() -> dict[str, set[str]]:
    """metric name -> the labels its panels group by (`max by (...)`), over every panel's PromQL."""
    dash = json.loads(DASHBOARD.read_text())
    wanted: dict[str, set[str]] = defaultdict(set)
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            by = re.search(r"\bby\s*\(([^)]*)\)", expr)
            labels = {x.strip() for x in by.group(1).split(",")} if by else set()
            for name in re.findall(r"\bray_longctx_[A-Za-z0-9_]+", expr):
                wanted[name] |= labels
    return dict(wanted)


class Scraper(threading.Thread):
    """Scrapes a Prometheus text endpoint every `every` s; keeps, per `ray_longctx_*` metric, the label
    sets and the latest value of each series."""

    def __init__(self, url: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.series: dict[str, dict[tuple, float]] = defaultdict(dict)
        self.scrapes = 0
        self.stop = threading.Event()

    def scrape_once(self) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url, timeout=10) as resp:
            text = resp.read().decode()
        self.scrapes += 1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("ray_longctx_"):
                    self.series[sample.name][tuple(sorted(sample.labels.items()))] = sample.value

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.scrape_once()
            except OSError:  # the agent is (re)starting; the next round retries
                pass
            self.stop.wait(self.every)

    def value(self, name: str, **labels: str) -> float | None:
        """The latest value of the series of `name` whose labels include `labels` (None if unseen)."""
        for key, value in self.series.get(name, {}).items():
            if labels.items() <= dict(key).items():
                return value
        return None


@pytest.mark.timeout(900)
@pytest.mark.e2e
def test_every_panel_metric_is_exported_by_a_real_run(ray_local, tmp_path, tiny_model_dir):
    import torch

    from ray_jobs.pipeline import main

    wanted = panel_queries()
    assert "ray_longctx_evaluate_accuracy" in wanted and len(wanted) >= 10  # the dashboard was parsed
    if not torch.cuda.is_available():
        wanted = {k: v for k, v in wanted.items() if k not in GPU_ONLY}
    node = ray_local._private.worker.global_worker.node
    scraper = Scraper(f"http://127.0.0.1:{node.metrics_export_port}/metrics")
    scraper.start()
    t0 = time.monotonic()
    try:
        main([*ARGV, f"run.storage_path={tmp_path}"])
        t_run = time.monotonic() - t0
        deadline = time.monotonic() + 60  # export lag: a few report intervals at most
        while time.monotonic() < deadline and not set(wanted) <= set(scraper.series):
            time.sleep(1)
        scraper.scrape_once()  # the values held now, after the run
    finally:
        scraper.stop.set()
    missing = sorted(set(wanted) - set(scraper.series))
    assert not missing, (
        f"never exported: {missing}; seen {sorted(scraper.series)} in {scraper.scrapes} scrapes"
    )
    for name, labels in wanted.items():
        for key in scraper.series[name]:
            assert labels <= {k for k, _ in key}, f"{name}{dict(key)} lacks a label its panel groups by"
        assert any(dict(key)["run"] == "panels" for key in scraper.series[name]), name

    root = tmp_path / "panels"
    stats = json.loads((root / "data" / "stats.json").read_text())
    got = scraper.value("ray_longctx_synthesize_samples_per_second", run="panels")
    assert got == pytest.approx(stats["samples_per_second"], rel=1e-6)
    tasks = json.loads((root / "eval" / "metrics.json").read_text())["tasks"]
    assert {"passkey", "perplexity"} <= set(tasks)
    for task, name, key in (("passkey", "accuracy", "accuracy"), ("perplexity", "nll", "nll")):
        for model, expect in tasks[task]["by_model"][key].items():
            got = scraper.value(f"ray_longctx_evaluate_{name}", run="panels", model=model, task=task)
            assert got == pytest.approx(expect, rel=1e-6), (task, model)
    train_rows = [json.loads(line) for line in (root / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in train_rows)
    if not torch.cuda.is_available():
        assert not any("mfu" in r for r in train_rows)  # the exemption above is exactly "not computed"
    total = time.monotonic() - t0
    print(f"pipeline {t_run:.0f} s, all {len(wanted)} panel metrics exported after {total:.0f} s")
