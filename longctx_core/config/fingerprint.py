"""What a stage's outputs depend on: `stage_fingerprint(cfg, stage)` hashes the config sections that decide
them, less the keys a resubmission may change (`RESUBMISSION_KNOBS`). The pipeline's stage markers and the
train stage's checkpoint marker both use it, so they agree on what may change between a run and its
resubmission."""

from __future__ import annotations

from typing import TYPE_CHECKING

from longctx_core.fsio import digest

if TYPE_CHECKING:
    from longctx_core.config import Config

# Config sections that determine each stage's outputs (a stage also depends on the ones before it).
STAGE_INPUTS = {
    "synthesize": ("data",),
    "train": ("data", "model", "train"),
    "evaluate": ("data", "model", "train", "eval"),
}


# `train` keys a run may change on resubmission: how long to train, how often to checkpoint and log, how
# failures and resources are handled. They change neither the steps already taken nor their results.
# (`epochs`, `num_workers`, `lr` etc. do: they stay in the fingerprint.)
RESUBMISSION_KNOBS = (
    "max_steps",
    "max_failures",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "storage_path",
    "cpus_per_worker",
    "peak_tflops",
)


def stage_fingerprint(cfg: Config, stage: str) -> str:
    """Hash of the config sections (and seed) that decide `stage`'s outputs, less `RESUBMISSION_KNOBS`;
    returns 16 hex digits."""
    dumped = cfg.model_dump(mode="json")
    relevant = {k: dumped[k] for k in STAGE_INPUTS[stage]} | {"seed": cfg.run.seed}
    if "train" in relevant:
        relevant["train"] = {k: v for k, v in relevant["train"].items() if k not in RESUBMISSION_KNOBS}
    # Synthesis counts tokens with the model's tokenizer: another tokenizer means other samples.
    relevant["tokenizer"] = [cfg.model.name_or_path, cfg.model.tokenizer, dumped["model"]["tiny"]]
    return digest(relevant)
