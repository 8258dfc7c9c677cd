"""QLoRA training throughput at 32k tokens on Qwen2.5-7B / 14B-shaped models, on one GPU (no download).

    python -m bench.gpu.gpu_throughput --model 14b [--seq-len 32768] [--steps 3] [--warmup 1] [--out DIR]
    python -m bench.gpu.gpu_throughput --dry-run --out /tmp/x     # tiny shapes on CPU: the same code path
    bash bench/gpu/run.sh                                          # = make bench-gpu: both models, wheels first

What runs: a randomly initialised `Qwen2ForCausalLM` with the exact shape of Qwen2.5-7B or -14B (a
`Qwen2Config` written below), its seven linear projections per layer quantised to 4-bit NF4 with double
quantisation (bitsandbytes `Linear4bit`, bf16 compute; embeddings, norms and the head stay bf16, as when
transformers loads a checkpoint in 4-bit), gradient checkpointing (non-reentrant), LoRA r=16 / alpha=64 on
all seven projections (PEFT), and the project's own training forward (`longctx_core.train.losses.PackedCausalLM`:
packed rows with `position_ids` and no attention mask, chunked or Liger fused cross-entropy). Rows are
`--seq-len` tokens packed (first-fit-decreasing, `longctx_core.train.packing`) from samples of 1k..seq-len tokens;
the last 10% of each sample is labelled. Attention: `flash_attention_2` (varlen over the packed samples) when
flash-attn imports, else `sdpa` with a block-diagonal mask, which is recorded in the result's `note`.

MFU convention (the project's, `longctx_core.train.flops`): model FLOPs per step =
4 x N x tokens + causal attention FLOPs, where N counts the weights of every matmul a token passes through
(q/k/v/o, gate/up/down of every layer, and the output head; not the embedding lookup), 4N = forward 2N plus
activation gradients 2N (frozen base: no weight gradients; the LoRA matmuls are not counted), and attention
is 6 x L^2 x heads x head_dim per layer per packed sample of L tokens (QK^T and AV, halved by the causal mask,
backward twice forward). Recomputation by gradient checkpointing is not counted (MFU, not HFU). Only real
(non-padding) tokens count. MFU = model FLOPs / step time / peak dense bf16 FLOP/s of the GPU (H100/H200:
989 TFLOP/s; `--peak-tflops` overrides).

Writes `<out>/gpu_throughput_<model>.json` with `name`, `value` (tokens/s per GPU), `unit`, `baseline` (the
tokens/s that 40% MFU would give: the aim), `ratio` (= MFU / 0.40), `command`, `machine`, `mfu`,
`peak_mem_gb` (max allocated during the training steps) and the published anchor it is compared with.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Shapes from the published Qwen2.5 configs (vocab padded to 152064; qkv bias as in Qwen2; untied head).
SHAPES = {
    "0.5b": dict(  # the shape of the product-path run (bench/gpu/product_gpu.yaml): its bare-step baseline
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
    "14b": dict(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=48,
        num_attention_heads=40,
        num_key_value_heads=8,
        vocab_size=152064,
        max_position_embeddings=32768,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=512,
        rope_theta=1e4,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    ),
}
AIM_MFU = 0.40
ANCHOR = "Qwen's published Q-LoRA profile: Qwen-14B at 8k on one A100, 27.9 GB, ~1.7k tokens/s, ~35% MFU"


def attention_backend(requested: str, device: str) -> tuple[str, str]:
    """The attention implementation to use and a note: flash_attention_2 needs CUDA and flash-attn."""
    if requested != "auto":
        return requested, ""
    if device == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2", ""
        except ImportError:
            return (
                "sdpa",
                "flash-attn is not installed: sdpa with a block-diagonal mask (slower, more memory)",
            )
    return "sdpa", "CPU dry run: sdpa"


def quantize_linears(model, device: str, compute_dtype) -> int:
    """Replace every LoRA-target `nn.Linear` by an NF4 `Linear4bit` quantised from its current (random)
    weight on `device`; returns how many layers were replaced."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or name not in LORA_TARGETS:
                continue
            q = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.uint8,
                device="meta",
            )
            weight = bnb.nn.Params4bit(
                child.weight.data,
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=torch.uint8,
                module=q,
            )
            q.weight = weight.to(device)  # quantises (blocks of 64, double-quantised absmax)
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data, requires_grad=False)
            if hasattr(q, "support_avx512bf16_for_cpu"):
                q.support_avx512bf16_for_cpu = (
                    False  # keep the generic layout on CPU (see longctx_core.model.loading)
                )
            setattr(parent, name, q)
            n += 1
    model.is_loaded_in_4bit = True  # PEFT then wraps the 4-bit layers with its bnb LoRA layer
    return n


