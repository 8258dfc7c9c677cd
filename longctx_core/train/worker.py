"""One Ray Train worker's training run (one process per rank), as named phases.

    train_loop_per_worker(loop_config)      # what `driver.train` runs on every worker

    setup_model       `engine.build_engine`: 4-bit (QLoRA) or plain base with the RoPE extension, LoRA, AdamW,
                      LR schedule, DeepSpeed
    setup_data        this rank's stream of packed rows: `ray.train.get_dataset_shard("train")`
    resume            the last checkpoint of `ray.train.get_checkpoint()`: engine (adapter, optimizer,
                      scheduler), RNG states and the data position, so a restarted worker group (or a
                      resubmitted job) continues exactly where the checkpoint was taken
    train_step        one optimizer step over `grad_accum_steps` micro-batches, the loss normalised over the
                      labelled tokens of the whole step on all ranks
    save_checkpoint   every `train.checkpoint_every` steps and at the end, on every rank (Ray Train merges
                      the ranks' files into one checkpoint folder; layout in `state`)

Every rank takes the same number of steps and calls `ray.train.report` the same number of times: the
shards hold equal row counts (Ray's equal split), and before each step the ranks agree by all-reduce that
every one of them has a full step of data. Rank 0 writes the metrics (`Metrics`: log lines,
<run>/train/metrics.jsonl, Ray gauges).

Only Ray Train workers import this module (torch and DeepSpeed at the top); the driver never does.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import ray.train
import torch
import torch.distributed as dist

from longctx_core.config import Config, config_from_dict
from longctx_core.config.sources import source_names
from longctx_core.errors import LongctxError
from longctx_core.infra.layout import RunLayout
from longctx_core.infra.metrics import Metrics
from longctx_core.model.loading import load_tokenizer
from longctx_core.model.lora import save_adapter
from longctx_core.train.engine import TrainEngine, build_engine
from longctx_core.train.flops import attention_flops, flops_per_token, peak_flops
from longctx_core.train.memory import peak_memory_gb
from longctx_core.train.packing import collate_packed
from longctx_core.train.state import (
    ADAPTER_DIR,
    DS_TAG,
    TRAIN_DATASET,
    TRAIN_STATE_FILE,
    TrainState,
    checkpoint_name,
    rng_digest,
    rng_file,
    sample_digest,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """What every phase of one rank reads: the config, the run folder, this rank's place in the worker
    group, and the planned optimizer steps (for the LR schedule)."""

    cfg: Config
    run_dir: Path
    rank: int
    world: int
    total_steps: int | None

    @staticmethod
    def from_loop_config(loop_config: dict) -> Run:
        """The Run of this worker: `driver.train`'s loop config and the Ray Train context."""
        ctx = ray.train.get_context()
        return Run(
            cfg=config_from_dict(loop_config["config"]),
            run_dir=Path(loop_config["run_dir"]),
            rank=ctx.get_world_rank(),
            world=ctx.get_world_size(),
            total_steps=loop_config.get("total_steps"),
        )


# ---- setup_model, setup_data ----------------------------------------------------------------------------------


def setup_model(run: Run) -> TrainEngine:
    """`build_engine` with DeepSpeed for this rank (rank 0 logs the DeepSpeed config); returns it."""
    built = build_engine(run.cfg, run.total_steps, run.rank)
    if run.rank == 0:
        logger.info("DeepSpeed config: %s", json.dumps(built.ds_config))
    return built


def setup_data(hf_config):
    """This rank's shard of the packed stream, and the pad id used to collate micro-batches; returns
    (shard, pad id)."""
    pad = hf_config.pad_token_id
    pad_id = pad if pad is not None else (hf_config.eos_token_id or 0)
    if isinstance(pad_id, list):
        pad_id = pad_id[0]
    return ray.train.get_dataset_shard(TRAIN_DATASET), pad_id


