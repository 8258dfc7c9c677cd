"""Fine-tune the RoPE-extended model with (Q)LoRA on Ray Train + DeepSpeed, on the synthesized samples.

    python -m ray_jobs.train --config ray_jobs/configs/demo_cpu.yaml train.max_steps=5
    ray job submit --working-dir . -- python -m ray_jobs.train --config <preset.yaml>

Reads <run>/data/train/*.parquet (or train.data_path); writes <run>/train/: metrics.jsonl, adapter/ (a PEFT
folder), and the resumable checkpoints under ray/ (train.storage_path). A resubmitted run continues from
its last checkpoint; run.force=true starts over.
"""

from __future__ import annotations

import logging

from longctx_core.cli import run_stage
from longctx_core.config import Config
from longctx_core.runs import prepare_run_dir

logger = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    """Prepare the run folder and train; returns the summary (adapter path, steps, final loss, ...)."""
    from longctx_core.config import run_dir
    from longctx_core.train.driver import check_inputs, train

    inputs = check_inputs(cfg, run_dir(cfg))  # bad data or model: a one-line error before anything is written
    root = prepare_run_dir(cfg, "train")
    summary = train(cfg, root, inputs)
    logger.info("train done: %s", summary)
    return summary


def main(argv=None):
    return run_stage("train", run, argv)


if __name__ == "__main__":
    main()
