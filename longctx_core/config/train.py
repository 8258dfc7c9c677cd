"""`train:` section: Ray Train workers, DeepSpeed, optimisation, packing, checkpoints."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from longctx_core.config.base import Section


class TrainConfig(Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = Field(False, description="Workers ask for one GPU each.")
    max_steps: Optional[int] = Field(
        None, ge=1, description="Stop after this many optimizer steps (smoke knob)."
    )
    epochs: int = Field(1, ge=1, description="Passes over the data when max_steps is unset.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    max_seq_len: int = Field(2048, ge=16, description="Tokens per packed row.")
