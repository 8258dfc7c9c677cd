"""The learning-rate schedule: linear warmup, then constant or cosine decay to a floor."""

from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


def lr_lambda(train_cfg, total_steps: int | None):
    """The multiplier of the peak LR at each optimizer step: linear warmup, then constant or cosine decay
    to `min_lr_ratio` over `total_steps` (cosine without a known total stays constant). Returns a function."""
    warm, floor, schedule = train_cfg.warmup_steps, train_cfg.min_lr_ratio, train_cfg.lr_schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant" or not total_steps:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
