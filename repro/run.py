"""The whole reproduction: the cached toy base, the QLoRA arms of every seed through the project's own
stages, and the report.

    summary = run_repro(cfg)      # the product's stages run through longctx_core.runner.stages, on a connected Ray

`check` and `run` are the repro stage of `longctx_core.runner.stages` (`python -m ray_jobs.repro`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from repro.arms import run_seed
from repro.config import ReproConfig, base_seeds, check_repro_config, seed_config

logger = logging.getLogger(__name__)


def check_base_quality(cfg: ReproConfig, base: dict) -> None:
    """Raise LongctxError when the toy base missed its validation target (unless `repro.allow_weak_base`)."""
    from longctx_core.errors import LongctxError

    target = cfg.repro.base.target_accuracy
    if not base["reached_target"] and not cfg.repro.allow_weak_base:
        raise LongctxError(
            f"repro.base: the toy base reached {100 * base['validation_accuracy']:.1f}% validation exact match "
            f"after {base['steps']} steps ({base['minutes']:.0f} min), below the {100 * target:.0f}% target; run "
            "make repro-base again to train it on from its checkpoint (repro.base.time_budget_min more minutes), "
            "set repro.skip_weak_bases=true to leave its seed out, or set repro.allow_weak_base=true"
        )


def arm_seeds(cfg: ReproConfig, bases: dict[int, dict]) -> list[int]:
    """The seeds whose arms run: every seed, or with `repro.skip_weak_bases` those whose own base reached
    its target (`bases`: build summary by seed). Raises LongctxError when that leaves none."""
    from longctx_core.errors import LongctxError

    if not cfg.repro.skip_weak_bases:
        return list(cfg.repro.seeds)
    seeds = [s for s in cfg.repro.seeds if bases[s]["reached_target"]]
    if not seeds:
        raise LongctxError(
            "repro.skip_weak_bases: every seed's toy base missed the "
            f"{100 * cfg.repro.base.target_accuracy:.0f}% target ("
            + ", ".join(f"seed {s}: {100 * b['validation_accuracy']:.1f}%" for s, b in bases.items())
            + "); nothing is left to run the arms on"
        )
    return seeds


def run_repro(cfg: ReproConfig) -> dict:
    """The whole reproduction (or only the toy bases with `repro.only_base`); returns the summary. With
    `repro.base_per_seed` every seed builds (or reuses) its own base; a seed whose base misses its target
    stops the run before any arm trains, unless `repro.allow_weak_base` (the report then says which) or
    `repro.skip_weak_bases` (its base is taken as built, its seed left out, and the report says why)."""
    from longctx_core.infra.runs import prepare_run_dir
    from repro.base.cache import base_diagnosis, ensure_toy_base
    from repro.base.checkpoint import read_base_info
    from repro.base.long import ensure_long_base, long_base_config
    from repro.report import write_report

    check_repro_config(cfg)
    prepare_run_dir(cfg, "repro")
    started = time.monotonic()
    # seed -> (its config, base folder, base info); one shared base, under the first seed, without base_per_seed
    bases: dict[int, tuple[ReproConfig, Path, dict]] = {}
    # A below-target base trains on (from its checkpoint) unless the user takes it as it is.
    resume = cfg.repro.only_base or not (cfg.repro.allow_weak_base or cfg.repro.skip_weak_bases)
    for seed in base_seeds(cfg):
        scfg = seed_config(cfg, seed)
        base_dir = ensure_toy_base(scfg, resume=resume)
        info = read_base_info(base_dir)
        info["diagnosis"] = base_diagnosis(scfg, base_dir)
        if cfg.repro.long_pretrain.steps and (info["summary"]["reached_target"] or cfg.repro.allow_weak_base):
            base_dir = ensure_long_base(scfg, base_dir, resume=resume)
            info["long"] = read_base_info(base_dir) | {
                "diagnosis": base_diagnosis(long_base_config(scfg), base_dir)
            }
        bases[seed] = (scfg, base_dir, info)
    summary: dict = {
        "bases": {
            seed: {"dir": str(d), "summary": i["summary"]}
            | ({"long_summary": i["long"]["summary"]} if "long" in i else {})
            for seed, (_, d, i) in bases.items()
        }
    }
    if cfg.repro.only_base:
        return summary
    seeds = arm_seeds(cfg, {seed: info["summary"] for seed, (_, _, info) in bases.items()})
    shared = bases[cfg.repro.seeds[0]]
    for seed in seeds:
        check_base_quality(cfg, bases.get(seed, shared)[2]["summary"])
    summary["left_out"] = [s for s in cfg.repro.seeds if s not in seeds]
    eval_dirs = {}
    for seed in seeds:
        scfg, base_dir, _ = bases.get(seed, shared)
        eval_dirs[seed] = run_seed(scfg, base_dir, seed)
    report = write_report(cfg, eval_dirs, {seed: info for seed, (_, _, info) in bases.items()})
    summary |= {"report": str(report), "minutes": round((time.monotonic() - started) / 60, 2)}
    return summary


def check(cfg: ReproConfig) -> None:
    """Before the (long) base build and before any Ray resource."""
    check_repro_config(cfg)


def run(cfg: ReproConfig, checked=None) -> dict:
    """The repro stage: `run_repro`, then where the base and the report are."""
    summary = run_repro(cfg)
    for seed, b in summary["bases"].items():
        base = b["summary"]
        print(
            f"toy base (seed {seed}): {b['dir']} ({base['steps']} steps, {base['minutes']:.1f} min, "
            f"validation exact match {base['validation_accuracy']:.3f})"
        )
        if "long_summary" in b:
            long = b["long_summary"]
            print(
                f"  long pre-training at {cfg.repro.length_factor} x L0: {long['steps']} steps, "
                f"{long['minutes']:.1f} min, validation exact match {long['validation_accuracy']:.3f} "
                "(on its own gold placement)"
            )
    for seed in summary.get("left_out", []):
        print(f"seed {seed} left out (repro.skip_weak_bases): its toy base missed the target")
    if "report" in summary:
        print(f"report: {summary['report']}")
    return summary