def micro_batches(shard, train_cfg, epoch: int = 0, skip: int = 0) -> Iterator[tuple[int, int, list[dict]]]:
    """Yield (epoch, index in epoch, rows) for every micro-batch from micro-batch `skip` of `epoch` on (a
    resumed checkpoint consumed the ones before), epoch after epoch. Stops after `train.epochs` epochs, or
    never when `train.max_steps` bounds the run instead."""
    first_epoch = epoch
    while train_cfg.max_steps or epoch < train_cfg.epochs:
        start = skip if epoch == first_epoch else 0
        batches = shard.iter_batches(
            batch_size=train_cfg.micro_batch_size, batch_format="numpy", drop_last=True
        )
        n = -1
        for n, batch in enumerate(batches):
            if n < start:
                continue  # trained on before the checkpoint this run resumed from
            yield epoch, n, _rows(batch)
        if n < 0:
            return  # an empty shard: no epoch would ever yield
        epoch += 1


def _rows(batch: dict) -> list[dict]:
    """A numpy batch of packed rows (columns of arrays) as a list of row dicts."""
    n = len(batch["input_ids"])
    return [{k: batch[k][i] for k in batch} for i in range(n)]


# ---- resume -------------------------------------------------------------------------------------------------


def resume(run: Run, built: TrainEngine) -> TrainState | None:
    """Restore engine, RNG and data position from `ray.train.get_checkpoint()`; returns the checkpoint's
    TrainState, or None when there is no checkpoint to resume from."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        state = TrainState.from_file(folder / TRAIN_STATE_FILE)
        if state.world_size != run.world:
            raise LongctxError(
                f"checkpoint {folder} was written by {state.world_size} workers, this run has {run.world} "
                f"(set train.num_workers={state.world_size}, or run.force=true to start over)"
            )
        built.engine.load_checkpoint(str(folder), tag=DS_TAG, load_module_strict=False)
        rng = folder / rng_file(run.rank)
        if rng.is_file():  # LoRA dropout / NEFTune draws continue as if never interrupted
            saved = torch.load(rng, weights_only=False)
            torch.set_rng_state(saved["cpu"])
            if saved.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda"])
    logger.info(
        "rank %d resumed at step %d (epoch %d, micro-batch %d)",
        run.rank,
        state.step,
        state.epoch,
        state.batches_in_epoch,
    )
    return state


# ---- train_step ---------------------------------------------------------------------------------------------


def all_reduce_sum(values: list[float], device, world: int) -> torch.Tensor:
    """Sum `values` over the `world` ranks; returns a float64 tensor on CPU."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def have_full_step(run: Run, built: TrainEngine, micro: list) -> bool:
    """True when every rank has a full step of micro-batches (else all ranks stop together)."""
    have = 1.0 if len(micro) == run.cfg.train.grad_accum_steps else 0.0
    return int(all_reduce_sum([have], built.engine.device, run.world)[0]) == run.world


