"""synthesize → train → evaluate (base vs fine-tuned) in one run folder, resumable.

    python -m ray_jobs.pipeline --config ray_jobs/configs/demo_cpu.yaml          # = make demo
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python -m ray_jobs.pipeline --config ray_jobs/configs/<preset>.yaml

Stages whose outputs exist (made with the same config) are skipped, so a resubmitted pipeline continues
where it stopped; `run.force=true` redoes them.
"""

from __future__ import annotations

import importlib
import logging
import time

from longctx_core.cli import run_stage
from longctx_core.config import Config
from longctx_core.pipeline import (
    STAGES,
    headline,
    mark_stage_done,
    preflight,
    stage_is_done,
    write_top_report,
)
from longctx_core.runs import prepare_run_dir
from longctx_core.two_stage import run_pretrain

logger = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    preflight(cfg)  # before Ray: a bad checkpoint/source fails in seconds
    root = prepare_run_dir(cfg, "pipeline")
    # pretrain.enabled: continued pre-training in <run>/pretrain/ first, then SFT from its adapter.
    cfg, done = run_pretrain(cfg)
    for stage in STAGES:
        if not cfg.run.force and stage_is_done(cfg, root, stage):
            logger.info(
                "=== %s: outputs exist for this config, skipped (run.force=true redoes it) ===", stage
            )
            done[stage] = "skipped (outputs exist)"
            continue
        logger.info("=== %s ===", stage)
        t0 = time.perf_counter()
        summary = importlib.import_module(f"ray_jobs.{stage}").run(cfg)
        mark_stage_done(cfg, root, stage, summary)
        done[stage] = f"done in {time.perf_counter() - t0:.0f} s"
    report = write_top_report(cfg, root, done)
    print(f"\nrun folder: {root}\nreport:     {report}")
    for line in headline(root):
        print(f"  {line}")
    return {"run_dir": str(root), "report": str(report), "stages": done}


def main(argv=None) -> None:
    run_stage("pipeline", run, argv)


if __name__ == "__main__":
    main()
