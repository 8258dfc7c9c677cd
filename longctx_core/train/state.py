"""Where training stands, and the names driver and workers agree on: checkpoint folders and files, the
data and RNG fingerprints the metrics carry, and the storage marker that refuses resuming across a change.

A checkpoint folder `<storage>/ray-train/checkpoint-step0000006/` (Ray Train merges the ranks' files):

    engine/              DeepSpeed engine state (`DS_TAG`): each rank its optimizer partition
    adapter/             the LoRA adapter as a PEFT folder (rank 0, gathered from ZeRO-3 shards)
    trainer_state.json   `TrainState` (rank 0; the same on every rank)
    rng-rank<r>.pt       each rank's torch RNG states

and next to the checkpoints, `longctx_fingerprint.json`: the config fingerprint they were written under.
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

TRAIN_DATASET = "train"  # the Ray Dataset the driver passes to TorchTrainer; each worker reads its shard
TRAIN_STATE_FILE = "trainer_state.json"
DS_TAG = "engine"  # DeepSpeed checkpoint tag inside each checkpoint folder
ADAPTER_DIR = "adapter"
RAY_RUN_NAME = "ray-train"
FINGERPRINT_FILE = "longctx_fingerprint.json"


@dataclass
class TrainState:
    """Where training stands: optimizer steps done, and the data position (epoch, micro-batches of this
    rank's shard consumed in it). Saved in every checkpoint; the same on every rank."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    tokens_seen: int = 0
    world_size: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_file(path: Path) -> TrainState:
        return TrainState(**json.loads(Path(path).read_text()))


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint taken after `step` optimizer steps."""
    return f"checkpoint-step{step:07d}"


def rng_file(rank: int) -> str:
    """The file of a checkpoint folder that holds `rank`'s torch RNG states."""
    return f"rng-rank{rank}.pt"


def sample_digest(sample_ids) -> int:
    """A 31-bit fingerprint of the samples in a micro-batch (to check data order across restarts)."""
    return zlib.crc32("|".join(sample_ids).encode()) & 0x7FFFFFFF


def rng_digest() -> int:
    """A 31-bit fingerprint of torch's CPU RNG state (logged per rank and step: ranks must differ, a
    redone step after a resume must match)."""
    import torch

    return zlib.crc32(torch.get_rng_state().numpy().tobytes()) & 0x7FFFFFFF


def seed_rank(seed: int, rank: int) -> int:
    """Seed torch's RNGs (CPU and every GPU) with `seed + rank` and return that seed.

    Called after the model and LoRA are built with `seed` on every rank (identical initial adapters): from
    then on each rank draws its own LoRA-dropout masks and NEFTune noise, as data-parallel training
    assumes; the same rank of a rerun draws the same ones."""
    import torch

    torch.manual_seed(seed + rank)
    return seed + rank


def fingerprint(cfg) -> str:
    """Hash of what a checkpoint depends on: the train stage's fingerprint (model, train, data, seed, less
    the resubmission knobs such as `train.max_steps`), so the checkpoint marker and the pipeline's stage
    marker agree on what may change between a run and its resubmission. Resuming across a change is
    refused."""
    from longctx_core.config.fingerprint import stage_fingerprint

    return stage_fingerprint(cfg, "train")


def claim_run_folder(run_folder: Path, cfg) -> None:
    """Create `run_folder` (Ray Train's checkpoints) and mark it with `cfg`'s fingerprint; raises
    LongctxError when it already holds checkpoints of another config."""
    marker = run_folder / FINGERPRINT_FILE
    mine = fingerprint(cfg)
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] != mine:
        raise LongctxError(
            f"{run_folder} holds checkpoints of a different train/model/data config; set run.force=true "
            "to start over or pick another run.name"
        )
    run_folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": mine}))


def latest_state(run_folder: Path) -> TrainState | None:
    """The `TrainState` of the furthest checkpoint in `run_folder`, or None when it holds none."""
    states = [TrainState.from_file(p) for p in run_folder.glob(f"checkpoint-*/{TRAIN_STATE_FILE}")]
    return max(states, key=lambda s: s.step) if states else None