def train_step(run: Run, built: TrainEngine, micro: list, pad_id: int) -> dict:
    """One optimizer step over `micro` (grad_accum_steps micro-batches of packed rows); returns the
    step's global stats (loss, token counts, attention FLOPs, per-rank data digests).

    The loss is normalised by the labelled tokens of the whole step on all ranks (so a long answer
    weighs more than a short one, whatever row or rank it lands on), compensating DeepSpeed's mean
    over ranks and accumulation steps.
    """
    engine, world, rank = built.engine, run.world, run.rank
    names = source_names(run.cfg.data)
    # Loss per data source when the data mixes several (the per-token loss path; see losses.py).
    groups = {n: i for i, n in enumerate(names)} if len(names) > 1 else None
    extra = {"n_groups": len(names)} if groups else {}
    group_stats = [0.0] * (2 * len(names) if groups else 0)
    batches = [collate_packed(rows, pad_id, groups=groups) for _, _, rows in micro]
    rng_before = rng_digest()  # before this step's dropout / NEFTune draws
    n_local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    n_step = max(1.0, float(all_reduce_sum([n_local], engine.device, world)[0]))
    scale = world * len(batches) / n_step
    loss_total = 0.0
    engine.train()
    for b in batches:
        b = {k: v.to(engine.device) for k, v in b.items()}
        out = engine(**b, **extra)
        loss_sum = out[0]
        if groups:
            group_stats = [a + float(x) for a, x in zip(group_stats, out[2].flatten(), strict=True)]
        engine.backward(loss_sum * scale)
        engine.step()
        loss_total += float(loss_sum.detach())
    rows = [r for _, _, mb in micro for r in mb]
    real = sum(len(r["input_ids"]) for r in rows)
    lens = [int(n) for r in rows for n in r["seq_lens"]]
    digests, rngs = [0.0] * world, [0.0] * world
    digests[rank] = float(sample_digest([s for r in rows for s in r["sample_ids"]]))
    rngs[rank] = float(rng_before)
    stats = all_reduce_sum(
        [loss_total, n_local, real, len(rows), attention_flops(lens, built.hf_config), *digests, *rngs]
        + group_stats,
        engine.device,
        world,
    ).tolist()
    loss_sum, n_label, real, n_rows, attn = stats[:5]
    by_source = stats[5 + 2 * world :]
    return {
        "loss_by_source": {
            name: by_source[2 * i] / by_source[2 * i + 1]
            for i, name in enumerate(names)
            if groups and by_source[2 * i + 1] > 0
        },
        "loss": loss_sum / max(1.0, n_label),
        "label_tokens": int(n_label),
        "tokens": int(real),
        "rows": int(n_rows),
        "attention_flops": attn,
        "data_digest": [int(x) for x in stats[5 : 5 + world]],
        "rng_digest": [int(x) for x in stats[5 + world : 5 + 2 * world]],
    }


# ---- metrics ------------------------------------------------------------------------------------------------


def open_metrics(run: Run, state: TrainState, init_digest: str | None) -> Metrics:
    """Rank 0's metrics sink, after logging one row for this attempt: a restarted worker group says where
    it resumed (0 = from scratch). Returns the Metrics."""
    metrics = Metrics(
        "train", jsonl_path=RunLayout(run.run_dir).train.metrics, tags={"run": run.cfg.run.name}
    )
    metrics.log(
        {"event": "start", "resumed_from_step": state.step, "world_size": run.world}
        | ({"init_adapter_digest": init_digest} if init_digest else {})
    )
    return metrics


def step_row(run: Run, built: TrainEngine, stats: dict, state: TrainState, seconds: float, peak) -> dict:
    """The metrics row of a step that took `seconds` (loss, lr, tokens/s, packing efficiency, step time,
    memory, and MFU against `peak` FLOP/s per GPU when known); returns it."""
    row = {
        "loss": stats["loss"],
        "lr": float(built.engine.get_lr()[0]),
        "tokens_per_s": stats["tokens"] / seconds,
        "packing_efficiency": stats["tokens"] / (stats["rows"] * run.cfg.train.max_seq_len),
        "step_time_s": seconds,
        "peak_mem_gb": peak_memory_gb(),
        "epoch": state.epoch,
        "tokens_seen": state.tokens_seen,
        "label_tokens": stats["label_tokens"],
        "data_digest": stats["data_digest"],
        "rng_digest": stats["rng_digest"],
    }
    if stats["loss_by_source"]:
        row["loss_by_source"] = stats["loss_by_source"]
    if peak:
        flops = flops_per_token(built.hf_config, lora=True) * stats["tokens"] + stats["attention_flops"]
        row["mfu"] = flops / seconds / (peak * run.world)
    return row


# ---- save_checkpoint ----------------------------------------------------------------------------------------


