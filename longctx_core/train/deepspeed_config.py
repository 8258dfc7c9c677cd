"""The DeepSpeed config dict, built from the `train:` and `model:` sections.

    ds_config = deepspeed_config(cfg.train, cfg.model)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=sched, config=ds_config)

Choices made here, with their reasons:
- The optimizer is the caller's torch AdamW (`zero_allow_untested_optimizer`): DeepSpeed then compiles no
  optimizer op (its FusedAdam/CPUAdam take ~40 s to build on first use and the CPU ones need AVX paths).
  With optimizer offload on GPU, DeepSpeed's own CPU Adam is requested instead: a torch AdamW over CPU
  tensors would be the bottleneck there.
- Precision follows `model.torch_dtype`: bf16 on GPU, fp32 on CPU (fp16 needs loss scaling: GPU only).
- The LR schedule is a torch scheduler passed to `deepspeed.initialize` (so it is checkpointed with the
  engine), not DeepSpeed's own `scheduler` section.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def _zero_section(train_cfg) -> dict:
    """The `zero_optimization` block for ZeRO-2/3, with optional optimizer offload to CPU."""
    zero: dict = {
        "stage": train_cfg.zero_stage,
        "overlap_comm": bool(train_cfg.use_gpu),  # overlap needs CUDA streams; on CPU it only adds copies
        "contiguous_gradients": True,
        "reduce_scatter": True,
    }
    if train_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(train_cfg.use_gpu)}
    if train_cfg.zero_stage == 3:
        # Adapters are gathered explicitly for saving (GatheredParameters); never gather the 16-bit base.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return zero


def uses_deepspeed_optimizer(train_cfg) -> bool:
    """True when DeepSpeed should build its own (CPU) Adam: optimizer offload on GPU workers."""
    return bool(train_cfg.offload_optimizer and train_cfg.use_gpu)


def deepspeed_config(train_cfg, model_cfg) -> dict:
    """The DeepSpeed config dict for `train:` (micro-batch, accumulation, clipping, ZeRO, offload) and the
    precision of `model.torch_dtype`; returns a plain dict (JSON-serialisable, logged by the caller)."""
    dtype = model_cfg.torch_dtype
    config: dict = {
        "train_micro_batch_size_per_gpu": train_cfg.micro_batch_size,
        "gradient_accumulation_steps": train_cfg.grad_accum_steps,
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": _zero_section(train_cfg),
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the project's metrics interface reports; keep DeepSpeed's logs quiet
        "wall_clock_breakdown": False,
    }
    if uses_deepspeed_optimizer(train_cfg):
        config["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": train_cfg.lr,
                "betas": list(train_cfg.adam_betas),
                "weight_decay": train_cfg.weight_decay,
            },
        }
    elif train_cfg.offload_optimizer:
        # A torch AdamW stepping offloaded CPU state: DeepSpeed would otherwise insist on its CPU Adam.
        config["zero_force_ds_cpu_optimizer"] = False
    return config


# A JIT build of a torch C++ extension (DeepSpeed builds its CPU shared-memory comm op on first use) takes
# ~30 s and holds `<build dir>/lock` meanwhile; every other process waits for that file to disappear, with no
# timeout. A build that was killed leaves the file behind and every later training hangs in
# `deepspeed.initialize`. Locks far older than any build are removed before initializing.
STALE_BUILD_LOCK_S = 900.0


def clear_stale_build_locks(root: str | None = None, max_age_s: float = STALE_BUILD_LOCK_S) -> list[str]:
    """Remove `<root>/<python-tag>/<extension>/lock` files older than `max_age_s`; returns what it removed.
    `root` defaults to $TORCH_EXTENSIONS_DIR or torch's default build root."""
    if root is None:
        from torch.utils.cpp_extension import get_default_build_root

        root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    removed = []
    now = time.time()
    for lock in Path(root).glob("*/*/lock"):
        try:
            age = now - lock.stat().st_mtime
            if age > max_age_s:
                lock.unlink()
                removed.append(str(lock))
                logger.warning("removed a stale extension build lock (%.0f min old): %s", age / 60, lock)
        except FileNotFoundError:  # another rank removed it first
            continue
    return removed
