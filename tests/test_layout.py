"""RunLayout names the run-folder contract: every path, golden."""

from pathlib import Path

from longctx_core.config import load_config
from longctx_core.infra.layout import RunLayout


def test_every_contract_path():
    layout = RunLayout.of(load_config(None, ["run.storage_path=/s", "run.name=r"]))
    got = {
        "config": layout.config,
        "report": layout.report,
        "data.train": layout.data.train,
        "data.eval": layout.data.eval,
        "data.stats": layout.data.stats,
        "data.plots": layout.data.plots,
        "data.quarantine": layout.data.quarantine,
        "data.sources": layout.data.sources,
        "data.metrics": layout.data.metrics,
        "train.metrics": layout.train.metrics,
        "train.adapter": layout.train.adapter,
        "train.workers": layout.train.workers,
        "train.storage": layout.train.storage,
        "eval.metrics": layout.eval.metrics,
        "eval.predictions": layout.eval.predictions,
        "eval.report": layout.eval.report,
        "eval.plots": layout.eval.plots,
        "pretrain.train.adapter": layout.pretrain.train.adapter,
        "marker": layout.marker("train"),
        "stage_dir": layout.stage_dir("evaluate"),
    }
    assert {k: str(v.relative_to("/s/r")) for k, v in got.items()} == {
        "config": "config.yaml",
        "report": "report.md",
        "data.train": "data/train",
        "data.eval": "data/eval",
        "data.stats": "data/stats.json",
        "data.plots": "data/plots",
        "data.quarantine": "data/quarantine",
        "data.sources": "data/sources",
        "data.metrics": "data/metrics.jsonl",
        "train.metrics": "train/metrics.jsonl",
        "train.adapter": "train/adapter",
        "train.workers": "train/workers",
        "train.storage": "train/ray",
        "eval.metrics": "eval/metrics.json",
        "eval.predictions": "eval/predictions.jsonl",
        "eval.report": "eval/report.md",
        "eval.plots": "eval/plots",
        "pretrain.train.adapter": "pretrain/train/adapter",
        "marker": ".stage-train.json",
        "stage_dir": "eval",
    }
    assert layout.root == Path("/s/r") and layout.stage_dir("pipeline") is None
