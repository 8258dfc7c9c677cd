"""Which stages of a run folder are done, and running the rest in order, skipping the done ones.

    done, ran = run_stages(cfg, root, CHAIN)

A stage counts as done when its final output exists (`stage_output`) and the `.stage-<name>.json` marker
written after it succeeded carries the same config fingerprint. Outputs from a different config are an
error rather than a silent reuse: pass `run.force=true` or choose another `run.name`.

Resubmission knobs (`RESUBMISSION_KNOBS`: `train.max_steps`, checkpointing, logging, resources) are left
out of the fingerprint, here and in the train stage's checkpoint marker (`train.state.fingerprint` is the
train stage's fingerprint), so a resubmission may change them:
- a finished train stage whose `train.max_steps` grew is not done: it runs again and resumes from its
  last checkpoint;
- a stage whose predecessor re-ran since (its marker records the predecessor's marker digest) is not done
  either: evaluation runs again on the new adapter.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from longctx_core.config import Config
from longctx_core.config.fingerprint import stage_fingerprint
from longctx_core.errors import LongctxError
from longctx_core.fsio import digest, recover
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)

# The stages one run chains, in order.
CHAIN = ("synthesize", "train", "evaluate")


def stage_output(root: Path, stage: str) -> Path:
    """The file `stage` writes last: its presence means the stage finished."""
    layout = RunLayout(root)
    return {
        "synthesize": layout.data.stats,
        "train": layout.train.adapter / "adapter_config.json",
        "evaluate": layout.eval.metrics,
    }[stage]


def _marker(root: Path, stage: str) -> Path:
    return RunLayout(root).marker(stage)


def _upstream(root: Path, stage: str) -> str | None:
    """Digest of the marker of the stage before `stage` (None for the first stage or when it has none):
    it changes whenever that stage re-runs."""
    i = CHAIN.index(stage)
    if i == 0 or not _marker(root, CHAIN[i - 1]).is_file():
        return None
    return digest(json.loads(_marker(root, CHAIN[i - 1]).read_text()))


def stage_is_done(cfg: Config, root: Path, stage: str) -> bool:
    """True when `stage` finished with this config, after the current run of the stage before it, and (for
    train) took all of `train.max_steps`; raises if it finished with a different config."""
    if stage == "train":
        recover(RunLayout(root).train.adapter)  # a crash mid-replacement of the adapter: put one back first
    if not stage_output(root, stage).is_file() or not _marker(root, stage).is_file():
        return False
    marker = json.loads(_marker(root, stage).read_text())
    if marker.get("fingerprint") != stage_fingerprint(cfg, stage):
        raise LongctxError(
            f"{root} holds '{stage}' outputs made with a different config; "
            "set run.force=true to redo them or pick another run.name"
        )
    if marker.get("upstream") != _upstream(root, stage):
        logger.info("%s: the stage before it ran again since; running it again", stage)
        return False
    steps, wanted = marker.get("summary", {}).get("steps"), cfg.train.max_steps
    if stage == "train" and wanted and steps is not None and steps < wanted:
        logger.info(
            "train: %d of train.max_steps=%d steps done; training on from the checkpoint", steps, wanted
        )
        return False
    return True


def mark_stage_done(cfg: Config, root: Path, stage: str, summary: dict) -> None:
    """Write `stage`'s marker: its fingerprint, its summary and the digest of the previous stage's marker."""
    marker = {
        "fingerprint": stage_fingerprint(cfg, stage),
        "upstream": _upstream(root, stage),
        "summary": summary,
    }
    _marker(root, stage).write_text(json.dumps(marker, default=str, indent=2))


def stage_summary(root: Path, stage: str) -> dict:
    marker = _marker(root, stage)
    return json.loads(marker.read_text()).get("summary", {}) if marker.is_file() else {}


def run_stages(cfg: Config, root: Path, stages, label: str = "") -> tuple[dict[str, str], bool]:
    """Run `stages` in order in the run folder `root` on a connected Ray, skipping each one whose outputs
    exist for this config (`stage_is_done`); returns ({label + stage: "done in N s" | "skipped ..."}, whether
    any stage ran)."""
    from longctx_core.runner.stages import call

    done: dict[str, str] = {}
    ran = False
    for stage in stages:
        key = f"{label}{stage}"
        if not cfg.run.force and stage_is_done(cfg, root, stage):
            logger.info("=== %s: outputs exist for this config, skipped (run.force=true redoes it) ===", key)
            done[key] = "skipped (outputs exist)"
            continue
        logger.info("=== %s ===", key)
        t0 = time.perf_counter()
        summary = call(stage, cfg)
        mark_stage_done(cfg, root, stage, summary)
        done[key] = f"done in {time.perf_counter() - t0:.0f} s"
        ran = True
    return done, ran
