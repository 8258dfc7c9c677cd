"""The model families this project is tested with, and the linear projections LoRA adapts in each.

    FAMILIES["llama"].projections               # ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', ...)
    check_family(hf_config, allow_untested)     # LongctxError (one line) for any other model_type
    resolve_lora_targets(model, ["all-linear"])  # the family's projections present in this model

Tested, by transformers `model_type`: qwen2 (Qwen2, Qwen2.5), qwen2_moe, qwen3, qwen3_moe, and the Llama
architecture: llama (Llama 3.x, SmolLM2) and mistral. The transformers 5 code of every one of them reads
`config.rope_parameters`, so `longctx_core.model.rope` extends their context without remote code.

MoE layers: transformers 5 keeps the routed experts of qwen2_moe / qwen3_moe fused, as 3-D parameters
`mlp.experts.gate_up_proj` and `mlp.experts.down_proj` rather than one `nn.Linear` per expert, so
`target_modules` cannot reach them (PEFT's separate `target_parameters` could; not used here). LoRA on an MoE
model adapts attention, plus the shared expert's MLP in qwen2_moe (its 1-wide `shared_expert_gate` is left out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from longctx_core.config.model import ALL_LINEAR
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """What the project relies on in one tested architecture."""

    checkpoints: str  # the released models of this model_type, named in messages
    attention: tuple[str, ...] = ATTENTION  # attention projection leaf names
    mlp: tuple[str, ...] = MLP  # dense MLP projection leaf names (qwen2_moe: its shared expert's)
    expert_parameters: tuple[str, ...] = ()  # fused 3-D expert weights under mlp.experts: not LoRA targets
    reads_rope_parameters: bool = (
        True  # its transformers 5 code takes RoPE scaling from config.rope_parameters
    )

    @property
    def projections(self) -> tuple[str, ...]:
        """The leaf names of the linear projections LoRA adapts ("all-linear")."""
        return self.attention + self.mlp


FAMILIES: dict[str, Family] = {
    "qwen2": Family("Qwen2, Qwen2.5"),
    "qwen2_moe": Family("Qwen1.5-MoE, Qwen2-MoE", expert_parameters=("gate_up_proj", "down_proj")),
    "qwen3": Family("Qwen3"),
    "qwen3_moe": Family("Qwen3-MoE", expert_parameters=("gate_up_proj", "down_proj")),
    "llama": Family("Llama 3.x, SmolLM2"),
    "mistral": Family("Mistral"),
}


def check_family(hf_config, allow_untested: bool) -> Family | None:
    """The tested `Family` of a checkpoint config, or None for an untested model type when `allow_untested`
    (then logged as a warning). Raises LongctxError (one line) for an untested type otherwise."""
    model_type = getattr(hf_config, "model_type", None)
    family = FAMILIES.get(model_type)
    if family is not None:
        return family
    tested = "; ".join(f"{name}: {f.checkpoints}" for name, f in FAMILIES.items())
    if not allow_untested:
        raise LongctxError(
            f"model type '{model_type}' is not one of the tested families ({tested}); set "
            "model.allow_untested_architecture=true to use it anyway"
        )
    logger.warning(
        "model type '%s' is not one of the tested families (%s): its RoPE extension and LoRA targets are "
        "untested (model.allow_untested_architecture=true)",
        model_type,
        tested,
    )
    return None


def _linear_leaf_names(model) -> set[str]:
    """The last name component of every linear layer of `model` except its output head. bitsandbytes'
    `Linear4bit` subclasses `nn.Linear`, so 4-bit projections count too."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for name, module in model.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(module, torch.nn.Linear) and module is not head and leaf != "lm_head":
            names.add(leaf)
    return names


def resolve_lora_targets(model, targets: list[str]) -> list[str]:
    """The LoRA `target_modules` for `model`: explicit names unchanged; `["all-linear"]` (PEFT's shorthand,
    which PEFT only expands as a plain string) becomes the family's projections present in the model as
    linear layers, in `Family.projections` order. An untested model type gets every linear layer name but
    the output head. Raises LongctxError when "all-linear" finds nothing."""
    if list(targets) != [ALL_LINEAR]:
        return list(targets)
    present = _linear_leaf_names(model)
    family = FAMILIES.get(getattr(model.config, "model_type", None))
    names = [n for n in family.projections if n in present] if family else sorted(present)
    if not names:
        raise LongctxError(
            f"model.lora.target_modules: '{ALL_LINEAR}' matches no linear projection of the model "
            f"(its linear layers: {sorted(present)})"
        )
    return names
