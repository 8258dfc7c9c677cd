"""Model loading for training and evaluation: the RoPE-extended causal LM, in 4-bit (QLoRA) or not, its LoRA
adapters, and the merge into a standalone folder.

    hf_config = check_model_config(cfg.model)       # cheap (config only): call before ray.init()
    model = load_model(cfg.model)                    # 4-bit NF4 when model.quantization.load_in_4bit
    peft_model = add_lora(model, cfg.model)          # frozen base + LoRA (+ extra trainable modules)
    save_adapter(peft_model, layout.train.adapter, tokenizer)          # layout = RunLayout.of(cfg)
    model = load_model_with_adapter(cfg.model, layout.train.adapter)
    merge_adapter(cfg.model, layout.train.adapter, out)               # plain HF folder (vLLM can serve it)

A hub name and a local folder go through the same `from_pretrained` calls; `model.name_or_path: tiny` is the
locally built tiny Qwen2 checkpoint. No remote code unless `model.trust_remote_code`.

An adapter folder is a standard PEFT folder (`adapter_config.json`, `adapter_model.safetensors`) plus the
tokenizer and `base_config.json`, the RoPE-scaled base config it was trained with. That file is deliberately
not `config.json`: with one, transformers would take the folder for a full model with an embedded adapter.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from types import SimpleNamespace

from longctx_core.config import TINY, ModelConfig
from longctx_core.errors import LongctxError, error_line
from longctx_core.fsio import staged_dir
from longctx_core.model.families import check_family, resolve_lora_targets
from longctx_core.rope import apply_rope_extension, current_rope, max_context, warn_if_dynamic

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
        from longctx_core.tiny import ensure_tiny_checkpoint

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


def _from_pretrained(model_cfg: ModelConfig, hf_config, quantize: bool, device_map):
    """Load the weights for an already RoPE-extended `hf_config`; returns the causal LM."""
    import torch
    from transformers import AutoModelForCausalLM

    from longctx_core.attention import resolve_attn_implementation

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
    return _from_pretrained(model_cfg, hf_config, quantize, device_map)


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
    base = _from_pretrained(model_cfg, hf_config, quantize, device_map)
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
    base = _from_pretrained(model_cfg, hf_config, quantize, None)
    if quantize:
        base = base.dequantize(dtype=getattr(torch, model_cfg.torch_dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    tokenizer = _adapter_tokenizer(model_cfg, adapter_dir)
    with staged_dir(out) as tmp:  # a crash leaves the previous merge or this one, never half a folder
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    logger.info("merged %s into %s (context %d)", adapter_dir, out, max_context(merged.config))
    return out


def _adapter_tokenizer(model_cfg: ModelConfig, adapter_dir: Path):
    """The tokenizer saved with the adapter, else the model's."""
    if (adapter_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(adapter_dir))
    return load_tokenizer(model_cfg)


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
    tokenizer = _adapter_tokenizer(model_cfg, adapter_dir)
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
            "`model.rope` set as in training (`longctx_core.modeling.load_model_with_adapter`).",
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
