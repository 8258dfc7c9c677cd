"""Model FLOPs of a training step and the peak FLOP/s of a GPU, for MFU.

    flops = flops_per_token(hf_config, lora=True) * real_tokens + attention_flops(seq_lens, hf_config)
    mfu = flops / step_seconds / (peak_flops(train_cfg, dtype, device_name) * world_size)

`peak_flops` reads `train.peak_tflops`, else `PEAK_TFLOPS` by the exact GPU model of a CUDA device name
(`gpu_model`): "NVIDIA H100 80GB HBM3" is the SXM board (989 TFLOP/s), "NVIDIA H100 PCIe" the PCIe one (756),
and "NVIDIA L4" is not an "NVIDIA L40". A name with anything it does not know gives no MFU rather than a
neighbour's peak.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

# Peak dense (no sparsity) bf16/fp16 tensor TFLOP/s of one GPU, from the vendor datasheets (which quote
# twice these figures "with sparsity"), keyed by `gpu_model`. V100 has no bf16 tensor cores: fp16 figure.
PEAK_TFLOPS = {
    "H200 SXM": 989.0,
    "H200 NVL": 835.0,
    "GH200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100 SXM": 312.0,
    "A100 PCIe": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "V100 SXM": 125.0,
    "V100 PCIe": 112.0,
}

# Chips sold as SXM modules and as PCIe / NVL cards, with different clocks. CUDA names the SXM module by
# its memory ("NVIDIA H100 80GB HBM3", "NVIDIA H200") and the cards by form factor ("NVIDIA H100 PCIe").
_BOARD_CHIPS = ("H200", "H100", "A100", "V100")
_FORM_FACTORS = {"SXM": "SXM", "SXM2": "SXM", "SXM4": "SXM", "SXM5": "SXM", "PCIE": "PCIe", "NVL": "NVL"}
_MEMORY = re.compile(r"\d+GB|HBM\d*E?")  # "80GB", "HBM3", "HBM2E": the same chip and clocks
_VENDOR = ("NVIDIA", "TESLA")


def gpu_model(device_name: str) -> str | None:
    """The `PEAK_TFLOPS` key of a CUDA device name (`torch.cuda.get_device_name()`), or None when a word of
    the name is not understood (a MIG slice, a laptop part, an unlisted variant).

    Upper-cased, split at spaces and dashes; vendor words and memory sizes/types dropped; then the chip and
    its form factor, if the name gives one (SXM for chips sold in several when it does not):
    "Tesla V100-SXM2-16GB" -> "V100 SXM", "NVIDIA A100 80GB PCIe" -> "A100 PCIe", "NVIDIA H200" ->
    "H200 SXM", "NVIDIA L40S" -> "L40S"."""
    words = [w for w in device_name.upper().replace("-", " ").split() if w not in _VENDOR]
    words = [w for w in words if not _MEMORY.fullmatch(w)]
    if not words:
        return None
    chip, rest = words[0], words[1:]
    if len(rest) > 1 or (rest and rest[0] not in _FORM_FACTORS):
        return None
    if rest:
        return f"{chip} {_FORM_FACTORS[rest[0]]}"
    return f"{chip} SXM" if chip in _BOARD_CHIPS else chip


def peak_tflops_for(device_name: str) -> float | None:
    """Peak dense bf16/fp16 TFLOP/s of the GPU called `device_name`; None when it is not in the table."""
    model = gpu_model(device_name)
    return PEAK_TFLOPS.get(model) if model else None


def peak_flops(train_cfg, dtype: str, device_name: str | None) -> float | None:
    """Peak FLOP/s of this worker's GPU for MFU: `train.peak_tflops`, else the table for bf16/fp16;
    None on CPU (`device_name` None) or for an unknown device."""
    if device_name is None:
        return None
    if train_cfg.peak_tflops:
        return train_cfg.peak_tflops * 1e12
    if dtype not in ("bfloat16", "float16"):
        return None
    tflops = peak_tflops_for(device_name)
    if tflops is None:
        logger.warning("no peak TFLOP/s known for GPU %r: set train.peak_tflops for MFU", device_name)
        return None
    return tflops * 1e12


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