def gathered_adapter(run: Run, built: TrainEngine) -> dict:
    """The trainable (LoRA) parameters as full CPU tensors keyed by PEFT names, on every rank.

    Under ZeRO-3 each rank holds a slice of every parameter (a plain state_dict there is empty), so they
    are gathered first (a collective: all ranks call this).
    """
    named = [(n, p) for n, p in built.peft.named_parameters() if p.requires_grad]
    if run.cfg.train.zero_stage != 3:
        return {n: p.detach().cpu().clone() for n, p in named}
    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
        return {n: p.detach().cpu().clone() for n, p in named}


def save_checkpoint(run: Run, built: TrainEngine, state: TrainState, tokenizer, metrics: dict) -> None:
    """Write this rank's part of a checkpoint and report it with `metrics` (every rank, the same number of
    times); rank 0 adds the adapter (saved with `tokenizer`) and the train state."""
    adapter = gathered_adapter(run, built)
    with tempfile.TemporaryDirectory(prefix="longctx-ckpt-") as tmp:
        folder = Path(tmp)
        built.engine.save_checkpoint(
            str(folder), tag=DS_TAG, save_latest=False, exclude_frozen_parameters=True
        )
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        torch.save({"cpu": torch.get_rng_state(), "cuda": cuda}, folder / rng_file(run.rank))
        if run.rank == 0:
            save_adapter(built.peft, folder / ADAPTER_DIR, tokenizer, state_dict=adapter)
            (folder / TRAIN_STATE_FILE).write_text(state.to_json())
        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
            checkpoint_dir_name=checkpoint_name(state.step),
        )


# ---- the loop -----------------------------------------------------------------------------------------------


def write_breadcrumb(run: Run) -> None:
    """<run>/train/workers/rank-<r>.json: this worker's pid and host (to find the process of a rank)."""
    folder = RunLayout(run.run_dir).train.workers
    folder.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "rank": run.rank, "started": time.time()}
    (folder / f"rank-{run.rank}.json").write_text(json.dumps(info))


def train_loop_per_worker(loop_config: dict) -> tuple[Run, TrainEngine]:
    """Ray Train entry point on every worker: setup_model -> setup_data -> resume -> train steps
    (+ checkpoints) -> final checkpoint. Returns this rank's Run and trained engine (tests probe them)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run = Run.from_loop_config(loop_config)
    tcfg = run.cfg.train
    write_breadcrumb(run)
    built = setup_model(run)
    tokenizer = load_tokenizer(run.cfg.model) if run.rank == 0 else None  # saved next to the adapter
    shard, pad_id = setup_data(built.hf_config)
    resumed = resume(run, built)
    state = resumed or TrainState(world_size=run.world)
    metrics = open_metrics(run, state, built.init_adapter_digest) if run.rank == 0 else None
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    peak = peak_flops(tcfg, run.cfg.model.torch_dtype, device_name)
    last_saved, last = (state.step if resumed else -1), {}
    stream = micro_batches(shard, tcfg, state.epoch, state.batches_in_epoch)
    t_last = time.perf_counter()
    while not tcfg.max_steps or state.step < tcfg.max_steps:
        micro = list(itertools.islice(stream, tcfg.grad_accum_steps))
        if not have_full_step(run, built, micro):
            break
        stats = train_step(run, built, micro, pad_id)
        epoch, index, _ = micro[-1]
        state.step += 1
        state.epoch, state.batches_in_epoch = epoch, index + 1
        state.tokens_seen += stats["tokens"]
        now = time.perf_counter()
        seconds, t_last = now - t_last, now
        if metrics is not None and state.step % tcfg.log_every == 0:
            metrics.log(step_row(run, built, stats, state, seconds, peak), step=state.step)
        last = {"loss": stats["loss"], "epoch": epoch}
        every = tcfg.checkpoint_every
        if every and state.step % every == 0:
            save_checkpoint(run, built, state, tokenizer, last)
            last_saved = state.step
    if state.step != last_saved:
        save_checkpoint(run, built, state, tokenizer, last)
    stream.close()
    return run, built
