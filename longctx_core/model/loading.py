"""Model loading for training and evaluation: the RoPE-extended causal LM, in 4-bit (QLoRA) or not, and its
tokenizer. LoRA adapters are `model.lora`'s; using a fine-tuned model outside the pipeline, `model.finetuned`'s.

    hf_config = check_model_config(cfg.model)       # cheap (config only): call before ray.init()
    model = load_model(cfg.model)                    # 4-bit NF4 when model.quantization.load_in_4bit

A hub name and a local folder go through the same `from_pretrained` calls; `model.name_or_path: tiny` is the
locally built tiny Qwen2 checkpoint. No remote code unless `model.trust_remote_code`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.config import TINY, ModelConfig
from longctx_core.errors import LongctxError, error_line
from longctx_core.model.families import check_family
from longctx_core.model.rope import apply_rope_extension

logger = logging.getLogger(__name__)

BASE_CONFIG_NAME = "base_config.json"  # the RoPE-scaled base config, written next to the adapter


def resolve_model_path(model_cfg: ModelConfig) -> str:
    """The folder or hub name `from_pretrained` loads: the tiny checkpoint's cached folder for 'tiny' (built
    once), the cached converted folder for an embedded model's name (fetched and converted once) and for a
    `.gguf` file (converted once; LongctxError when missing or unusable), an existing local folder as an
    absolute path, anything else as a hub name."""
    from longctx_core.model.embedded import EMBEDDED, ensure_embedded
    from longctx_core.model.gguf import ensure_gguf_folder

    if model_cfg.name_or_path == TINY:
        from longctx_core.model.tiny import ensure_tiny_checkpoint

        return str(ensure_tiny_checkpoint(model_cfg.tiny))
    if model_cfg.name_or_path in EMBEDDED:
        return str(ensure_embedded(model_cfg.name_or_path))
    if model_cfg.name_or_path.lower().endswith(".gguf"):
        return str(ensure_gguf_folder(model_cfg.name_or_path))
    local = Path(model_cfg.name_or_path).expanduser()
    return str(local.resolve()) if local.is_dir() else model_cfg.name_or_path


def _hub_kwargs(model_cfg: ModelConfig) -> dict:
    return {"revision": model_cfg.revision, "trust_remote_code": model_cfg.trust_remote_code}


def tokenizer_from_path(path: str, key: str | None = None, **hub_kwargs):
    """`AutoTokenizer.from_pretrained(path, **hub_kwargs)`; one that does not load is a LongctxError naming
    the config `key` to fix (when given)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **hub_kwargs)
    except (OSError, ValueError) as exc:
        where = f"{key}: " if key else ""
        raise LongctxError(f"{where}cannot load a tokenizer from '{path}': {error_line(exc)}") from None


def load_tokenizer(model_cfg: ModelConfig):
    """The tokenizer of `model.tokenizer` (default: the model's own), with a pad token (eos when it has none)."""
    key = "model.tokenizer" if model_cfg.tokenizer else "model.name_or_path"
    source = model_cfg.tokenizer or resolve_model_path(model_cfg)
    tokenizer = tokenizer_from_path(source, key, **_hub_kwargs(model_cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_model_config(model_cfg: ModelConfig):
    """Read the checkpoint's config (no weights) and write the RoPE extension into it; returns the HF config.

    Raises LongctxError naming the key when the checkpoint cannot be read, is not of a tested model family
    (unless `model.allow_untested_architecture`) or `model.rope` does not fit it.
    Cheap enough for an entrypoint to call before `ray.init()`.
    """
    from transformers import AutoConfig

    path = resolve_model_path(model_cfg)
    try:
        hf_config = AutoConfig.from_pretrained(path, **_hub_kwargs(model_cfg))
    except (OSError, ValueError) as exc:
        raise LongctxError(
            f"model.name_or_path: cannot read a model config from '{path}': {error_line(exc)}"
        ) from None
    check_family(hf_config, model_cfg.allow_untested_architecture)
    return apply_rope_extension(hf_config, model_cfg.rope)


def bnb_config(model_cfg: ModelConfig):
    """The `BitsAndBytesConfig` for 4-bit loading: NF4/FP4, double quantisation, compute dtype, and the packed
    weights' storage dtype (default: the model dtype, so ZeRO-3 can shard them like any float parameter)."""
    import torch
    from transformers import BitsAndBytesConfig

    q = model_cfg.quantization
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
        bnb_4bit_quant_storage=getattr(torch, q.quant_storage or model_cfg.torch_dtype),
    )


def _default_device_map(quantize: bool):
    """4-bit weights are quantised as they load, so they need a device up front: this process's GPU, else CPU.
    Unquantised models load on CPU and the caller moves them (DeepSpeed does)."""
    import torch

    if not quantize:
        return None
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"


def _keep_4bit_layout(model) -> int:
    """Turn off bitsandbytes' CPU inference repacking on every 4-bit layer; returns how many layers.

    On CPUs with AVX512-BF16, a `Linear4bit` in eval mode without grad rewrites its weight in place into a
    CPU-only layout on first use: it then computes in bf16 whatever the compute dtype, crashes on shapes not
    divisible by the 64-wide block (the default tiny model's 352-wide MLP), and every later state_dict has to
    undo the repacking (the "packed_weight should be [N, K/2]" assertion met under ZeRO-3 is raised there).
    The generic path gives bit-identical numbers in eval and training.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def is_4bit(model) -> bool:
    """Whether `model` (a causal LM or a PeftModel around one) holds bitsandbytes 4-bit weights."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(inner, "is_loaded_in_4bit", False))


def load_base(model_cfg: ModelConfig, hf_config, quantize: bool, device_map):
    """Load the weights for an already RoPE-extended `hf_config`; returns the causal LM."""
    import torch
    from transformers import AutoModelForCausalLM

    from longctx_core.model.attention import resolve_attn_implementation

    kwargs = dict(
        config=hf_config,
        dtype=getattr(torch, model_cfg.torch_dtype),
        # `auto` -> longctx_packed (registered here, in this process): per-sample attention on packed rows.
        attn_implementation=resolve_attn_implementation(model_cfg.attn_implementation),
        device_map=device_map if device_map is not None else _default_device_map(quantize),
        **_hub_kwargs(model_cfg),
    )
    if quantize:
        kwargs["quantization_config"] = bnb_config(model_cfg)
    path = resolve_model_path(model_cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise LongctxError(
            f"model.name_or_path: cannot load weights from '{path}': {error_line(exc)}"
        ) from None
    if quantize:
        n = _keep_4bit_layout(model)
        logger.info("loaded %s in 4-bit (%d Linear4bit layers)", path, n)
    return model


def load_model(model_cfg: ModelConfig, *, quantize: bool | None = None, device_map=None):
    """The causal LM of `model.name_or_path` with the RoPE extension in its config; 4-bit NF4 when `quantize`
    (None: `model.quantization.load_in_4bit`). Raises LongctxError on a checkpoint/config misfit."""
    if quantize is None:
        quantize = model_cfg.quantization.load_in_4bit
    hf_config = check_model_config(model_cfg)
    return load_base(model_cfg, hf_config, quantize, device_map)
