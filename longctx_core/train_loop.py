"""Fine-tuning on Ray Train: the per-worker loop as named phases, and the driver that launches it.

    summary = train(cfg, run_dir)      # driver: checks inputs, builds the packed Ray Dataset, fits, saves the adapter

Per worker (`train_loop_per_worker`, one process per rank):

    setup_model       4-bit (QLoRA) or plain base with the RoPE extension, LoRA, AdamW, LR schedule, DeepSpeed
    setup_data        this rank's stream of packed rows: `ray.train.get_dataset_shard("train")`
    resume            the last checkpoint of `ray.train.get_checkpoint()`: engine (adapter, optimizer,
                      scheduler), RNG states and the data position, so a restarted worker group (or a
                      resubmitted job) continues exactly where the checkpoint was taken
    train_step        one optimizer step over `grad_accum_steps` micro-batches, the loss normalised over the
                      labelled tokens of the whole step on all ranks
    save_checkpoint   every `train.checkpoint_every` steps and at the end, on every rank (Ray Train merges
                      the ranks' files into one checkpoint folder): DeepSpeed engine state (each rank its
                      optimizer partition), the adapter gathered from ZeRO-3 shards as a PEFT folder,
                      `trainer_state.json` (step + data position) and each rank's RNG state

Every rank takes the same number of steps and calls `ray.train.report` the same number of times: the
shards hold equal row counts (Ray's equal split), and before each step the ranks agree by all-reduce that
every one of them has a full step of data. Rank 0 writes the metrics (`Metrics`: log lines,
<run>/train/metrics.jsonl, Ray gauges).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from longctx_core.errors import LongctxError
from longctx_core.fsio import recover, staged_dir

logger = logging.getLogger(__name__)

TRAIN_DATASET = "train"
STATE_FILE = "trainer_state.json"
DS_TAG = "engine"  # DeepSpeed checkpoint tag inside each checkpoint folder
ADAPTER_DIR = "adapter"

# Peak dense bf16/fp16 TFLOP/s per GPU by device-name substring (vendor datasheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "V100": 125.0}


# ---- FLOPs and MFU ----------------------------------------------------------------------------------------


def matmul_params(hf_config) -> int:
    """N for the FLOPs count: weights of every matmul a token passes through (attention + MLP projections of
    all layers, and the output head); the embedding lookup is not a matmul. Read from the config, so the
    count is the same for a 4-bit model (whose packed weights hold half the elements)."""
    d = hf_config.hidden_size
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or d // heads
    kv = getattr(hf_config, "num_key_value_heads", None) or heads
    attn = d * heads * head_dim * 2 + d * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * d * hf_config.intermediate_size  # gate, up, down
    return hf_config.num_hidden_layers * (attn + mlp) + d * hf_config.vocab_size


def attention_flops(seq_lens, hf_config) -> float:
    """Causal attention FLOPs of forward + backward for packed samples of `seq_lens` tokens.

    Per layer and sample of L tokens, QK^T and AV are 2 x 2·L²·d_attn FLOPs, halved by the causal mask;
    backward is twice forward: 6·L²·d_attn per layer. Summed per sample: packing does not add cross-sample
    attention work.
    """
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    per_l2 = 6 * hf_config.num_hidden_layers * heads * head_dim
    return float(per_l2 * sum(int(n) ** 2 for n in seq_lens))


def flops_per_token(hf_config, lora: bool) -> float:
    """Matmul FLOPs per trained token: 4N with frozen base weights (LoRA: forward 2N + activation gradients
    2N, no weight gradients), 6N for full training. Recomputation by gradient checkpointing is not counted
    (MFU, not hardware FLOPs utilisation); attention comes on top (`attention_flops`)."""
    return (4.0 if lora else 6.0) * matmul_params(hf_config)


def peak_flops(train_cfg, dtype: str) -> float | None:
    """Peak FLOP/s of this worker's GPU for MFU: `train.peak_tflops`, else the table for bf16/fp16;
    None on CPU or for an unknown device."""
    import torch

    if not torch.cuda.is_available():
        return None
    if train_cfg.peak_tflops:
        return train_cfg.peak_tflops * 1e12
    if dtype not in ("bfloat16", "float16"):
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def peak_memory_gb() -> float:
    """Peak memory of this process: max allocated CUDA memory on GPU, else the peak RSS (GiB)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


# ---- LR schedule ------------------------------------------------------------------------------------------


