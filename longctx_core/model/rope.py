"""RoPE context extension for Qwen2-architecture configs: linear (position interpolation), dynamic NTK, YaRN.

The `model.rope` section is turned into the dict transformers 5.x reads from `config.rope_parameters`
and written into the Hugging Face config before any weights load, so `save_pretrained` records it and a
later `from_pretrained` reproduces it:

    hf_config = AutoConfig.from_pretrained(path)
    apply_rope_extension(hf_config, cfg.model.rope)     # LongctxError naming the model.rope key on a misfit
    hf_config.rope_parameters  # {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                               #  "original_max_position_embeddings": 32768}
    max_context(hf_config)     # 131072: the extended limit, for length checks elsewhere

Layout convention (Qwen's own model cards and vLLM read it this way): `max_position_embeddings` holds the
ORIGINAL (pre-extension) context and the extended limit is `original x factor`. Dynamic NTK needs exactly
that, because transformers measures a sequence's growth against `max_position_embeddings`.
`original_max_position_embeddings` is written only for yarn, the one type that reads it (transformers warns
about it as an unknown key for linear/dynamic); for those, `max_position_embeddings` is the original.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from longctx_core.config.model import SCALED_ROPE_TYPES, RopeConfig, rope_problem
from longctx_core.errors import LongctxError, error_line

logger = logging.getLogger(__name__)


def current_rope(hf_config) -> dict[str, Any]:
    """A copy of the config's RoPE parameters as a flat dict (empty when it has none).

    transformers converts a legacy `rope_scaling` (even `{"type": ...}`) into `rope_parameters` when a config
    is built; a dict still carrying the old `type` key is normalised here too.
    """
    params = getattr(hf_config, "rope_parameters", None) or {}
    params = copy.deepcopy(dict(params))
    if "rope_type" not in params and "type" in params:
        params["rope_type"] = params.pop("type")
    return params


def max_context(hf_config) -> int:
    """The context length the config is meant to handle: `original x factor` when RoPE is scaled, else
    `max_position_embeddings`."""
    params = current_rope(hf_config)
    base = int(hf_config.max_position_embeddings)
    if params.get("rope_type") in SCALED_ROPE_TYPES and params.get("factor"):
        original = params.get("original_max_position_embeddings") or base
        return int(original * float(params["factor"]))
    return base


def original_context(rope_cfg: RopeConfig, hf_config) -> int:
    """The pre-extension context: `model.rope.original_max_position_embeddings` when set, else what the
    checkpoint records (its own original when it is already scaled, else its max_position_embeddings)."""
    if rope_cfg.original_max_position_embeddings:
        return rope_cfg.original_max_position_embeddings
    existing = current_rope(hf_config)
    if existing.get("rope_type") in SCALED_ROPE_TYPES and existing.get("original_max_position_embeddings"):
        return int(existing["original_max_position_embeddings"])
    length = getattr(hf_config, "max_position_embeddings", None)
    if not length:
        raise LongctxError(
            "model.rope.original_max_position_embeddings: unset and the checkpoint config has no "
            "max_position_embeddings to read it from; set it"
        )
    return int(length)


def _plan(rope_cfg: RopeConfig, hf_config) -> tuple[dict[str, Any] | None, int | None]:
    """Returns (rope_parameters to write or None to keep the checkpoint's, original context or None).

    Raises LongctxError("model.rope.<key>: ...") where the config only misfits this checkpoint.
    """
    existing = current_rope(hf_config)
    if rope_cfg.type == "none":
        problem = rope_problem(rope_cfg, max_context(hf_config))
        if problem:
            raise LongctxError(f"model.rope.{problem}")
        if rope_cfg.rope_theta is None:
            return None, None
        params = existing or {"rope_type": "default"}
        params["rope_theta"] = rope_cfg.rope_theta
        return params, None
    original = original_context(rope_cfg, hf_config)
    problem = rope_problem(rope_cfg, original)
    if problem:
        raise LongctxError(f"model.rope.{problem}")
    factor = rope_cfg.factor or rope_cfg.target_max_position_embeddings / original
    theta = rope_cfg.rope_theta or existing.get("rope_theta") or getattr(hf_config, "default_theta", 10000.0)
    params: dict[str, Any] = {"rope_type": rope_cfg.type, "factor": float(factor), "rope_theta": float(theta)}
    if "partial_rotary_factor" in existing:  # a property of the architecture, not of the scaling
        params["partial_rotary_factor"] = existing["partial_rotary_factor"]
    if rope_cfg.type == "yarn":
        params["original_max_position_embeddings"] = original
        for key in ("beta_fast", "beta_slow"):
            if getattr(rope_cfg, key) is not None:
                params[key] = float(getattr(rope_cfg, key))
    return params, original


def rope_parameters(rope_cfg: RopeConfig, hf_config) -> dict[str, Any] | None:
    """The `rope_parameters` dict that `apply_rope_extension` writes for this checkpoint config, or None when
    `model.rope` leaves the checkpoint's RoPE as it is. Raises LongctxError on a misfit (key path named)."""
    return _plan(rope_cfg, hf_config)[0]


def apply_rope_extension(hf_config, rope_cfg: RopeConfig):
    """Write the RoPE extension into `hf_config` (in place) and return it.

    Sets `rope_parameters` and, for a scaled type, `max_position_embeddings` to the original context (see the
    module docstring), then lets transformers validate the result. Raises LongctxError on a misfit.
    """
    params, original = _plan(rope_cfg, hf_config)
    if params is None:
        return hf_config
    if original is not None:
        hf_config.max_position_embeddings = original
    hf_config.rope_parameters = params
    try:
        hf_config.validate_rope()
    except (ValueError, KeyError) as exc:  # e.g. Phi-3 takes only default/longrope: say which key to change
        raise LongctxError(
            f"model.rope.type: {params.get('rope_type')} does not fit model type "
            f"'{getattr(hf_config, 'model_type', None)}': {error_line(exc)}"
        ) from None
    logger.info(
        "RoPE: %s -> context %d (max_position_embeddings %d)",
        params,
        max_context(hf_config),
        hf_config.max_position_embeddings,
    )
    return hf_config


def warn_if_dynamic(hf_config, purpose: str = "fine-tuning") -> bool:
    """Log a warning (and return True) when the config uses dynamic NTK, whose frequencies change with each
    batch's length: a model tuned on one set of frequencies then meets others at other lengths."""
    if current_rope(hf_config).get("rope_type") != "dynamic":
        return False
    logger.warning(
        "model.rope.type=dynamic used for %s: dynamic NTK rescales RoPE per sequence length, so training "
        "sees frequencies that differ from those at other lengths; prefer yarn or linear for %s",
        purpose,
        purpose,
    )
    return True
