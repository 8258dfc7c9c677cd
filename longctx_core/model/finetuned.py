"""Using a fine-tuned model outside the pipeline, with the RoPE extension it was trained with:

from longctx_core import load_finetuned, merge_finetuned
model, tokenizer = load_finetuned("<run>/train/adapter")
merge_finetuned("<run>/train/adapter", "<run>/train/merged")   # plain HF folder, for vLLM too
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from types import SimpleNamespace

from longctx_core.config import ModelConfig
from longctx_core.errors import LongctxError
from longctx_core.model.loading import BASE_CONFIG_NAME
from longctx_core.model.lora import (
    adapter_tokenizer,
    load_model_with_adapter,
    merge_adapter,
)
from longctx_core.model.rope import max_context

logger = logging.getLogger(__name__)


# ---- using the fine-tuned model outside the pipeline ------------------------------------------------------
#
# The trap: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)` loads the base
# with its OWN RoPE, not the extension training wrote into the config, and long inputs then silently degrade.
# The adapter folder records what is needed (`base_config.json`); these helpers read it back.

# vLLM accepts only these values for --max-lora-rank (its `MaxLoRARanks`); an adapter's rank is rounded up.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = ("float32", "bfloat16", "float16")


def adapter_record(adapter_dir) -> dict:
    """What an adapter folder written by `save_adapter` records for rebuilding its model, from its JSON files
    alone (no weights): `base` (the base checkpoint PEFT recorded), `rope_parameters` and
    `max_position_embeddings` as trained (None without `base_config.json`), `context` (the extended limit),
    `dtype`, `quantization` (the 4-bit settings trained with, or None), `r` and `modules_to_save`.
    Raises LongctxError when the folder is not a PEFT adapter."""
    folder = Path(adapter_dir)
    cfg_file = folder / "adapter_config.json"
    if not cfg_file.is_file():
        raise LongctxError(f"{folder} has no adapter_config.json: not a PEFT adapter folder")
    peft_cfg = json.loads(cfg_file.read_text())
    base_file = folder / BASE_CONFIG_NAME
    base_cfg = json.loads(base_file.read_text()) if base_file.is_file() else {}
    rope = base_cfg.get("rope_parameters") or None
    length = base_cfg.get("max_position_embeddings")
    context = (
        max_context(SimpleNamespace(rope_parameters=rope, max_position_embeddings=length)) if length else None
    )
    dtype = base_cfg.get("dtype") or base_cfg.get("torch_dtype")
    base = peft_cfg.get("base_model_name_or_path")
    if base and Path(base).expanduser().is_dir():  # a relative folder only holds from where training ran
        base = str(Path(base).expanduser().resolve())
    return {
        "adapter": str(folder.resolve()),
        "base": base,
        "rope_parameters": rope,
        "max_position_embeddings": length,
        "context": context,
        "dtype": dtype if dtype in _DTYPES else "float32",
        "quantization": base_cfg.get("quantization_config") or None,
        "r": peft_cfg.get("r"),
        "modules_to_save": peft_cfg.get("modules_to_save") or [],
    }


def _finetuned_model_config(record: dict, base: str | None, quantize: bool) -> ModelConfig:
    """A `model:` section that rebuilds the adapter's model: its base (or `base`), the recorded dtype, RoPE
    left to the record (`_adapter_base_config` applies it), 4-bit with the recorded settings when `quantize`."""
    path = base or record["base"]
    if not path:
        raise LongctxError(f"{record['adapter']}: adapter_config.json names no base model; pass base=")
    if Path(path).expanduser().is_absolute() and not Path(path).expanduser().is_dir():
        raise LongctxError(
            f"the base model folder {path} recorded by {record['adapter']} is gone; pass base="
        )
    quant: dict = {"load_in_4bit": bool(quantize)}
    q = record["quantization"] or {}
    if q.get("bnb_4bit_quant_type"):
        quant["quant_type"] = q["bnb_4bit_quant_type"]
        quant["double_quant"] = bool(q.get("bnb_4bit_use_double_quant"))
    for key in ("compute_dtype", "quant_storage"):
        if str(q.get(f"bnb_4bit_{key}")) in _DTYPES:
            quant[key] = str(q[f"bnb_4bit_{key}"])
    return ModelConfig.model_validate(
        {"name_or_path": str(path), "torch_dtype": record["dtype"], "quantization": quant}
    )


def load_finetuned(adapter_dir, base: str | None = None, quantize: bool = False, device_map=None):
    """The fine-tuned model of a training run, ready to use; returns (model, tokenizer).

    Reads the adapter folder (`<run>/train/adapter`): its base checkpoint (or `base`, e.g. the same model
    elsewhere), the RoPE extension it was trained with, and its tokenizer. The model is a `PeftModel` in eval
    mode whose rotary embedding equals the trained one; `quantize=True` loads the base in 4-bit as QLoRA
    training did. Raises LongctxError when the folder is not an adapter or its base cannot be found.
    """
    adapter_dir = Path(adapter_dir)
    record = adapter_record(adapter_dir)
    if not record["rope_parameters"]:
        logger.warning(
            "%s has no %s: loading the base's own RoPE, which may not be what training used",
            adapter_dir,
            BASE_CONFIG_NAME,
        )
    model_cfg = _finetuned_model_config(record, base, quantize)
    model = load_model_with_adapter(model_cfg, adapter_dir, quantize=quantize, device_map=device_map)
    tokenizer = adapter_tokenizer(model_cfg, adapter_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def merge_finetuned(adapter_dir, out_dir, base: str | None = None) -> Path:
    """Merge a training run's adapter into its base as `merge_adapter` does, with everything (base, RoPE,
    dtype, 4-bit settings) read from the adapter folder; returns the merged folder, which plain
    `AutoModelForCausalLM.from_pretrained` and `vllm serve` load with the trained RoPE."""
    record = adapter_record(adapter_dir)
    model_cfg = _finetuned_model_config(record, base, quantize=record["quantization"] is not None)
    return merge_adapter(model_cfg, adapter_dir, out_dir)


def _merged_dir(record: dict, merged_dir) -> Path:
    """`merged_dir` made absolute, or by default `merged/` next to the adapter (`<run>/train/merged`)."""
    return Path(merged_dir).resolve() if merged_dir else Path(record["adapter"]).parent / "merged"


def vllm_hf_overrides(record: dict) -> dict:
    """The `--hf-overrides` of `vllm serve` that give the base the trained RoPE: `rope_parameters` (the key
    transformers 5 and current vLLM read) and the original `max_position_embeddings` it is measured from."""
    if not record["rope_parameters"]:
        raise LongctxError(f"{record['adapter']} records no RoPE parameters ({BASE_CONFIG_NAME} is missing)")
    return {
        "rope_parameters": record["rope_parameters"],
        "max_position_embeddings": record["max_position_embeddings"],
    }


def vllm_serve_commands(adapter_dir, merged_dir=None, name: str = "finetuned") -> dict[str, str]:
    """`vllm serve` command lines for the fine-tuned model; returns {"adapter": base + LoRA, "merged": the
    merged folder}. Both carry the trained RoPE in `--hf-overrides` and the extended `--max-model-len`."""
    record = adapter_record(adapter_dir)
    overrides = shlex.quote(json.dumps(vllm_hf_overrides(record), sort_keys=True, separators=(",", ":")))
    common = f"--max-model-len {record['context']} --hf-overrides {overrides}"
    rank = next((r for r in VLLM_LORA_RANKS if r >= (record["r"] or 1)), VLLM_LORA_RANKS[-1])
    module = shlex.quote(f"{name}={record['adapter']}")
    adapter = (
        f"vllm serve {shlex.quote(record['base'] or '<base model>')} {common} --enable-lora "
        f"--lora-modules {module} --max-lora-rank {rank}"
    )
    merged = _merged_dir(record, merged_dir)
    return {
        "adapter": adapter,
        "merged": f"vllm serve {shlex.quote(str(merged))} --served-model-name {shlex.quote(name)} {common}",
    }


def usage_markdown(adapter_dir, merged_dir=None) -> list[str]:
    """A report's "Use the model" section (markdown lines): the loader call, the command that merges the
    adapter and how to load the merged folder, and the `vllm serve` lines, all with the trained RoPE."""
    record = adapter_record(adapter_dir)
    adapter = record["adapter"]
    if not record["rope_parameters"]:  # an adapter from elsewhere: say so rather than fail a finished run
        return [
            "## Use the model",
            "",
            f"`{adapter}` has no {BASE_CONFIG_NAME}, so the RoPE it was trained with is unknown: load it with "
            "`model.rope` set as in training (`longctx_core.model.loading.load_model_with_adapter`).",
        ]
    merged = str(_merged_dir(record, merged_dir))
    serve = vllm_serve_commands(adapter, merged)
    lines = [
        "## Use the model",
        "",
        f"Trained RoPE: `{json.dumps(record['rope_parameters'])}`, context {record['context']} tokens. "
        "Plain `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)` loads the "
        "base WITHOUT it (long inputs silently degrade); use one of these:",
        "",
        "```python",
        "from longctx_core import load_finetuned",
        f"model, tokenizer = load_finetuned({adapter!r})",
        "```",
        "",
        "Merged folder (plain transformers, no PEFT; the scaled config is in its `config.json`):",
        "",
        "```bash",
        f'python -c "from longctx_core import merge_finetuned; merge_finetuned({adapter!r}, {merged!r})"',
        "```",
        "",
        f"then `AutoModelForCausalLM.from_pretrained({merged!r})`. vLLM, base + LoRA adapter, or the merged folder:",
        "",
        "```bash",
        serve["adapter"],
        serve["merged"],
        "```",
    ]
    if record["modules_to_save"]:
        lines += [
            "",
            f"The adapter also trains {record['modules_to_save']} (`modules_to_save`), which vLLM's LoRA loader "
            "does not take: serve the merged folder.",
        ]
    return lines