def lr_lambda(train_cfg, total_steps: int | None):
    """The multiplier of the peak LR at each optimizer step: linear warmup, then constant or cosine decay
    to `min_lr_ratio` over `total_steps` (cosine without a known total stays constant). Returns a function."""
    import math

    warm, floor, schedule = train_cfg.warmup_steps, train_cfg.min_lr_ratio, train_cfg.lr_schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant" or not total_steps:
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# ---- worker-side state --------------------------------------------------------------------------------------


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


def _digest(sample_ids) -> int:
    """A 31-bit fingerprint of the samples in a micro-batch (to check data order across restarts)."""
    return zlib.crc32("|".join(sample_ids).encode()) & 0x7FFFFFFF


def seed_rank(seed: int, rank: int) -> int:
    """Seed torch's RNGs (CPU and every GPU) with `seed + rank` and return that seed.

    Called after the model and LoRA are built with `seed` on every rank (identical initial adapters): from
    then on each rank draws its own LoRA-dropout masks and NEFTune noise, as data-parallel training
    assumes; the same rank of a rerun draws the same ones."""
    import torch

    torch.manual_seed(seed + rank)
    return seed + rank


def rng_digest() -> int:
    """A 31-bit fingerprint of torch's CPU RNG state (logged per rank and step: ranks must differ, a
    redone step after a resume must match)."""
    import torch

    return zlib.crc32(torch.get_rng_state().numpy().tobytes()) & 0x7FFFFFFF


