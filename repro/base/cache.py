"""The toy base's cache: `<cache>/toybase-<fingerprint>/`, built once per recipe and trained on across
runs from its `.partial` checkpoint until it is final (target reached or `max_steps` used)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longctx_core.fsio import digest, recover, remove_dir, staged_dir
from repro.base.checkpoint import INFO_FILE, STATE_FILE, read_base_info
from repro.config import ReproConfig

logger = logging.getLogger(__name__)

_RECIPE_VERSION = 2  # bump when the build changes in a way the config does not show
DIAGNOSIS_FILE = "diagnosis.json"


def base_fingerprint(cfg: ReproConfig) -> str:
    """Hash of everything the toy base depends on: its recipe, the world's shape, and the held-out split
    (eval fraction, arm seeds)."""
    b = cfg.repro.base
    # threads, pack and prefetch change speed only; time_budget_min bounds one run of a resumable build.
    # Knobs that joined the recipe later are left out at the value that means "as before", so older bases
    # keep their cache.
    exclude = {"threads", "pack", "prefetch", "time_budget_min"}
    if not b.shuffle_values:
        exclude.add("shuffle_values")
    if not b.name_read_weight:
        exclude.add("name_read_weight")
    if not b.name_read_weight or b.name_read_scope == "question":
        exclude.add("name_read_scope")
    if b.gold_beta is None:
        exclude |= {"gold_beta", "gold_beta_scope"}
    elif b.gold_beta_scope == "first":
        exclude.add("gold_beta_scope")
    recipe = {
        "version": _RECIPE_VERSION,
        "base": b.model_dump(mode="json", exclude=exclude),
        "world": cfg.data.source.builtin.model_dump(mode="json"),
        "eval_fraction": cfg.data.eval_fraction,
        "seeds": sorted(set(cfg.repro.seeds) | {cfg.run.seed}),
    }
    return digest(recipe, length=12)


def toy_base_dir(cfg: ReproConfig, cache_dir: str | Path | None = None) -> Path:
    """Where the toy base for `cfg` is cached: <cache>/toybase-<fingerprint>/."""
    from longctx_core.fsio import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"toybase-{base_fingerprint(cfg)}"


def base_diagnosis(cfg: ReproConfig, folder: Path, questions: int = 160) -> dict:
    """`diagnose_folder` of the built base, computed once and kept beside it (`diagnosis.json`)."""
    from repro.base.validate import diagnose_folder

    path = Path(folder) / DIAGNOSIS_FILE
    if path.is_file():
        kept = json.loads(path.read_text())
        if "slot_exact_match" in kept:  # one written before the last field was added is computed again
            return kept
    result = diagnose_folder(cfg, folder, questions)
    path.write_text(json.dumps(result, indent=2))
    return result


def finished(cfg: ReproConfig, summary: dict) -> bool:
    """Whether a built base is final: it reached its target or used all of `max_steps`."""
    return bool(summary["reached_target"]) or summary["steps"] >= cfg.repro.base.max_steps


def ensure_toy_base(cfg: ReproConfig, cache_dir: str | Path | None = None, resume: bool = True) -> Path:
    """The toy base's folder, built once and reused while its recipe is unchanged.

    The build checkpoints into `<folder>.partial/` at every validation. A build that was killed, or that
    stopped at `time_budget_min` below its target, goes on from there on the next call (`resume=False`
    takes a below-target base as it is). The folder is replaced atomically (`fsio.staged_dir`): a
    half-built base is never visible."""
    return ensure_built(cfg, toy_base_dir(cfg, cache_dir), base_fingerprint(cfg), resume)


def ensure_built(
    cfg: ReproConfig, out: Path, fingerprint: str, resume: bool = True, init_from: Path | None = None
) -> Path:
    """`out`, trained by `train_toy_base(cfg)` (from `init_from` when given) unless it is already final,
    resumed from `<out>.partial/` (see `ensure_toy_base`); its toy_base.json records `fingerprint`."""
    from repro.base.train import train_toy_base

    out = recover(out)
    partial = recover(out.with_name(out.name + ".partial"))
    resume_from: Path | None = None
    if (out / INFO_FILE).is_file():
        summary = read_base_info(out)["summary"]
        if not resume or finished(cfg, summary):
            logger.info("toy base: reusing %s (%s)", out, summary["validation_accuracy"])
            return out
        resume_from = partial if (partial / STATE_FILE).is_file() else out
        logger.info("toy base: %s is below its target at step %d; training on", out, summary["steps"])
    elif (partial / STATE_FILE).is_file():
        resume_from = partial
    with staged_dir(out) as tmp:
        summary = train_toy_base(cfg, tmp, checkpoint=partial, resume_from=resume_from, init_from=init_from)
        info = {
            "fingerprint": fingerprint,
            "recipe": cfg.repro.base.model_dump(mode="json"),
            "world": cfg.data.source.builtin.model_dump(mode="json"),
            "summary": summary,
        }
        if init_from is not None:
            info["init_from"] = str(init_from)
            info["rope_parameters"] = cfg.model.rope.model_dump(mode="json")
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    if finished(cfg, summary):
        remove_dir(partial)
    logger.info(
        "toy base: built %s in %.1f min, validation exact match %.3f",
        out,
        summary["minutes"],
        summary["validation_accuracy"],
    )
    return out
