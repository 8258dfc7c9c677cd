"""`train:` section: Ray Train workers, DeepSpeed, optimisation, packing, checkpoints.

Defaults are the CPU demo's (tiny model, fp32, ZeRO-2, short rows); GPU presets raise `max_seq_len`,
`grad_accum_steps` and `checkpoint_every` and set `use_gpu: true`.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from longctx_core.config.base import Section


class TrainConfig(Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = Field(False, description="Workers ask for one GPU each.")
    accelerator_resource: str = Field(
        "GPU",
        min_length=1,
        description="Ray resource that places a worker on the training node type. GPU (default): "
        "use_gpu workers reserve one GPU each. Any other name (a custom resource that node type advertises, "
        "e.g. the simulated cluster's GPU pool in make cluster-sim): each worker reserves one unit of it and "
        "computes on CPU, so use_gpu must stay false.",
    )
    max_steps: Optional[int] = Field(
        None, ge=1, description="Stop after this many optimizer steps (smoke knob); unset = `epochs` passes."
    )
    epochs: int = Field(1, ge=1, description="Passes over the data when max_steps is unset.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    max_seq_len: int = Field(
        2048, ge=16, description="Tokens per packed row (and the longest sample allowed)."
    )

    # ---- data ------------------------------------------------------------------------------------------------
    data_path: Optional[str] = Field(
        None,
        description="Folder (or one file) of training Parquet with the sample-row columns; unset = "
        "<run folder>/data/train written by the synthesize stage.",
    )
    packing: bool = Field(
        True,
        description="Bin-pack samples into rows of max_seq_len tokens (first-fit-decreasing). False = one "
        "sample per row (the padded baseline).",
    )
    pack_window: int = Field(
        256,
        ge=1,
        description="Samples bin-packed together: packing runs on windows of this many consecutive (shuffled) "
        "samples, so it streams; larger windows pack tighter.",
    )
    overlong: Literal["error", "truncate"] = Field(
        "error",
        description="A sample longer than max_seq_len: error (stop before training) or truncate it to "
        "max_seq_len (counted in the metrics either way).",
    )
    shuffle: bool = Field(True, description="Shuffle samples with run.seed before packing.")
    data_workers: int = Field(
        1, ge=1, description="Ray Data actors that tokenise and pack (one tokenizer each)."
    )

    init_adapter: Optional[str] = Field(
        None,
        description="Start from this PEFT adapter folder (a user's adapter, or a previous stage's "
        "<run>/train/adapter) instead of a fresh LoRA; its r, alpha and target modules must match model.lora.",
    )

    # ---- optimisation -------------------------------------------------------------------------------------
    micro_batch_size: int = Field(1, ge=1, description="Packed rows per worker per forward/backward.")
    grad_accum_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step (effective batch = micro x accum x workers)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 = off).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="LR after warmup: constant, or cosine decay to min_lr_ratio x lr."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps from 0 to lr.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of lr.")
    neftune_alpha: Optional[float] = Field(
        None,
        gt=0,
        description="NEFTune noise on input embeddings (the seed recipe used 5); scaled per packed sample "
        "as alpha / sqrt(sample_len * hidden).",
    )
    loss_chunk_size: int = Field(
        1024,
        ge=16,
        description="Tokens per cross-entropy chunk: fp32 logits exist for one chunk at a time (recomputed in "
        "backward), never for the whole row.",
    )
    use_liger: bool = Field(
        True,
        description="On GPU, use Liger's fused linear cross-entropy when liger-kernel is installed "
        "(falls back to the chunked loss otherwise).",
    )

    # ---- DeepSpeed -------------------------------------------------------------------------------------------
    zero_stage: Literal[2, 3] = Field(
        2, description="DeepSpeed ZeRO stage: 2 shards optimizer state and gradients, 3 also the weights."
    )
    offload_optimizer: bool = Field(
        False, description="Keep optimizer state in CPU memory (ZeRO-Offload); GPU memory for longer rows."
    )

    # ---- resources, checkpoints, metrics ------------------------------------------------------------------
    cpus_per_worker: Optional[float] = Field(
        None,
        gt=0,
        description="CPUs each Ray Train worker reserves (a scheduling share, not a thread limit); unset = "
        "a quarter of the cluster's CPUs shared by the workers (capped at 8 each), the rest left to Ray Data.",
    )
    checkpoint_every: int = Field(
        50, ge=0, description="Optimizer steps between checkpoints (0 = only at the end)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage (oldest deleted).")
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts from the last checkpoint before the run fails."
    )
    storage_path: Optional[str] = Field(
        None,
        description="Ray Train storage for checkpoints (local folder, shared mount or s3://...); unset = "
        "<run folder>/train/ray. A resubmitted run with the same storage resumes from its last checkpoint.",
    )
    log_every: int = Field(1, ge=1, description="Optimizer steps between metric rows.")
    peak_tflops: Optional[float] = Field(
        None,
        gt=0,
        description="Peak dense TFLOP/s of one GPU in the training dtype, for MFU; unset = looked up by the "
        "exact GPU model in longctx_core.train.flops.PEAK_TFLOPS, no MFU when unknown or on CPU.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.warmup_steps and self.max_steps and self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps: {self.warmup_steps} is not below max_steps={self.max_steps} (no step would "
                "run at the peak learning rate)"
            )
        if self.accelerator_resource != "GPU" and self.use_gpu:
            raise ValueError(
                f"accelerator_resource: '{self.accelerator_resource}' stands in for a GPU on CPU workers; "
                "set use_gpu=false (or accelerator_resource=GPU for real GPUs)"
            )
        lo, hi = self.adam_betas
        if not (0 <= lo < 1 and 0 <= hi < 1):
            raise ValueError(f"adam_betas: each must be in [0, 1), got [{lo}, {hi}]")
        return self