class Trainer:
    """One Ray Train worker's training run; `run()` calls the phases in order."""

    def __init__(self, loop_config: dict):
        import ray.train

        from longctx_core.config import config_from_dict

        self.cfg = config_from_dict(loop_config["config"])
        self.tcfg = self.cfg.train
        self.run_dir = Path(loop_config["run_dir"])
        self.total_steps: int | None = loop_config.get("total_steps")
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.state = TrainState(world_size=self.world)
        self.metrics = None
        self.t_last = time.perf_counter()

    # -- setup_model ----------------------------------------------------------------------------------------

    def setup_model(self) -> None:
        """Load the base (4-bit when configured), add LoRA, wrap it with the packed loss, build AdamW + the
        LR schedule and the DeepSpeed engine (`self.engine`, `self.peft`)."""
        import deepspeed  # imported in the worker: the driver never initialises DeepSpeed
        import torch

        from longctx_core.deepspeed_config import (
            clear_stale_build_locks,
            deepspeed_config,
            uses_deepspeed_optimizer,
        )
        from longctx_core.losses import PackedCausalLM
        from longctx_core.modeling import add_lora, load_model, load_tokenizer

        torch.manual_seed(self.cfg.run.seed)  # same LoRA init on every rank
        model = load_model(self.cfg.model)
        self.peft = add_lora(model, self.cfg.model)
        self.init_digest = None
        if self.tcfg.init_adapter:  # before DeepSpeed, whose ZeRO-3 would partition the LoRA weights
            from longctx_core.init_adapter import load_init_adapter

            self.init_digest = load_init_adapter(self.peft, self.tcfg.init_adapter)
        seed_rank(self.cfg.run.seed, self.rank)  # from here on: LoRA dropout / NEFTune noise differ by rank
        self.hf_config = self.peft.get_base_model().config
        self.tokenizer = load_tokenizer(self.cfg.model) if self.rank == 0 else None
        wrapper = PackedCausalLM(
            self.peft, self.tcfg.loss_chunk_size, self.tcfg.neftune_alpha, self.tcfg.use_liger
        )
        ds_config = deepspeed_config(self.tcfg, self.cfg.model)
        params = [p for p in wrapper.parameters() if p.requires_grad]
        optimizer = None
        if not uses_deepspeed_optimizer(self.tcfg):
            optimizer = torch.optim.AdamW(
                params, lr=self.tcfg.lr, betas=self.tcfg.adam_betas, weight_decay=self.tcfg.weight_decay
            )
        factor = lr_lambda(self.tcfg, self.total_steps)
        if optimizer is None:  # DeepSpeed builds the optimizer: it calls this with it
            sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)  # noqa: E731
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        clear_stale_build_locks()  # a killed JIT build of DeepSpeed's comm op would hang initialize forever
        self.engine, _, _, _ = deepspeed.initialize(
            model=wrapper, model_parameters=params, optimizer=optimizer, lr_scheduler=sched, config=ds_config
        )
        self.zero3 = self.tcfg.zero_stage == 3
        self.flops_token = flops_per_token(self.hf_config, lora=True)
        self.peak = peak_flops(self.tcfg, self.cfg.model.torch_dtype)
        if self.rank == 0:
            logger.info("DeepSpeed config: %s", json.dumps(ds_config))

    # -- setup_data -----------------------------------------------------------------------------------------

    def setup_data(self) -> None:
        """This rank's shard of the packed stream and the pad id used to collate micro-batches."""
        import ray.train

        self.shard = ray.train.get_dataset_shard(TRAIN_DATASET)
        pad = self.hf_config.pad_token_id
        self.pad_id = pad if pad is not None else (self.hf_config.eos_token_id or 0)
        if isinstance(self.pad_id, list):
            self.pad_id = self.pad_id[0]

    def micro_batches(self):
        """Yield (epoch, index in epoch, rows) for every micro-batch still to train on, epoch after epoch,
        skipping the ones a resumed checkpoint already consumed. Stops after `train.epochs` epochs, or
        never when `train.max_steps` bounds the run instead."""
        epoch = self.state.epoch
        while self.tcfg.max_steps or epoch < self.tcfg.epochs:
            skip = self.state.batches_in_epoch if epoch == self.state.epoch else 0
            batches = self.shard.iter_batches(
                batch_size=self.tcfg.micro_batch_size, batch_format="numpy", drop_last=True
            )
            n = -1
            for n, batch in enumerate(batches):
                if n < skip:
                    continue  # trained on before the checkpoint this run resumed from
                yield epoch, n, _rows(batch)
            if n < 0:
                return  # an empty shard: no epoch would ever yield
            epoch += 1

    # -- resume ---------------------------------------------------------------------------------------------

    def resume(self) -> bool:
        """Restore engine, RNG and data position from `ray.train.get_checkpoint()`; returns whether it did."""
        import ray.train
        import torch

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return False
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            state = TrainState.from_file(folder / STATE_FILE)
            if state.world_size != self.world:
                raise LongctxError(
                    f"checkpoint {folder} was written by {state.world_size} workers, this run has {self.world} "
                    f"(set train.num_workers={state.world_size}, or run.force=true to start over)"
                )
            self.engine.load_checkpoint(str(folder), tag=DS_TAG, load_module_strict=False)
            rng = folder / f"rng-rank{self.rank}.pt"
            if rng.is_file():  # LoRA dropout / NEFTune draws continue as if never interrupted
                saved = torch.load(rng, weights_only=False)
                torch.set_rng_state(saved["cpu"])
                if saved.get("cuda") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(saved["cuda"])
        self.state = state
        logger.info(
            "rank %d resumed at step %d (epoch %d, micro-batch %d)",
            self.rank,
            state.step,
            state.epoch,
            state.batches_in_epoch,
        )
        return True

    # -- train_step ------------------------------------------------------------------------------------------

    def _all_reduce(self, values: list[float]):
        """Sum `values` over ranks; returns a float64 tensor on CPU."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.engine.device)
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def train_step(self, micro: list) -> dict:
        """One optimizer step over `micro` (grad_accum_steps micro-batches of packed rows); returns the
        step's global stats (loss, token counts, attention FLOPs, per-rank data digests).

        The loss is normalised by the labelled tokens of the whole step on all ranks (so a long answer
        weighs more than a short one, whatever row or rank it lands on), compensating DeepSpeed's mean
        over ranks and accumulation steps.
        """
        from longctx_core.config.sources import source_names
        from longctx_core.packing import collate

        names = source_names(self.cfg.data)
        # Loss per data source when the data mixes several (the per-token loss path; see losses.py).
        groups = {n: i for i, n in enumerate(names)} if len(names) > 1 else None
        extra = {"n_groups": len(names)} if groups else {}
        group_stats = [0.0] * (2 * len(names) if groups else 0)
        batches = [collate(rows, self.pad_id, groups=groups) for _, _, rows in micro]
        rng_before = rng_digest()  # before this step's dropout / NEFTune draws
        n_local = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        n_step = max(1.0, float(self._all_reduce([n_local])[0]))
        scale = self.world * len(batches) / n_step
        loss_total = 0.0
        self.engine.train()
        for b in batches:
            b = {k: v.to(self.engine.device) for k, v in b.items()}
            out = self.engine(**b, **extra)
            loss_sum = out[0]
            if groups:
                group_stats = [a + float(x) for a, x in zip(group_stats, out[2].flatten(), strict=True)]
            self.engine.backward(loss_sum * scale)
            self.engine.step()
            loss_total += float(loss_sum.detach())
        rows = [r for _, _, mb in micro for r in mb]
        real = sum(len(r["input_ids"]) for r in rows)
        lens = [int(n) for r in rows for n in r["seq_lens"]]
        digests, rngs = [0.0] * self.world, [0.0] * self.world
        digests[self.rank] = float(_digest([s for r in rows for s in r["sample_ids"]]))
        rngs[self.rank] = float(rng_before)
        stats = self._all_reduce(
            [loss_total, n_local, real, len(rows), attention_flops(lens, self.hf_config), *digests, *rngs]
            + group_stats
        ).tolist()
        loss_sum, n_label, real, n_rows, attn = stats[:5]
        by_source = stats[5 + 2 * self.world :]
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
            "data_digest": [int(x) for x in stats[5 : 5 + self.world]],
            "rng_digest": [int(x) for x in stats[5 + self.world : 5 + 2 * self.world]],
        }

    def _have_full_step(self, micro: list) -> bool:
        """True when every rank has a full step of micro-batches (else all ranks stop together)."""
        have = 1.0 if len(micro) == self.tcfg.grad_accum_steps else 0.0
        return int(self._all_reduce([have])[0]) == self.world

    def log_step(self, stats: dict, epoch: int) -> None:
        """Rank 0: one metrics row (loss, lr, tokens/s, packing efficiency, step time, memory, MFU)."""
        now = time.perf_counter()
        dt, self.t_last = now - self.t_last, now
        if self.metrics is None or self.state.step % self.tcfg.log_every:
            return
        flops = self.flops_token * stats["tokens"] + stats["attention_flops"]
        row = {
            "loss": stats["loss"],
            "lr": float(self.engine.get_lr()[0]),
            "tokens_per_s": stats["tokens"] / dt,
            "packing_efficiency": stats["tokens"] / (stats["rows"] * self.tcfg.max_seq_len),
            "step_time_s": dt,
            "peak_mem_gb": peak_memory_gb(),
            "epoch": epoch,
            "tokens_seen": self.state.tokens_seen,
            "label_tokens": stats["label_tokens"],
            "data_digest": stats["data_digest"],
            "rng_digest": stats["rng_digest"],
        }
        if stats["loss_by_source"]:
            row["loss_by_source"] = stats["loss_by_source"]
        if self.peak:
            row["mfu"] = flops / dt / (self.peak * self.world)
        self.metrics.log(row, step=self.state.step)

    # -- save_checkpoint --------------------------------------------------------------------------------------

    def gathered_adapter(self) -> dict:
        """The trainable (LoRA) parameters as full CPU tensors keyed by PEFT names, on every rank.

        Under ZeRO-3 each rank holds a slice of every parameter (a plain state_dict there is empty), so they
        are gathered first (a collective: all ranks call this).
        """
        import deepspeed

        named = [(n, p) for n, p in self.peft.named_parameters() if p.requires_grad]
        if not self.zero3:
            return {n: p.detach().cpu().clone() for n, p in named}
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().cpu().clone() for n, p in named}

    def save_checkpoint(self, metrics: dict) -> None:
        """Write this rank's part of a checkpoint and report it (every rank, the same number of times)."""
        import ray.train
        import torch

        from longctx_core.modeling import save_adapter

        adapter = self.gathered_adapter()
        with tempfile.TemporaryDirectory(prefix="longctx-ckpt-") as tmp:
            folder = Path(tmp)
            self.engine.save_checkpoint(
                str(folder), tag=DS_TAG, save_latest=False, exclude_frozen_parameters=True
            )
            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            torch.save({"cpu": torch.get_rng_state(), "cuda": cuda}, folder / f"rng-rank{self.rank}.pt")
            if self.rank == 0:
                save_adapter(self.peft, folder / ADAPTER_DIR, self.tokenizer, state_dict=adapter)
                (folder / STATE_FILE).write_text(self.state.to_json())
            ray.train.report(
                {**metrics, "step": self.state.step},
                checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
                checkpoint_dir_name=checkpoint_name(self.state.step),
            )

    # -- the loop -------------------------------------------------------------------------------------------

    def _write_breadcrumb(self) -> None:
        """<run>/train/workers/rank-<r>.json: this worker's pid and host (to find the process of a rank)."""
        import socket

        folder = self.run_dir / "train" / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "rank": self.rank, "started": time.time()}
        (folder / f"rank-{self.rank}.json").write_text(json.dumps(info))

    def run(self) -> None:
        """setup_model -> setup_data -> resume -> train steps (+ checkpoints) -> final checkpoint."""
        from longctx_core.metrics import Metrics

        self._write_breadcrumb()
        self.setup_model()
        self.setup_data()
        resumed = self.resume()
        if self.rank == 0:
            self.metrics = Metrics(
                "train",
                jsonl_path=self.run_dir / "train" / "metrics.jsonl",
                tags={"run": self.cfg.run.name},
            )
            # One row per attempt: a restarted worker group says where it resumed (0 = from scratch).
            self.metrics.log(
                {"event": "start", "resumed_from_step": self.state.step, "world_size": self.world}
                | ({"init_adapter_digest": self.init_digest} if self.init_digest else {})
            )
        last_saved, last = (self.state.step if resumed else -1), {}
        stream = self.micro_batches()
        self.t_last = time.perf_counter()
        while not self.tcfg.max_steps or self.state.step < self.tcfg.max_steps:
            micro = [mb for _, mb in zip(range(self.tcfg.grad_accum_steps), stream, strict=False)]
            if not self._have_full_step(micro):
                break
            stats = self.train_step(micro)
            epoch, index, _ = micro[-1]
            self.state.step += 1
            self.state.epoch, self.state.batches_in_epoch = epoch, index + 1
            self.state.tokens_seen += stats["tokens"]
            self.log_step(stats, epoch)
            last = {"loss": stats["loss"], "epoch": epoch}
            every = self.tcfg.checkpoint_every
            if every and self.state.step % every == 0:
                self.save_checkpoint(last)
                last_saved = self.state.step
        if self.state.step != last_saved:
            self.save_checkpoint(last)
        stream.close()


