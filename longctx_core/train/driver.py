"""The driver side of training: check inputs, plan the steps, launch Ray Train, publish the adapter.

    inputs = check(cfg)                     # before any Ray resource: data files, sample lengths, model
    summary = run(cfg, inputs)              # packed Ray Dataset -> TorchTrainer.fit -> <run>/train/adapter

`check` and `run` are the train stage of `longctx_core.runner.stages` (the runner starts Ray between the two).

The workers run `worker.train_loop_per_worker`; the driver never imports that module nor DeepSpeed
(`_run_worker` imports it on the worker).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from longctx_core.errors import LongctxError
from longctx_core.fsio import recover, staged_dir
from longctx_core.infra.layout import RunLayout
from longctx_core.train.state import (
    ADAPTER_DIR,
    RAY_RUN_NAME,
    TRAIN_DATASET,
    checkpoint_name,
    claim_run_folder,
    latest_state,
)

logger = logging.getLogger(__name__)


def data_path(cfg, root: Path) -> Path:
    """`train.data_path`, or the synthesize stage's <run>/data/train."""
    return Path(cfg.train.data_path).expanduser() if cfg.train.data_path else RunLayout(root).data.train


def storage_dir(cfg, root: Path) -> str:
    """Ray Train storage: `train.storage_path`, or <run>/train/ray (checkpoints under <storage>/ray-train/)."""
    return cfg.train.storage_path or str(RunLayout(root).train.storage)


def prepare_storage(cfg, root: Path) -> tuple[str, int | None]:
    """Make the Ray Train storage ready: wiped on `run.force`, refused when it holds checkpoints of another
    config; returns (storage path, step of the checkpoint a resubmission resumes from or None)."""
    storage = storage_dir(cfg, root)
    local = "://" not in storage
    run_folder = Path(storage) / RAY_RUN_NAME
    if local and cfg.run.force and run_folder.exists():
        logger.info("run.force: removing previous checkpoints in %s", run_folder)
        shutil.rmtree(run_folder)
    if not local:
        return storage, None
    claim_run_folder(run_folder, cfg)
    latest = latest_state(run_folder)
    if latest is None:
        return storage, None
    if latest.world_size != cfg.train.num_workers:
        raise LongctxError(
            f"train.num_workers: the checkpoints in {run_folder} were written by {latest.world_size} workers "
            f"(resume with train.num_workers={latest.world_size}, or run.force=true to start over)"
        )
    return storage, latest.step


def check_inputs(cfg, root: Path) -> dict:
    """Everything checkable before Ray starts: the data files and their sample lengths, the model config;
    returns {files, data, model_path}. Raises LongctxError naming the key."""
    from longctx_core.model.loading import check_model_config, resolve_model_path
    from longctx_core.train.packing import check_sample_lengths, parquet_files

    files = parquet_files(data_path(cfg, root))
    stats = check_sample_lengths(files, cfg.train.max_seq_len, cfg.train.overlong)
    check_model_config(cfg.model)
    if cfg.train.init_adapter:
        from longctx_core.train.init_adapter import check_init_adapter

        check_init_adapter(cfg.model, cfg.train.init_adapter)
    return {"files": files, "data": stats, "model_path": resolve_model_path(cfg.model)}


def estimate_total_steps(cfg, data: dict) -> tuple[int, dict | None]:
    """Optimizer steps of the run (for the LR schedule) and the expected packing: `train.max_steps`, else
    epochs x packed rows per rank / accumulation, the rows estimated by packing the recorded `n_tokens`
    (one sample per row without them or without packing). Returns (steps, packing estimate or None)."""
    from longctx_core.train.packing import estimate_packing

    t = cfg.train
    estimate = None
    rows = data["num_samples"]
    if data["lengths"] and t.packing:
        estimate = estimate_packing(data["lengths"], t.max_seq_len, t.pack_window)
        rows = estimate["rows"]
    if t.max_steps:
        return t.max_steps, estimate
    per_step = t.num_workers * t.micro_batch_size * t.grad_accum_steps
    return max(1, t.epochs * (rows // per_step)), estimate


def _publish_adapter(checkpoint_folder: Path, root: Path) -> Path:
    """Copy the adapter of a checkpoint folder to <run>/train/adapter (`fsio.staged_dir`: an older adapter
    stays in place until the new one is complete); returns the folder."""
    out = RunLayout(root).train.adapter
    with staged_dir(out) as tmp:
        shutil.copytree(Path(checkpoint_folder) / ADAPTER_DIR, tmp, dirs_exist_ok=True)
    return out


def _final_adapter(result, root: Path) -> Path:
    """`_publish_adapter` of the last checkpoint of a Ray Train result; returns the adapter folder."""
    if result.checkpoint is None:
        raise LongctxError("training finished without a checkpoint; no adapter to write")
    with result.checkpoint.as_directory() as folder:
        return _publish_adapter(Path(folder), root)


def _already_trained(cfg, root: Path, storage: str, step: int, check_inputs_result: dict) -> dict:
    """The summary of a run whose checkpoints already reach `train.max_steps`, its adapter republished from
    the latest checkpoint; returns the same keys as `train`."""
    folder = Path(storage) / RAY_RUN_NAME / checkpoint_name(step)
    logger.info("%s is at train.max_steps=%d or beyond: nothing to train", folder, cfg.train.max_steps)
    return {
        "adapter": str(_publish_adapter(folder, root)),
        "metrics": str(RunLayout(root).train.metrics),
        "steps": step,
        "total_steps_planned": cfg.train.max_steps,
        "packing_estimate": None,
        "final_loss": None,
        "checkpoint": str(folder),
        "resumed_from_step": step,
        "num_samples": check_inputs_result["data"]["num_samples"],
        "wall_s": 0.0,
    }


def _run_worker(loop_config: dict) -> None:
    """Ray Train's function on every worker: `worker.train_loop_per_worker`, imported there so that the
    driver, which pickles this function by reference, never loads DeepSpeed."""
    from longctx_core.train.worker import train_loop_per_worker

    train_loop_per_worker(loop_config)


def _trainer(cfg, root: Path, inputs: dict, storage: str, total: int, worker_fn):
    """The `TorchTrainer` of this run: its workers, their resources, storage and the packed dataset."""
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import DataConfig as RayDataConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    from longctx_core.infra.resources import cpus_per_actor
    from longctx_core.train.packing import packed_dataset

    t = cfg.train
    # Logical CPU shares, not threads: training workers and the tokenising actors take a quarter of the
    # cluster each, so Ray Data's own tasks (file listing asks for a whole CPU) always find room.
    worker_cpus = t.cpus_per_worker or cpus_per_actor(t.num_workers, share=0.25, cap=8.0)
    data_cpus = cpus_per_actor(t.data_workers, share=0.25)
    ds = packed_dataset(inputs["files"], inputs["model_path"], t, cfg.run.seed, data_cpus)
    trainer = TorchTrainer(
        worker_fn or _run_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "run_dir": str(root), "total_steps": total},
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            # A custom accelerator resource (make cluster-sim's GPU pool) places CPU workers on that node type.
            resources_per_worker={"CPU": worker_cpus}
            | ({t.accelerator_resource: 1.0} if t.accelerator_resource != "GPU" else {}),
        ),
        run_config=RayRunConfig(
            name=RAY_RUN_NAME,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
        ),
        datasets={TRAIN_DATASET: ds},
        # Ordered execution makes the split deterministic, so a rank's rows after a restart are the ones
        # its data position counted.
        dataset_config=RayDataConfig(execution_options=ExecutionOptions(preserve_order=True)),
    )
    return trainer, worker_cpus


