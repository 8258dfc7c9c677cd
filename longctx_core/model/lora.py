"""LoRA on the loaded model: adapters added, saved with the RoPE-scaled base config they were trained with
(`base_config.json`), loaded back onto their base, and merged into a standalone folder.

    peft_model = add_lora(model, cfg.model)          # frozen base + LoRA (+ extra trainable modules)
    save_adapter(peft_model, layout.train.adapter, tokenizer)
    model = load_model_with_adapter(cfg.model, layout.train.adapter)
    merge_adapter(cfg.model, layout.train.adapter, out)               # plain HF folder (vLLM can serve it)

An adapter folder is a standard PEFT folder (`adapter_config.json`, `adapter_model.safetensors`) plus the
tokenizer and `base_config.json`. That file is deliberately not `config.json`: with one, transformers would
take the folder for a full model with an embedded adapter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longctx_core.config import ModelConfig
from longctx_core.errors import LongctxError
from longctx_core.fsio import staged_dir
from longctx_core.model.families import resolve_lora_targets
from longctx_core.model.loading import (
    BASE_CONFIG_NAME,
    check_model_config,
    load_base,
    load_tokenizer,
)
from longctx_core.model.rope import current_rope, max_context, warn_if_dynamic

logger = logging.getLogger(__name__)


def _check_module_names(model, names: list[str], key: str) -> None:
    """Raise LongctxError when one of `names` matches no module (PEFT matches by name suffix)."""
    present = [n for n, _ in model.named_modules()]
    missing = [t for t in names if t != "all-linear" and not any(n.endswith(t) for n in present)]
    if missing:
        leaves = sorted({n.rpartition(".")[2] for n in present if n})
        raise LongctxError(f"{key}: {missing} match no module of the model (its modules: {leaves[:30]})")


def add_lora(model, model_cfg: ModelConfig):
    """Freeze `model` and wrap it in LoRA adapters for training; returns the `PeftModel`.

    `model.lora.target_modules: [all-linear]` becomes the model family's projections (`resolve_lora_targets`).
    4-bit models go through `prepare_model_for_kbit_training` (norms/embeddings to fp32, base frozen).
    Gradient checkpointing uses the explicit `model.use_reentrant`. `use_cache` is turned off: with a cache
    transformers builds a causal mask over the whole packed row and packed samples attend to each other.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = model_cfg.lora
    _check_module_names(model, lora.target_modules, "model.lora.target_modules")
    _check_module_names(model, lora.extra_trainable, "model.lora.extra_trainable")
    targets = resolve_lora_targets(model, lora.target_modules)
    if targets != lora.target_modules:
        logger.info("model.lora.target_modules %s -> %s", lora.target_modules, targets)
    if getattr(model, "is_loaded_in_4bit", False):
        # Checkpointing is enabled below through the current transformers API, for both modes alike.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if model_cfg.gradient_checkpointing:
        # Also makes the embedding output require grad, which reentrant checkpointing needs with a frozen base.
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": model_cfg.use_reentrant}
        )
    model.config.use_cache = False
    warn_if_dynamic(model.config)
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=list(lora.extra_trainable) or None,
        # A trained copy of tied embeddings must stay tied to lm_head, as in the merged model.
        ensure_weight_tying=bool(lora.extra_trainable)
        and bool(getattr(model.config, "tie_word_embeddings", False)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, peft_config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    logger.info(
        "LoRA r=%d alpha=%d on %s: %d trainable parameters",
        lora.r,
        lora.alpha,
        targets,
        trainable,
    )
    return peft_model


def _with_tied_aliases(peft_model, given: dict) -> dict:
    """`given` plus an entry for every state-dict key that aliases one of its parameters; returns the dict.

    `named_parameters()` lists a tied parameter once (the trained embedding copy, not lm_head's view of it),
    but PEFT's saver looks every alias up by its state-dict key.
    """
    name_of = {id(p): n for n, p in peft_model.named_parameters()}
    full = dict(given)
    for key, value in peft_model.state_dict(keep_vars=True).items():
        name = name_of.get(id(value))
        if key not in full and name in given:
            full[key] = given[name]
    return full


def save_adapter(peft_model, out_dir, tokenizer=None, state_dict=None) -> Path:
    """Write a standard PEFT adapter folder (+ tokenizer + `base_config.json`); returns its path.

    `state_dict`: for callers whose parameters are sharded (ZeRO-3), the full values gathered on the saving
    rank, keyed by the PeftModel's own names: its whole state dict or just the trainable parameters
    (`named_parameters()` names). Unset: the model's own. Call on one rank only.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:
        state_dict = _with_tied_aliases(peft_model, state_dict)
    peft_model.save_pretrained(str(out), state_dict=state_dict)
    peft_model.get_base_model().config.to_json_file(str(out / BASE_CONFIG_NAME))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    logger.info("saved adapter to %s", out)
    return out


def _adapter_base_config(model_cfg: ModelConfig, adapter_dir: Path):
    """The checkpoint config with the RoPE the adapter was trained with: the recorded one when `model.rope`
    asks for nothing, else `model.rope` (warning when it differs from the record). Returns the HF config."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LongctxError(f"adapter folder {adapter_dir} has no adapter_config.json (not a PEFT adapter)")
    hf_config = check_model_config(model_cfg)
    record = adapter_dir / BASE_CONFIG_NAME
    if not record.is_file():
        return hf_config
    recorded = json.loads(record.read_text())
    rope_untouched = model_cfg.rope.type == "none" and model_cfg.rope.rope_theta is None
    if rope_untouched and recorded.get("rope_parameters"):
        hf_config.rope_parameters = recorded["rope_parameters"]
        hf_config.max_position_embeddings = recorded.get(
            "max_position_embeddings", hf_config.max_position_embeddings
        )
        hf_config.validate_rope()
    elif recorded.get("rope_parameters") and recorded["rope_parameters"] != current_rope(hf_config):
        logger.warning(
            "model.rope gives %s but the adapter in %s was trained with %s",
            current_rope(hf_config),
            adapter_dir,
            recorded["rope_parameters"],
        )
    return hf_config


def load_model_with_adapter(
    model_cfg: ModelConfig, adapter_dir, *, quantize: bool | None = None, device_map=None
):
    """The base model (4-bit when `quantize`, None: per config) with the adapter of `adapter_dir` applied,
    in eval mode; returns the `PeftModel`."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if quantize is None:
        quantize = model_cfg.quantization.load_in_4bit
    hf_config = _adapter_base_config(model_cfg, adapter_dir)
    base = load_base(model_cfg, hf_config, quantize, device_map)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    return model.eval()


def merge_adapter(model_cfg: ModelConfig, adapter_dir, out_dir) -> Path:
    """Merge the adapter into its base and write a plain HF folder (weights, scaled config, tokenizer) that
    `from_pretrained` and vLLM load without PEFT or bitsandbytes; returns the folder.

    A QLoRA adapter learned to correct the 4-bit weights, so it is merged into exactly those weights,
    dequantised, rather than into the full-precision originals (they differ by the quantisation error).
    """
    import torch
    from peft import PeftModel

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        # Only a previous merge (a model folder) is replaced; never an adapter or an unrelated folder.
        raise LongctxError(f"merge output {out} exists and is not a model folder; refusing to overwrite it")
    quantize = model_cfg.quantization.load_in_4bit
    hf_config = _adapter_base_config(model_cfg, adapter_dir)
    base = load_base(model_cfg, hf_config, quantize, None)
    if quantize:
        base = base.dequantize(dtype=getattr(torch, model_cfg.torch_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    tokenizer = adapter_tokenizer(model_cfg, adapter_dir)
    with staged_dir(out) as tmp:  # a crash leaves the previous merge or this one, never half a folder
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    logger.info("merged %s into %s (context %d)", adapter_dir, out, max_context(merged.config))
    return out


def adapter_tokenizer(model_cfg: ModelConfig, adapter_dir: Path):
    """The tokenizer saved with the adapter, else the model's."""
    if (adapter_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(adapter_dir))
    return load_tokenizer(model_cfg)