def _rows(batch: dict) -> list[dict]:
    """A numpy batch of packed rows (columns of arrays) as a list of row dicts."""
    n = len(batch["input_ids"])
    return [{k: batch[k][i] for k in batch} for i in range(n)]


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train entry point on every worker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Trainer(loop_config).run()


# ---- driver side ----------------------------------------------------------------------------------------------


def data_path(cfg, root: Path) -> Path:
    """`train.data_path`, or the synthesize stage's <run>/data/train."""
    return Path(cfg.train.data_path).expanduser() if cfg.train.data_path else root / "data" / "train"


def storage_dir(cfg, root: Path) -> str:
    """Ray Train storage: `train.storage_path`, or <run>/train/ray (checkpoints under <storage>/ray-train/)."""
    return cfg.train.storage_path or str(root / "train" / "ray")


RAY_RUN_NAME = "ray-train"


def fingerprint(cfg) -> str:
    """Hash of what a checkpoint depends on: the train stage's fingerprint (model, train, data, seed, less
    the resubmission knobs such as `train.max_steps`), so the checkpoint marker and the pipeline's stage
    marker agree on what may change between a run and its resubmission. Resuming across a change is
    refused."""
    from longctx_core.pipeline import stage_fingerprint

    return stage_fingerprint(cfg, "train")


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
    marker = run_folder / "longctx_fingerprint.json"
    mine = fingerprint(cfg)
    if marker.is_file() and json.loads(marker.read_text())["fingerprint"] != mine:
        raise LongctxError(
            f"{run_folder} holds checkpoints of a different train/model/data config; set run.force=true "
            "to start over or pick another run.name"
        )
    run_folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fingerprint": mine}))
    states = [TrainState.from_file(p) for p in run_folder.glob(f"checkpoint-*/{STATE_FILE}")]
    if not states:
        return storage, None
    latest = max(states, key=lambda s: s.step)
    if latest.world_size != cfg.train.num_workers:
        raise LongctxError(
            f"train.num_workers: the checkpoints in {run_folder} were written by {latest.world_size} workers "
            f"(resume with train.num_workers={latest.world_size}, or run.force=true to start over)"
        )
    return storage, latest.step


