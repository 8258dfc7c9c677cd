"""Pieces of the training stage that need no Ray: the chunked loss, NEFTune, the DeepSpeed config, the
FLOPs convention and peak FLOP/s per GPU, the LR schedule, per-rank seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from longctx_core.config import ModelConfig, TrainConfig
from longctx_core.train.deepspeed_config import deepspeed_config
from longctx_core.train.flops import (
    attention_flops,
    flops_per_token,
    gpu_model,
    matmul_params,
    peak_flops,
    peak_tflops_for,
)
from longctx_core.train.losses import (
    PackedCausalLM,
    causal_lm_loss,
    neftune_noise,
    sample_lengths,
)
from longctx_core.train.schedule import lr_lambda

M = -100


def _batch(t=50, h=16, v=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, t, h, generator=g, requires_grad=True)
    labels = torch.randint(0, v, (2, t), generator=g)
    labels[:, : t // 3] = M  # prompt tokens carry no loss
    head = nn.Linear(h, v, bias=False)
    return hidden, head, labels


def test_chunked_loss_equals_full_cross_entropy_values_and_gradients():
    hidden, head, labels = _batch()
    full_logits = head(hidden)[:, :-1].float()
    ref = nn.functional.cross_entropy(
        full_logits.reshape(-1, full_logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=M,
        reduction="sum",
    )
    g_ref = torch.autograd.grad(ref, [hidden, head.weight])
    loss, n = causal_lm_loss(hidden, head, labels, chunk_size=7)
    g = torch.autograd.grad(loss, [hidden, head.weight])
    assert int(n) == int((labels[:, 1:] != M).sum())
    torch.testing.assert_close(loss, ref)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_chunked_loss_never_computes_logits_for_more_than_a_chunk():
    hidden, head, labels = _batch(t=200, v=500)
    rows = []
    head.register_forward_hook(lambda mod, inp, out: rows.append(out.shape[0]))
    loss, n = causal_lm_loss(hidden, head, labels, chunk_size=32)
    loss.backward()  # recomputation in backward goes through the head again, chunk by chunk
    assert rows and max(rows) <= 32
    assert sum(rows) == 2 * int(n)  # forward + recompute, labelled positions only (not 2 x 199 rows)


def test_loss_of_a_batch_without_labels_is_zero_and_still_backpropagates():
    hidden, head, labels = _batch()
    labels[:] = M
    loss, n = causal_lm_loss(hidden, head, labels, chunk_size=7)
    loss.backward()
    assert int(n) == 0 and loss.item() == 0.0 and hidden.grad is not None


def test_sample_lengths_follow_position_restarts_and_padding_joins_the_last_sample():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3, 4, 5]])  # 3 + 2 + 4 real tokens, 2 pad continuing
    assert sample_lengths(pos).tolist() == [[3, 3, 3, 2, 2, 6, 6, 6, 6, 6, 6]]


def test_neftune_noise_is_scaled_per_packed_sample():
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])
    embeds = torch.zeros(1, 16, 8)
    torch.manual_seed(0)
    noise = neftune_noise(embeds, pos, alpha=5.0)
    bound = torch.tensor([5 / math.sqrt(4 * 8)] * 4 + [5 / math.sqrt(12 * 8)] * 12)
    assert (noise[0].abs().amax(-1) <= bound + 1e-6).all()
    assert noise[0, :4].abs().max() > 5 / math.sqrt(12 * 8)  # the short sample gets the larger noise


def test_neftune_only_in_training_mode(train_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(train_model_dir)
    wrapper = PackedCausalLM(model, chunk_size=64, neftune_alpha=5.0)
    ids = torch.randint(5, 500, (1, 40), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "position_ids": torch.arange(40)[None], "labels": ids}
    with torch.no_grad():
        clean = [wrapper.eval()(**batch)[0].item() for _ in range(2)]
        noisy = wrapper.train()(**batch)[0].item()
    assert clean[0] == clean[1] and noisy != clean[0]


def test_deepspeed_config_from_the_train_section():
    t = TrainConfig(micro_batch_size=2, grad_accum_steps=4, max_grad_norm=0.5, zero_stage=3)
    ds = deepspeed_config(t, ModelConfig(torch_dtype="float32"))
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 0.5 and ds["zero_optimization"]["stage"] == 3
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_allow_untested_optimizer"] and "optimizer" not in ds  # the loop's torch AdamW

    cpu_offload = deepspeed_config(TrainConfig(offload_optimizer=True), ModelConfig())
    assert cpu_offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cpu_offload["zero_force_ds_cpu_optimizer"] is False  # torch AdamW on CPU state, no op build

    gpu = deepspeed_config(
        TrainConfig(use_gpu=True, offload_optimizer=True, lr=1e-4), ModelConfig(torch_dtype="bfloat16")
    )
    assert gpu["bf16"]["enabled"] and gpu["optimizer"]["type"] == "AdamW"
    assert gpu["optimizer"]["params"]["lr"] == 1e-4 and gpu["zero_optimization"]["overlap_comm"]


def test_flops_convention_counts_every_matmul_weight(train_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(train_model_dir)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    cfg = model.config
    assert matmul_params(cfg) == linear  # tied lm_head counted once, as a matmul
    assert flops_per_token(cfg, lora=True) == 4 * linear and flops_per_token(cfg, lora=False) == 6 * linear
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    # Packed samples of 100 and 300 tokens: attention is summed per sample, not over the 400-token row.
    assert attention_flops([100, 300], cfg) == per * (100**2 + 300**2) < attention_flops([400], cfg)


def test_lr_schedule_warmup_then_cosine_to_the_floor():
    f = lr_lambda(TrainConfig(warmup_steps=4, lr_schedule="cosine", min_lr_ratio=0.1, max_steps=14), 14)
    assert [round(f(s), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1)
    const = lr_lambda(TrainConfig(lr_schedule="constant"), None)
    assert const(0) == const(1000) == 1.0


def test_stale_extension_build_lock_is_removed_and_a_fresh_one_kept(tmp_path):
    """A killed JIT build leaves `lock` behind and every later deepspeed.initialize waits on it forever."""
    import os
    import time

    from longctx_core.train.deepspeed_config import clear_stale_build_locks

    stale = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    fresh = tmp_path / "py311_cpu" / "other_op" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    assert clear_stale_build_locks(str(tmp_path), max_age_s=900) == [str(stale)]
    assert not stale.exists() and fresh.exists()  # a build in progress keeps its lock


def _rank_draws(cfg, rank: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """`build_engine` on `rank` (seed, build, LoRA, per-rank reseed; no DeepSpeed), then two training
    forwards: one with LoRA dropout only, one with NEFTune noise only. Returns (initial LoRA weights,
    dropout-only logits, NEFTune-only loss per token)."""
    from longctx_core.train.engine import build_engine

    peft = build_engine(cfg, total_steps=None, rank=rank, use_deepspeed=False).peft
    init = {n: p.detach().clone() for n, p in peft.named_parameters() if p.requires_grad}
    ids = torch.randint(5, 500, (1, 40), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "position_ids": torch.arange(40)[None], "labels": ids}
    # B starts at 0, so dropout on A's input would not show in the output: give B values first.
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.1)
        dropped = peft.train()(input_ids=ids, position_ids=batch["position_ids"], use_cache=False).logits
        for module in peft.modules():  # NEFTune alone: dropout off
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        noisy = PackedCausalLM(peft, chunk_size=64, neftune_alpha=5.0).train()(**batch)[0]
    return init, dropped, noisy


def test_ranks_draw_their_own_dropout_and_neftune_noise_and_a_rerun_the_same(make_train_cfg, tmp_path):
    """Every rank starts from the same LoRA weights (seed), then draws its own LoRA-dropout masks and
    NEFTune noise (seed + rank); the same rank of a rerun draws the same ones."""
    cfg = make_train_cfg(tmp_path, **{"model.lora.dropout": 0.3})
    init0, drop0, noise0 = _rank_draws(cfg, rank=0)
    init1, drop1, noise1 = _rank_draws(cfg, rank=1)
    again0 = _rank_draws(cfg, rank=0)
    assert init0.keys() == init1.keys() and all(torch.equal(init0[k], init1[k]) for k in init0)
    assert not torch.allclose(drop0, drop1)  # different dropout masks
    assert noise0.item() != noise1.item()  # different NEFTune noise
    assert torch.equal(drop0, again0[1]) and noise0.item() == again0[2].item()  # a rerun draws the same


# Real `torch.cuda.get_device_name()` strings -> the peak dense bf16 TFLOP/s MFU divides by (None: no MFU).
DEVICE_PEAKS = [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.0),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0),
    ("NVIDIA H200", "H200 SXM", 989.0),
    ("NVIDIA H200 NVL", "H200 NVL", 835.0),
    ("NVIDIA GH200 480GB", "GH200", 989.0),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM", 312.0),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM", 312.0),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe", 312.0),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 312.0),
    ("NVIDIA L40S", "L40S", 362.0),
    ("NVIDIA L40", "L40", 181.0),
    ("NVIDIA L4", "L4", 121.0),
    ("Tesla V100-SXM2-16GB", "V100 SXM", 125.0),
    ("Tesla V100-PCIE-32GB", "V100 PCIe", 112.0),
    ("Tesla V100S-PCIE-32GB", "V100S PCIe", None),  # V100S: another chip, not listed
    ("NVIDIA A10G", "A10G", None),
    ("NVIDIA GeForce RTX 4090", None, None),
    ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", None, None),  # a slice has a fraction of the peak
    ("NVIDIA H100 80GB HBM3 Foo", None, None),  # an unknown word: unknown, not the nearest match
    ("", None, None),
]


@pytest.mark.parametrize(("device_name", "model", "tflops"), DEVICE_PEAKS)
def test_peak_tflops_lookup_matches_the_exact_gpu_model(device_name, model, tflops):
    assert gpu_model(device_name) == model
    assert peak_tflops_for(device_name) == tflops


def test_peak_flops_prefers_the_config_and_needs_a_gpu_and_a_16_bit_dtype():
    assert peak_flops(TrainConfig(), "bfloat16", "NVIDIA H100 PCIe") == 756.0e12
    assert peak_flops(TrainConfig(peak_tflops=500.0), "bfloat16", "NVIDIA H100 PCIe") == 500.0e12
    assert peak_flops(TrainConfig(peak_tflops=500.0), "bfloat16", "NVIDIA A10G") == 500.0e12
    assert peak_flops(TrainConfig(), "bfloat16", "NVIDIA A10G") is None  # unknown GPU: no MFU
    assert peak_flops(TrainConfig(), "float32", "NVIDIA H100 PCIe") is None  # fp32 runs off the table
    assert peak_flops(TrainConfig(peak_tflops=500.0), "bfloat16", None) is None  # CPU
