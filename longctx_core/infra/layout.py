"""The run folder's paths, named once (a contract other tools rely on).

    layout = RunLayout.of(cfg)          # <run.storage_path>/<run.name>/
    layout.data.stats                   # data/stats.json
    layout.train.adapter                # train/adapter/  (PeftModel.from_pretrained loads it)
    layout.eval.metrics                 # eval/metrics.json
    layout.pretrain.train.adapter       # pretrain/train/adapter/  (stage 1 of the two-stage recipe)

runs/demo/
  config.yaml          resolved config (written by every stage at start)
  .stage-<name>.json   a finished stage's marker (its config fingerprint and summary)
  data/                synthesize: train/*.parquet, eval/*.parquet, stats.json, metrics.jsonl, plots/,
                       quarantine/, sources/ (per-source shards of a mixture)
  train/               train: metrics.jsonl, adapter/, workers/ (per-worker logs), ray/ (Ray Train storage)
  eval/                evaluate: metrics.json, predictions.jsonl, report.md, plots/
  pretrain/            continued pre-training (pretrain.enabled): a nested run folder of the same layout
  report.md            pipeline: links the stages' outputs

Only paths live here; which stage writes what, and when it counts as done, is `longctx_core.runner.chain`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRETRAIN_DIR = "pretrain"
STAGE_DIRS = {"synthesize": "data", "train": "train", "evaluate": "eval"}


def _entry(name: str) -> property:
    """A path named `name` inside the layout's folder (`self.dir`)."""
    return property(lambda self: self.dir / name, doc=f"<folder>/{name}")


@dataclass(frozen=True)
class DataLayout:
    dir: Path
    train = _entry("train")  # *.parquet training rows
    eval = _entry("eval")  # *.parquet held-out samples (QA sources)
    sources = _entry("sources")  # per-source shards of a mixture
    stats = _entry("stats.json")
    metrics = _entry("metrics.jsonl")
    plots = _entry("plots")
    quarantine = _entry("quarantine")


@dataclass(frozen=True)
class TrainLayout:
    dir: Path
    metrics = _entry("metrics.jsonl")
    adapter = _entry("adapter")  # the final PEFT adapter
    workers = _entry("workers")  # per-rank breadcrumbs (pid, host)
    # Ray Train's storage when train.storage_path is unset (checkpoints in ray-train/)
    storage = _entry("ray")


@dataclass(frozen=True)
class EvalLayout:
    dir: Path
    metrics = _entry("metrics.json")
    predictions = _entry("predictions.jsonl")
    report = _entry("report.md")
    plots = _entry("plots")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def of(cls, cfg) -> RunLayout:
        """The layout of `cfg`'s run folder, `<run.storage_path>/<run.name>/` (`config.run_dir`)."""
        from longctx_core.config import run_dir

        return cls(run_dir(cfg))

    @property
    def dir(self) -> Path:
        return self.root

    config = _entry("config.yaml")
    report = _entry("report.md")

    @property
    def data(self) -> DataLayout:
        return DataLayout(self.root / STAGE_DIRS["synthesize"])

    @property
    def train(self) -> TrainLayout:
        return TrainLayout(self.root / STAGE_DIRS["train"])

    @property
    def eval(self) -> EvalLayout:
        return EvalLayout(self.root / STAGE_DIRS["evaluate"])

    @property
    def pretrain(self) -> RunLayout:
        """Stage 1 of the two-stage recipe: a nested run folder of the same layout."""
        return RunLayout(self.root / PRETRAIN_DIR)

    def marker(self, stage: str) -> Path:
        """`.stage-<stage>.json`: written when the stage finished (`longctx_core.runner.chain`)."""
        return self.root / f".stage-{stage}.json"

    def stage_dir(self, stage: str) -> Path | None:
        """The folder a stage writes (None for the pipeline and the repro, which write at the top)."""
        sub = STAGE_DIRS.get(stage)
        return self.root / sub if sub else None
