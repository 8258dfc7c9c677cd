"""The models an evaluation compares, resolved and checked on the driver before any Ray resource is asked for.

    specs = resolve_models(cfg, run_root)   # [ModelSpec(name="base", kind="base", path=None, limit=512), ...]
    model, tokenizer = load_for_eval(cfg.model, spec, quantize=False)    # inside a model actor

Checks are cheap (configs, adapter metadata, weight files present), so a wrong folder fails in a second with
the key to fix, not after the actors have started. `limit` is each model's RoPE-scaled context.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from longctx_core.config import Config, ModelConfig
from longctx_core.errors import LongctxError, error_line
from longctx_core.infra.layout import RunLayout

logger = logging.getLogger(__name__)

_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # base | adapter | merged
    path: str | None  # adapter or merged folder; None for the base
    limit: int  # scaled context in tokens


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in _WEIGHTS)


def _adapter_limit(model_cfg: ModelConfig, adapter_dir: Path, base_limit: int, key: str) -> int:
    """Check a PEFT adapter folder; returns the context it was trained for (its recorded base config when
    `model.rope` leaves RoPE alone, as `load_model_with_adapter` does), else the base's scaled limit."""
    from peft import PeftConfig

    if not (adapter_dir / "adapter_config.json").is_file():
        raise LongctxError(
            f"{key}: {adapter_dir} is not a PEFT adapter folder (no adapter_config.json); "
            "run the train stage first or point the path at an adapter"
        )
    try:
        PeftConfig.from_pretrained(str(adapter_dir))
    except (OSError, ValueError, TypeError) as exc:
        raise LongctxError(f"{key}: cannot read the adapter in {adapter_dir}: {error_line(exc)}") from None
    if not _has_weights(adapter_dir):
        raise LongctxError(f"{key}: {adapter_dir} has no adapter weights (adapter_model.safetensors)")
    from longctx_core.model.loading import BASE_CONFIG_NAME
    from longctx_core.model.rope import max_context

    record = adapter_dir / BASE_CONFIG_NAME
    if model_cfg.rope.type == "none" and record.is_file():
        recorded = json.loads(record.read_text())
        if recorded.get("rope_parameters") and recorded.get("max_position_embeddings"):
            return max_context(SimpleNamespace(**recorded))
    return base_limit


def _merged_limit(folder: Path, key: str) -> int:
    """Check a full model folder (config + weights); returns its context from its own config."""
    from transformers import AutoConfig

    from longctx_core.model.rope import max_context

    if not folder.is_dir():
        raise LongctxError(f"{key}: merged model folder {folder} does not exist")
    try:
        hf_config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise LongctxError(f"{key}: cannot read a model config from {folder}: {error_line(exc)}") from None
    if not _has_weights(folder):
        raise LongctxError(f"{key}: {folder} has a config but no weights (*.safetensors / *.bin)")
    return max_context(hf_config)


def resolve_models(cfg: Config, run_root: Path) -> list[ModelSpec]:
    """Every `eval.models` entry with its folder and scaled context; raises LongctxError naming the key of
    the first model that cannot load (missing folder, not an adapter, no weights, unreadable config)."""
    from longctx_core.model.loading import check_model_config
    from longctx_core.model.rope import max_context

    base_limit = max_context(check_model_config(cfg.model))
    specs = []
    for i, entry in enumerate(cfg.eval.models):
        key = f"eval.models.{i}.path ({entry.name})"
        if entry.kind == "base":
            specs.append(ModelSpec(entry.name, "base", None, base_limit))
        elif entry.kind == "adapter":
            folder = Path(entry.path).expanduser() if entry.path else RunLayout(run_root).train.adapter
            limit = _adapter_limit(cfg.model, folder.resolve(), base_limit, key)
            specs.append(ModelSpec(entry.name, "adapter", str(folder.resolve()), limit))
        else:
            folder = Path(entry.path).expanduser().resolve()
            specs.append(ModelSpec(entry.name, "merged", str(folder), _merged_limit(folder, key)))
    for s in specs:
        logger.info(
            "model %-12s %-7s context %6d  %s", s.name, s.kind, s.limit, s.path or cfg.model.name_or_path
        )
    return specs


def eval_dtype(requested: str | None, model_dtype: str) -> str:
    """The dtype an evaluation actor loads unquantised weights in: `requested` (eval.dtype), `model_dtype`
    when unset; "auto" is bfloat16 where this process's device multiplies bf16 natively (a bf16 GPU, a CPU
    with AVX512-BF16 or AMX), else float32."""
    import torch

    if requested is None:
        return model_dtype
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


def load_for_eval(model_cfg: ModelConfig, spec: ModelSpec, quantize: bool | None, dtype: str | None = None):
    """(model in eval mode on this process's device, tokenizer) for one spec; RoPE scaling as configured,
    unquantised weights in `eval_dtype(dtype, model.torch_dtype)`."""
    import torch

    from longctx_core.model.loading import is_4bit, load_model, load_tokenizer
    from longctx_core.model.lora import load_model_with_adapter

    model_cfg = model_cfg.model_copy(update={"torch_dtype": eval_dtype(dtype, model_cfg.torch_dtype)})

    if spec.kind == "adapter":  # LoRA leaves the vocabulary alone: the base tokenizer decodes its replies
        model = load_model_with_adapter(model_cfg, spec.path, quantize=quantize)
        if not is_4bit(model):
            # Unquantised weights take the adapter in: same function, none of LoRA's extra matmuls per step.
            model = model.merge_and_unload()
    else:
        if spec.kind == "merged":
            model_cfg = model_cfg.model_copy(update={"name_or_path": spec.path, "tokenizer": None})
        model = load_model(model_cfg, quantize=quantize)
    tokenizer = load_tokenizer(model_cfg)
    if torch.cuda.is_available() and not is_4bit(
        model
    ):  # 4-bit weights were placed on the GPU as they loaded
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
