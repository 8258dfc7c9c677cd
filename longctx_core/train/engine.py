"""The model and its training engine, built from a config by one function for the worker loop and the benchmarks.

    built = build_engine(cfg, total_steps, rank)                    # a Ray Train worker: DeepSpeed engine
    built = build_engine(cfg, total_steps, use_deepspeed=False)     # a benchmark's plain PyTorch loop

Both build the same thing in the same order: the base (4-bit when configured, with the RoPE extension)
and LoRA from `run.seed` (the same initial adapter on every rank), the initial adapter when
`train.init_adapter` names one, then this rank's own seed (`seed_rank`: LoRA dropout and NEFTune noise
differ by rank), the packed loss `PackedCausalLM`, AdamW over the LoRA parameters and the LR schedule
(`schedule.lr_lambda`). With DeepSpeed these go into `deepspeed.initialize` (ZeRO-2/3 from
`deepspeed_config`) and the engine steps them; without, the caller steps `optimizer` and `scheduler`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from longctx_core.train.schedule import lr_lambda
from longctx_core.train.state import seed_rank

logger = logging.getLogger(__name__)


@dataclass
class TrainEngine:
    """What `build_engine` returns."""

    peft: Any  # the PeftModel (LoRA on the base): the adapter is saved from it
    loss_model: Any  # `PackedCausalLM` around `peft`: forward returns (loss sum, labelled tokens, ...)
    engine: Any  # the DeepSpeed engine around `loss_model`; None without DeepSpeed
    params: list  # the trainable (LoRA) parameters
    optimizer: Any  # torch AdamW (DeepSpeed's wrapper of it, or its own CPU Adam under GPU offload)
    scheduler: Any  # LambdaLR over `optimizer`
    ds_config: dict | None  # the DeepSpeed config dict; None without DeepSpeed
    init_adapter_digest: str | None  # the digest of `train.init_adapter`'s weights, when one was loaded

    @property
    def hf_config(self):
        """The base model's transformers config (sizes for FLOPs, pad and eos ids)."""
        return self.peft.get_base_model().config


def build_engine(cfg, total_steps: int | None, rank: int = 0, use_deepspeed: bool = True) -> TrainEngine:
    """Build the model, LoRA, loss, optimizer and LR schedule of `cfg` for `rank` (schedule over
    `total_steps`; constant after warmup when None), wrapped in a DeepSpeed engine when `use_deepspeed`
    (every rank of a process group must call it then); returns a `TrainEngine`."""
    from longctx_core.model.loading import load_model
    from longctx_core.model.lora import add_lora
    from longctx_core.train.deepspeed_config import (
        clear_stale_build_locks,
        deepspeed_config,
        uses_deepspeed_optimizer,
    )
    from longctx_core.train.losses import PackedCausalLM

    t = cfg.train
    torch.manual_seed(cfg.run.seed)  # same LoRA init on every rank
    peft = add_lora(load_model(cfg.model), cfg.model)
    init_digest = None
    if t.init_adapter:  # before DeepSpeed, whose ZeRO-3 would partition the LoRA weights
        from longctx_core.train.init_adapter import load_init_adapter

        init_digest = load_init_adapter(peft, t.init_adapter)
    seed_rank(cfg.run.seed, rank)  # from here on: LoRA dropout / NEFTune noise differ by rank
    loss_model = PackedCausalLM(peft, t.loss_chunk_size, t.neftune_alpha, t.use_liger)
    params = [p for p in loss_model.parameters() if p.requires_grad]
    factor = lr_lambda(t, total_steps)
    optimizer = None
    if not (use_deepspeed and uses_deepspeed_optimizer(t)):
        optimizer = torch.optim.AdamW(params, lr=t.lr, betas=t.adam_betas, weight_decay=t.weight_decay)
    if not use_deepspeed:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return TrainEngine(peft, loss_model, None, params, optimizer, scheduler, None, init_digest)

    import deepspeed  # here, not at the top: the plain benchmark loops never load DeepSpeed

    ds_config = deepspeed_config(t, cfg.model)
    if optimizer is None:  # DeepSpeed builds the optimizer: it calls this with it
        sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)  # noqa: E731
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    clear_stale_build_locks()  # a killed JIT build of DeepSpeed's comm op would hang initialize forever
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=loss_model, model_parameters=params, optimizer=optimizer, lr_scheduler=sched, config=ds_config
    )
    return TrainEngine(peft, loss_model, engine, params, optimizer, scheduler, ds_config, init_digest)
