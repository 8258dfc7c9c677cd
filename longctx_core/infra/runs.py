"""The run folder a stage starts in: created, with the resolved config written where the stage's inputs stay
on record. Its paths are `longctx_core.infra.layout.RunLayout`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.config import Config
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)


def prepare_run_dir(cfg: Config, stage: str) -> Path:
    """Create the run folder, write the resolved `config.yaml` there (and a copy in the stage's folder, so
    each stage's inputs stay on record when stages run with different overrides); return the run folder."""
    layout = RunLayout.of(cfg)
    layout.root.mkdir(parents=True, exist_ok=True)
    text = cfg.to_yaml()
    layout.config.write_text(text)
    sub = layout.stage_dir(stage)
    if sub:
        sub.mkdir(exist_ok=True)
        (sub / "config.yaml").write_text(text)
    logger.info("run folder: %s", layout.root)
    logger.info("resolved config:\n%s", text)
    return layout.root
