"""Two training stages in one run folder: continued pre-training on raw text, then SFT from its adapter.

    cfg, done = run_pretrain(cfg)      # the pipeline stage calls this first when `pretrain.enabled`

Stage 1 is an ordinary run nested in the main run folder, so it keeps the usual layout and resumes like any
run: `<run>/pretrain/{config.yaml, data/ (text pieces, stats.json, quarantine/), train/ (metrics.jsonl,
adapter/, ray/ checkpoints)}`. Its config is the main one with `data.source = pretrain.source`, no mixture,
and `pretrain.{max_steps, epochs, lr}` in `train`. Stage 2 is the main config with `train.init_adapter`
pointing at stage 1's adapter; it writes the existing layout (`<run>/data`, `<run>/train`, `<run>/eval`).
When stage 1 had to run (not skipped as done), stage 2's stages are redone too: their inputs changed even
though their config did not.
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.config import Config, config_from_dict, run_dir
from longctx_core.infra.layout import PRETRAIN_DIR, RunLayout

logger = logging.getLogger(__name__)

PRETRAIN_STAGES = ("synthesize", "train")


def pretrain_config(cfg: Config) -> Config:
    """Stage 1's config: the run folder `<run>/pretrain/`, `pretrain.source` as the data, its own steps and
    lr, no init adapter; everything else (model, LoRA, DeepSpeed, max_seq_len) as in the main config."""
    tree = cfg.model_dump(mode="json")
    p = tree["pretrain"]
    tree["run"]["storage_path"] = str(run_dir(cfg))
    tree["run"]["name"] = PRETRAIN_DIR
    tree["data"]["source"] = p["source"]
    tree["data"]["mix"] = []
    t = tree["train"]
    t["max_steps"], t["epochs"], t["lr"] = p["max_steps"], p["epochs"], p["lr"] or t["lr"]
    t["init_adapter"] = None
    t["data_path"] = None
    if p["max_steps"]:  # SFT's warm-up may be longer than a short stage 1 (a config error there)
        t["warmup_steps"] = min(t["warmup_steps"], p["max_steps"] - 1)
    if t["storage_path"]:  # checkpoints of the two stages must not share a Ray Train storage folder
        t["storage_path"] = t["storage_path"].rstrip("/") + f"/{PRETRAIN_DIR}"
    tree["pretrain"] = {"enabled": False}
    return config_from_dict(tree)


def sft_config(cfg: Config, adapter: Path, redo: bool) -> Config:
    """Stage 2's config: the main one starting from `adapter` (`redo`: run.force for its stages)."""
    tree = cfg.model_dump(mode="json")
    tree["train"]["init_adapter"] = str(adapter)
    tree["pretrain"] = {"enabled": False}
    if redo:
        tree["run"]["force"] = True
    return config_from_dict(tree)


def run_pretrain(cfg: Config) -> tuple[Config, dict[str, str]]:
    """Run stage 1 when `pretrain.enabled` (its stages whose outputs exist for its config are skipped;
    `longctx_core.runner.chain.check` checked its source before Ray); returns stage 2's config and what stage 1
    did ({"pretrain <stage>": "done in ..." | "skipped ..."})."""
    from longctx_core.infra.runs import prepare_run_dir
    from longctx_core.runner.markers import run_stages

    if not cfg.pretrain.enabled:
        return cfg, {}
    pcfg = pretrain_config(cfg)
    root = prepare_run_dir(pcfg, "pipeline")
    done, ran = run_stages(pcfg, root, PRETRAIN_STAGES, label="pretrain ")
    return sft_config(cfg, RunLayout(root).train.adapter, redo=ran), done