def _log_plan(cfg, inputs: dict, packing: dict | None, worker_cpus: float, resume_step: int | None) -> None:
    t = cfg.train
    if packing:
        logger.info(
            "packing estimate: %d samples -> %d rows of %d tokens (efficiency %.3f)",
            packing["samples"],
            packing["rows"],
            t.max_seq_len,
            packing["efficiency"],
        )
    logger.info(
        "training on %d worker(s) x %.2f CPU%s, ZeRO-%d, %s; %d samples; %s",
        t.num_workers,
        worker_cpus,
        " + 1 GPU" if t.use_gpu else "",
        t.zero_stage,
        "4-bit QLoRA" if cfg.model.quantization.load_in_4bit else "LoRA",
        inputs["data"]["num_samples"],
        f"resuming from step {resume_step}" if resume_step else "from scratch",
    )


def train(cfg, root: Path, inputs: dict | None = None, worker_fn=None) -> dict:
    """Fine-tune on Ray Train and write <run>/train/{metrics.jsonl, adapter/}; returns the summary.

    `inputs` is `check_inputs`'s result when the caller ran it already; inputs are checked before Ray
    starts (the stage runner runs `check`) either way. A run whose storage holds checkpoints resumes from
    the latest. `worker_fn` replaces `worker.train_loop_per_worker` (tests wrap it to probe the trained
    engine).
    """
    layout = RunLayout(root).train
    inputs = inputs or check_inputs(cfg, root)
    recover(layout.adapter)  # a crash mid-replacement of the last adapter: put one back
    storage, resume_step = prepare_storage(cfg, root)
    if cfg.run.force:
        layout.metrics.unlink(missing_ok=True)
    if resume_step and cfg.train.max_steps and resume_step >= cfg.train.max_steps:
        # A resubmission of a finished run (e.g. the pipeline after the train stage ran alone): Ray Train
        # would resume and report nothing. The last checkpoint is the result.
        return _already_trained(cfg, root, storage, resume_step, check_inputs_result=inputs)
    total, packing = estimate_total_steps(cfg, inputs["data"])
    trainer, worker_cpus = _trainer(cfg, root, inputs, storage, total, worker_fn)
    _log_plan(cfg, inputs, packing, worker_cpus, resume_step)
    started = time.monotonic()
    result = trainer.fit()
    steps = int(result.metrics.get("step", 0)) if result.metrics else 0
    if steps == 0:
        raise LongctxError(
            "no training step ran: fewer packed rows than train.num_workers x micro_batch_size x "
            "grad_accum_steps (add data or lower them)"
        )
    adapter = _final_adapter(result, root)
    return {
        "adapter": str(adapter),
        "metrics": str(layout.metrics),
        "steps": steps,
        "total_steps_planned": total,
        "packing_estimate": packing,
        "final_loss": result.metrics.get("loss"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "resumed_from_step": resume_step,
        "num_samples": inputs["data"]["num_samples"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def check(cfg) -> dict:
    """The train stage's checks (no Ray): `check_inputs` for the run folder of `cfg`."""
    return check_inputs(cfg, RunLayout.of(cfg).root)


def run(cfg, inputs: dict | None = None) -> dict:
    """The train stage on a connected Ray: prepare the run folder and train; returns the summary (adapter
    path, steps, final loss, ...)."""
    from longctx_core.infra.runs import prepare_run_dir

    summary = train(cfg, prepare_run_dir(cfg, "train"), inputs)
    logger.info("train done: %s", summary)
    return summary