def check_inputs(cfg, root: Path) -> dict:
    """Everything checkable before Ray starts: the data files and their sample lengths, the model config;
    returns {files, data, model_path}. Raises LongctxError naming the key."""
    from longctx_core.modeling import check_model_config, resolve_model_path
    from longctx_core.packing import check_sample_lengths, parquet_files

    files = parquet_files(data_path(cfg, root))
    stats = check_sample_lengths(files, cfg.train.max_seq_len, cfg.train.overlong)
    check_model_config(cfg.model)
    if cfg.train.init_adapter:
        from longctx_core.init_adapter import check_init_adapter

        check_init_adapter(cfg.model, cfg.train.init_adapter)
    return {"files": files, "data": stats, "model_path": resolve_model_path(cfg.model)}


def estimate_total_steps(cfg, data: dict) -> tuple[int, dict | None]:
    """Optimizer steps of the run (for the LR schedule) and the expected packing: `train.max_steps`, else
    epochs x packed rows per rank / accumulation, the rows estimated by packing the recorded `n_tokens`
    (one sample per row without them or without packing). Returns (steps, packing estimate or None)."""
    from longctx_core.packing import estimate_packing

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
    out = root / "train" / ADAPTER_DIR
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
        "metrics": str(root / "train" / "metrics.jsonl"),
        "steps": step,
        "total_steps_planned": cfg.train.max_steps,
        "packing_estimate": None,
        "final_loss": None,
        "checkpoint": str(folder),
        "resumed_from_step": step,
        "num_samples": check_inputs_result["data"]["num_samples"],
        "wall_s": 0.0,
    }


