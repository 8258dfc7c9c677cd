"""Reproduce the method's finding at toy scale on CPU: toy base chat model (cached), RoPE YaRN x4, QLoRA on
paraphrase vs plain twin data, evaluation by gold position with bootstrap intervals.

    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml                    (make repro)
    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml repro.only_base=true   (make repro-base)

Writes <run>/report.md, repro.json, plots/ and one run folder per arm under <run>/arms/ (see `repro`).
"""

from __future__ import annotations

import logging

from longctx_core.cli import run_stage
from repro.config import ReproConfig, check_repro_config

logger = logging.getLogger(__name__)


def stage_functions() -> dict:
    """The project's own stage entrypoints, driven with per-arm configs."""
    from ray_jobs import evaluate, synthesize, train

    return {"synthesize": synthesize.run, "train": train.run, "evaluate": evaluate.run}


def run(cfg: ReproConfig) -> dict:
    from repro.run import run_repro

    check_repro_config(cfg)  # before the (long) base build and before any Ray resource
    stages = {} if cfg.repro.only_base else stage_functions()
    summary = run_repro(cfg, stages)
    base = summary["base"]
    print(
        f"toy base: {summary['base_dir']} ({base['steps']} steps, {base['minutes']:.1f} min, "
        f"validation exact match {base['validation_accuracy']:.3f})"
    )
    if "report" in summary:
        print(f"report: {summary['report']}")
    return summary


def main(argv=None) -> None:
    run_stage("repro", run, argv, schema=ReproConfig)


if __name__ == "__main__":
    main()