def build_model(shape: str, device: str, dtype, attn: str, lora_r: int, lora_alpha: int, chunk: int):
    """Random-init model of `shape` on `device`, 4-bit projections, checkpointing, LoRA, wrapped in the
    project's `PackedCausalLM`; returns (wrapper, hf_config, trainable params)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from longctx_core.train.losses import PackedCausalLM

    config = Qwen2Config(**SHAPES[shape], use_cache=False, attn_implementation=attn)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialise on the GPU: a 14B model in bf16 is ~30 GB, quantised next
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    n = quantize_linears(model, device, dtype)
    if device == "cuda":
        torch.cuda.empty_cache()
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers releases before the rename
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft = get_peft_model(
        model,
        LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=0.05,
            target_modules=LORA_TARGETS,
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    params = [p for p in peft.parameters() if p.requires_grad]
    logger.info(
        "%s: %d Linear4bit layers, %d LoRA parameters, attention %s",
        shape,
        n,
        sum(p.numel() for p in params),
        attn,
    )
    return PackedCausalLM(peft, chunk, use_liger=True), config, params


def packed_rows(seq_len: int, n_rows: int, vocab: int, min_len: int, seed: int) -> list[dict]:
    """`n_rows` rows of at most `seq_len` tokens packed from random samples of [min_len, seq_len] tokens
    (FFD, the fullest rows first); each row dict has input_ids, labels (last 10% of each sample),
    position_ids (restarting per sample) and seq_lens."""
    from longctx_core.train.packing import PackedRow, Sample, first_fit_decreasing

    rng = random.Random(seed)
    lengths = [rng.randint(min_len, seq_len) for _ in range(max(16, 8 * n_rows))]
    bins = sorted(first_fit_decreasing(lengths, seq_len), key=lambda b: -sum(lengths[i] for i in b))
    rows = []
    for b in bins[:n_rows]:
        row = PackedRow()
        for i in b:
            ids = [rng.randrange(vocab) for _ in range(lengths[i])]
            answer = max(1, lengths[i] // 10)
            row.add(Sample(f"s{i}", ids, [-100] * (lengths[i] - answer) + ids[-answer:]))
        rows.append(row.to_dict())
    return rows


def peak_tflops(device: str, override: float | None) -> float | None:
    """Peak dense bf16 TFLOP/s of this GPU (override, else the project's table by device name)."""
    import torch

    from longctx_core.train.flops import peak_tflops_for

    if override:
        return override
    if device != "cuda":
        return None
    return peak_tflops_for(torch.cuda.get_device_name())


def run_steps(wrapper, params, rows: list[dict], warmup: int, device: str, seq_len: int) -> dict:
    """AdamW steps over `rows` (one row each; the first `warmup` untimed); returns {seconds, tokens,
    seq_lens (timed rows), losses, peak_mem_gb (max allocated during the steps, CUDA only)}."""
    import torch

    from longctx_core.train.packing import collate_packed

    opt = torch.optim.AdamW(params, lr=2e-5)
    wrapper.train()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, tokens, lens, losses = 0.0, 0, [], []
    for i, row in enumerate(rows):
        batch = {k: v.to(device) for k, v in collate_packed([row], 0, pad_to=seq_len).items()}
        t0 = time.perf_counter()
        loss_sum, n = wrapper(**batch)
        (loss_sum / n.clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        losses.append(float(loss_sum.detach()) / max(1, int(n)))
        if i >= warmup:
            seconds += dt
            tokens += len(row["input_ids"])
            lens += list(row["seq_lens"])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"seconds": seconds, "tokens": tokens, "seq_lens": lens, "losses": losses, "peak_mem_gb": peak}


def result_record(args, shape: str, attn: str, note: str, hf_config, res: dict, device: str) -> dict:
    """The result JSON (the bench/results schema: name, value, unit, baseline, ratio, command + details)."""
    from bench.common import machine_info
    from longctx_core.train.flops import attention_flops, flops_per_token

    tokens_per_s = res["tokens"] / res["seconds"]
    flops = flops_per_token(hf_config, lora=True) * res["tokens"] + attention_flops(
        res["seq_lens"], hf_config
    )
    peak = peak_tflops(device, args.peak_tflops)
    mfu = flops / res["seconds"] / (peak * 1e12) if peak else None
    aim = tokens_per_s * AIM_MFU / mfu if mfu else None  # tokens/s at 40% MFU for this row mix
    return {
        "name": f"gpu_throughput_{shape}",
        "value": tokens_per_s,
        "unit": f"training tokens/s per GPU, QLoRA r{args.lora_r}, rows of {args.seq_len} tokens",
        "baseline": aim,
        "ratio": mfu / AIM_MFU if mfu else None,
        "command": "python -m bench.gpu.gpu_throughput " + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "mfu": mfu,
        "peak_tflops": peak,
        "model_flops_per_step": flops / max(1, len(res["losses"]) - args.warmup),
        "peak_mem_gb": res["peak_mem_gb"],
        "model_mem_gb": res.get("model_mem_gb"),
        "attn_implementation": attn,
        "note": note,
        "steps": len(res["losses"]) - args.warmup,
        "losses": res["losses"],
        "mfu_convention": "4N per token (frozen base, LoRA matmuls not counted) + causal attention "
        "6*L^2*heads*head_dim per layer per packed sample; no recompute; real tokens only",
        "anchor": ANCHOR,
        "aim": "H100/H200 at 32k: >= 40% MFU (~3.8k tokens/s/GPU for 14B, ~8k for 7B) within 80 GB",
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.gpu_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", choices=sorted(SHAPES), default="14b", help="model shape")
    parser.add_argument("--seq-len", type=int, default=32768, help="tokens per packed row")
    parser.add_argument("--min-sample", type=int, default=1024, help="shortest packed sample")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps (one row each)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    parser.add_argument("--lora-alpha", type=int, default=64, help="LoRA alpha")
    parser.add_argument("--loss-chunk", type=int, default=4096, help="chunked cross-entropy chunk (tokens)")
    parser.add_argument("--attn", default="auto", help="auto | flash_attention_2 | sdpa | eager")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results/gpu"), help="result folder")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (checks the code path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if args.dry_run:
        args.model, args.seq_len, args.min_sample, args.loss_chunk = "tiny", 256, 32, 64
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if device == "cpu" and not args.dry_run:
        raise SystemExit("no CUDA device: run with --dry-run for the CPU smoke mode")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attn, note = attention_backend(args.attn, device)
    t0 = time.perf_counter()
    wrapper, hf_config, params = build_model(
        args.model, device, dtype, attn, args.lora_r, args.lora_alpha, args.loss_chunk
    )
    build_s = time.perf_counter() - t0
    model_mem = torch.cuda.memory_allocated() / 2**30 if device == "cuda" else None
    rows = packed_rows(args.seq_len, args.warmup + args.steps, hf_config.vocab_size, args.min_sample, 0)
    res = run_steps(wrapper, params, rows, args.warmup, device, args.seq_len) | {"model_mem_gb": model_mem}
    record = result_record(args, args.model, attn, note, hf_config, res, device) | {"build_s": build_s}
    if args.dry_run:
        record["name"] += "_dryrun"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{record['name']}.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    mfu = f"{record['mfu']:.1%}" if record["mfu"] else "n/a"
    mem = f"{record['peak_mem_gb']:.1f} GiB" if record["peak_mem_gb"] else "n/a (CPU)"
    logger.info(
        "%s: %.0f tokens/s/GPU, MFU %s, peak memory %s, attention %s %s",
        args.model,
        record["value"],
        mfu,
        mem,
        attn,
        note,
    )
    return record


if __name__ == "__main__":
    main()