def train(cfg, root: Path, inputs: dict | None = None, worker_fn=None) -> dict:
    """Fine-tune on Ray Train and write <run>/train/{metrics.jsonl, adapter/}; returns the summary.

    `inputs` is `check_inputs`'s result when the caller ran it already; inputs are checked before Ray
    starts either way. A run whose storage holds checkpoints resumes from the latest. `worker_fn` replaces
    `train_loop_per_worker` (tests run a `Trainer` subclass that probes the trained engine).
    """
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from longctx_core.packing import packed_dataset
    from longctx_core.resources import cpus_per_actor
    from longctx_core.runtime import ensure_ray

    inputs = inputs or check_inputs(cfg, root)
    recover(root / "train" / ADAPTER_DIR)  # a crash mid-replacement of the last adapter: put one back
    storage, resume_step = prepare_storage(cfg, root)
    if cfg.run.force:
        (root / "train" / "metrics.jsonl").unlink(missing_ok=True)
    if resume_step and cfg.train.max_steps and resume_step >= cfg.train.max_steps:
        # A resubmission of a finished run (e.g. the pipeline after the train stage ran alone): Ray Train
        # would resume and report nothing. The last checkpoint is the result.
        return _already_trained(cfg, root, storage, resume_step, check_inputs_result=inputs)
    ensure_ray()  # inside a submitted job this joins the cluster; locally a loopback-only runtime
    t = cfg.train
    # Logical CPU shares, not threads: training workers and the tokenising actors take a quarter of the
    # cluster each, so Ray Data's own tasks (file listing asks for a whole CPU) always find room.
    worker_cpus = t.cpus_per_worker or cpus_per_actor(t.num_workers, share=0.25, cap=8.0)
    data_cpus = cpus_per_actor(t.data_workers, share=0.25)
    total, packing = estimate_total_steps(cfg, inputs["data"])
    if packing:
        logger.info(
            "packing estimate: %d samples -> %d rows of %d tokens (efficiency %.3f)",
            packing["samples"],
            packing["rows"],
            t.max_seq_len,
            packing["efficiency"],
        )
    ds = packed_dataset(inputs["files"], inputs["model_path"], t, cfg.run.seed, data_cpus)
    trainer = TorchTrainer(
        worker_fn or train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "run_dir": str(root), "total_steps": total},
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            # A custom accelerator resource (make cluster-sim's GPU pool) places CPU workers on that node type.
            resources_per_worker={"CPU": worker_cpus}
            | ({t.accelerator_resource: 1.0} if t.accelerator_resource != "GPU" else {}),
        ),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
        ),
        datasets={TRAIN_DATASET: ds},
        # Ordered execution makes the split deterministic, so a rank's rows after a restart are the ones
        # its data position counted.
        dataset_config=DataConfig(execution_options=ExecutionOptions(preserve_order=True)),
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
        "metrics": str(root / "train" / "metrics.jsonl"),
        "steps": steps,
        "total_steps_planned": total,
        "packing_estimate": packing,
        "final_loss": result.metrics.get("loss"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "resumed_from_step": resume_step,
        "num_samples": inputs["data"]["num_samples"],
        "wall_s": round(time.monotonic() - started, 1),
    }
