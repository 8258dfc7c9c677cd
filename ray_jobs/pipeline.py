"""synthesize → train → evaluate in one run folder.

python -m ray_jobs.pipeline --config ray_jobs/configs/demo_cpu.yaml
"""

from __future__ import annotations

import importlib
import logging

from longctx_core.cli import run_stage
from longctx_core.config import Config
from longctx_core.runs import prepare_run_dir

logger = logging.getLogger(__name__)

STAGES = ("synthesize", "train", "evaluate")


def run(cfg: Config) -> dict:
    root = prepare_run_dir(cfg, "pipeline")
    summary: dict = {"run_dir": str(root), "stages": {}}
    for stage in STAGES:
        try:
            module = importlib.import_module(f"ray_jobs.{stage}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ray_jobs.{stage}":
                raise
            logger.warning("stage '%s' is not built yet; the pipeline stops here", stage)
            summary["stages"][stage] = "missing"
            break
        logger.info("=== stage: %s ===", stage)
        summary["stages"][stage] = module.run(cfg)
    print(f"run folder: {root}")
    for stage, result in summary["stages"].items():
        print(f"  {stage}: {result if result == 'missing' else 'done'}")
    return summary


def main(argv=None) -> None:
    run_stage("pipeline", run, argv)


if __name__ == "__main__":
    main()
