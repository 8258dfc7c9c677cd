"""The whole reproduction: the cached toy base, the QLoRA arms of every seed through the project's own
stages, and the report.

    summary = run_repro(cfg)      # the product's stages run through longctx_core.stages, on a connected Ray

`check` and `run` are the repro stage of `longctx_core.stages` (`python -m ray_jobs.repro`).
"""

from __future__ import annotations

import logging
import time

from repro.arms import run_seed
from repro.config import ReproConfig, check_repro_config

logger = logging.getLogger(__name__)


def check_base_quality(cfg: ReproConfig, base: dict) -> None:
    """Raise LongctxError when the toy base missed its validation target (unless `repro.allow_weak_base`)."""
    from longctx_core.errors import LongctxError

    target = cfg.repro.base.target_accuracy
    if base["validation_accuracy"] < target and not cfg.repro.allow_weak_base:
        raise LongctxError(
            f"repro.base: the toy base reached {100 * base['validation_accuracy']:.1f}% validation exact match "
            f"after {base['steps']} steps ({base['minutes']:.0f} min), below the {100 * target:.0f}% target; run "
            "make repro-base again to train it on from its checkpoint (repro.base.time_budget_min more minutes), "
            "or set repro.allow_weak_base=true"
        )


def run_repro(cfg: ReproConfig) -> dict:
    """The whole reproduction (or only the toy base with `repro.only_base`); returns the summary."""
    from longctx_core.runs import prepare_run_dir
    from repro.base.cache import base_diagnosis, ensure_toy_base
    from repro.base.checkpoint import read_base_info
    from repro.report import write_report

    check_repro_config(cfg)
    prepare_run_dir(cfg, "repro")
    started = time.monotonic()
    # A below-target base trains on (from its checkpoint) unless the user takes it as it is.
    base_dir = ensure_toy_base(cfg, resume=cfg.repro.only_base or not cfg.repro.allow_weak_base)
    info = read_base_info(base_dir)
    info["diagnosis"] = base_diagnosis(cfg, base_dir)
    summary: dict = {"base_dir": str(base_dir), "base": info["summary"], "diagnosis": info["diagnosis"]}
    if cfg.repro.only_base:
        return summary
    check_base_quality(cfg, info["summary"])
    eval_dirs = {seed: run_seed(cfg, base_dir, seed) for seed in cfg.repro.seeds}
    report = write_report(cfg, eval_dirs, info)
    summary |= {"report": str(report), "minutes": round((time.monotonic() - started) / 60, 2)}
    return summary


def check(cfg: ReproConfig) -> None:
    """Before the (long) base build and before any Ray resource."""
    check_repro_config(cfg)


def run(cfg: ReproConfig, checked=None) -> dict:
    """The repro stage: `run_repro`, then where the base and the report are."""
    summary = run_repro(cfg)
    base = summary["base"]
    print(
        f"toy base: {summary['base_dir']} ({base['steps']} steps, {base['minutes']:.1f} min, "
        f"validation exact match {base['validation_accuracy']:.3f})"
    )
    if "report" in summary:
        print(f"report: {summary['report']}")
    return summary
