"""Starting training from an existing PEFT adapter (`train.init_adapter`): a user's adapter, or the adapter
of a previous stage (continued pre-training, then SFT).

    check_init_adapter(cfg.model, cfg.train.init_adapter)      # driver, before Ray: exists and fits model.lora
    digest = load_init_adapter(peft_model, cfg.train.init_adapter)   # worker, after add_lora

The adapter's weights are loaded into the LoRA layers that `model.lora` built, so the run's own LoRA config
stays the one in force (and in its saved adapter); its r, alpha and target modules must therefore equal the
adapter's. `adapter_digest` fingerprints LoRA weights the same way for a file and for a live model, which is
how a test shows that step 0 of the second stage is the first stage's final adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

KEY = "train.init_adapter"


def check_init_adapter(model_cfg, path: str) -> Path:
    """The adapter folder as a Path when it holds a PEFT adapter whose r, alpha and target modules equal
    `model.lora`'s; raises LongctxError naming the key otherwise."""
    folder = Path(path).expanduser()
    conf_file = folder / "adapter_config.json"
    if not conf_file.is_file():
        raise LongctxError(f"{KEY}: {folder} holds no adapter_config.json (not a PEFT adapter folder)")
    conf = json.loads(conf_file.read_text())
    lora = model_cfg.lora
    theirs = {
        "r": conf.get("r"),
        "alpha": conf.get("lora_alpha"),
        "target_modules": sorted(conf.get("target_modules") or []),
    }
    ours = {"r": lora.r, "alpha": lora.alpha, "target_modules": sorted(lora.target_modules)}
    for key, value in ours.items():
        if theirs[key] != value:
            raise LongctxError(
                f"{KEY}: the adapter in {folder} has {key}={theirs[key]}, model.lora has {value} "
                "(set model.lora to the adapter's values)"
            )
    if not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise LongctxError(f"{KEY}: {folder} has no adapter_model.safetensors")
    return folder


def adapter_digest(state_dict: dict) -> str:
    """A SHA-256 over the names and float32 values of a PEFT adapter state dict (sorted by name)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_adapter_weights(folder) -> dict:
    """The tensors of a PEFT adapter folder's weights file (safetensors, else the legacy .bin), on CPU.
    Read directly, never through a hub lookup: a missing folder is a LongctxError, not a download."""
    folder = Path(folder)
    st, legacy = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(str(st), device="cpu")
    if legacy.is_file():
        import torch

        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise LongctxError(f"{KEY}: {folder} has no adapter_model.safetensors")


def file_digest(folder) -> str:
    """`adapter_digest` of the weights saved in an adapter folder."""
    return adapter_digest(read_adapter_weights(folder))


def load_init_adapter(peft_model, folder) -> str:
    """Copy the adapter's weights into `peft_model`'s LoRA layers; returns the digest of the model's
    adapter state afterwards (equal to `file_digest(folder)` when every weight found its place). Raises
    LongctxError when the adapter's keys do not cover the model's LoRA weights."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    weights = read_adapter_weights(folder)
    expected = set(get_peft_model_state_dict(peft_model))
    missing = sorted(expected - set(weights))
    if missing:
        raise LongctxError(
            f"{KEY}: the adapter in {folder} lacks {len(missing)} weight(s) of this model's LoRA, e.g. {missing[0]}"
        )
    set_peft_model_state_dict(peft_model, weights)
    digest = adapter_digest(get_peft_model_state_dict(peft_model))
    logger.info("initialised LoRA from %s (digest %s)", folder, digest[:12])
    return digest
