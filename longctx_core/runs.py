"""The run folder: `<run.storage_path>/<run.name>/` with the resolved config and one subfolder per stage.

runs/demo/
  config.yaml          resolved config (written by every stage at start)
  data/                synthesize: train/*.parquet, eval/*.parquet, stats.json, plots/, quarantine/
  train/               train: metrics.jsonl, adapter/, checkpoints (Ray Train storage)
  eval/                evaluate: metrics.json, predictions.jsonl, report.md, plots/
  report.md            pipeline: links the stages' outputs
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.config import Config, run_dir

logger = logging.getLogger(__name__)

STAGE_DIRS = {"synthesize": "data", "train": "train", "evaluate": "eval"}


def prepare_run_dir(cfg: Config, stage: str) -> Path:
    """Create the run folder, write the resolved `config.yaml` there (and a copy in the stage's folder, so
    each stage's inputs stay on record when stages run with different overrides); return the run folder."""
    root = run_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    text = cfg.to_yaml()
    (root / "config.yaml").write_text(text)
    sub = STAGE_DIRS.get(stage)
    if sub:
        (root / sub).mkdir(exist_ok=True)
        (root / sub / "config.yaml").write_text(text)
    logger.info("run folder: %s", root)
    logger.info("resolved config:\n%s", text)
    return root
