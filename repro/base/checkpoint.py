"""A toy base folder and its resumable build state: what is saved, and how it is loaded back through the
library's model loaders.

    <cache>/toybase-<hash>/           the base: HF model + tokenizer, toy_base.json (recipe and summary)
    <cache>/toybase-<hash>.partial/   the build checkpoint: HF model + tokenizer, optimizer.pt, build_state.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longctx_core.config import ModelConfig
from longctx_core.fsio import staged_dir
from repro.config import ReproConfig

logger = logging.getLogger(__name__)

INFO_FILE = "toy_base.json"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "build_state.json"


def read_base_info(folder: str | Path) -> dict:
    """The build summary saved with a toy base (`toy_base.json`)."""
    return json.loads((Path(folder) / INFO_FILE).read_text())


def base_model_config(cfg: ReproConfig, folder: str | Path) -> ModelConfig:
    """`model` pointed at a toy base folder as built: its own tokenizer, no RoPE extension, fp32 (the
    precision it trains in)."""
    return cfg.model.model_copy(
        update={
            "name_or_path": str(folder),
            "tokenizer": None,
            "torch_dtype": "float32",
            "rope": cfg.model.rope.model_copy(update={"type": "none"}),
        }
    )


def save_checkpoint(folder: Path, model, tokenizer, opt, state: dict) -> None:
    """Write the build's resumable state to `folder`, replacing the previous one atomically
    (`fsio.staged_dir`: a killed save leaves the last complete checkpoint)."""
    import torch

    with staged_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(opt.state_dict(), tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))


def load_checkpoint(cfg: ReproConfig, folder: Path):
    """(model, tokenizer, optimizer state or None, build state) of a saved build: a `.partial` checkpoint
    (weights + optimizer + state) or a finished below-target base (weights + its summary; no optimizer)."""
    import torch

    from longctx_core.model.loading import load_model, load_tokenizer

    model_cfg = base_model_config(cfg, folder)
    model, tokenizer = load_model(model_cfg, quantize=False), load_tokenizer(model_cfg)
    opt_path = folder / OPTIMIZER_FILE
    opt_state = torch.load(opt_path, weights_only=True) if opt_path.is_file() else None
    if (folder / STATE_FILE).is_file():
        state = json.loads((folder / STATE_FILE).read_text())
    else:
        summary = read_base_info(folder)["summary"]
        state = {k: summary[k] for k in ("steps", "tokens", "minutes", "curve")} | {
            "runs": summary.get("runs", [])
        }
    return model, tokenizer, opt_state, state
