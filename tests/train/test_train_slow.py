"""Longer training scenarios (opt in with `-m slow`): ZeRO-3 with a plain (unquantised) LoRA base, a
resubmitted run continuing from its checkpoint, and synthesize -> train on data_gen's own Parquet."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from longctx_core.infra.metrics import read_jsonl

pytestmark = pytest.mark.slow


def _train(cfg):
    from longctx_core.infra.runs import prepare_run_dir
    from longctx_core.train.driver import train

    return train(cfg, prepare_run_dir(cfg, "train"))


def test_zero3_plain_lora_adapter_is_complete(ray_local, make_train_cfg, tmp_path, train_model_dir):
    """ZeRO-3 shards the LoRA matrices too: a plain state_dict there is empty; the saved adapter must have
    every key and shape of a locally built PeftModel, with trained values."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from longctx_core.model.loading import load_model
    from longctx_core.model.lora import add_lora

    cfg = make_train_cfg(
        tmp_path, **{"train.zero_stage": 3, "model.quantization.load_in_4bit": False, "train.max_steps": 4}
    )
    summary = _train(cfg)
    saved = load_file(str(Path(summary["adapter"]) / "adapter_model.safetensors"))
    expected = get_peft_model_state_dict(add_lora(load_model(cfg.model), cfg.model))
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert all(v.abs().max() > 0 for k, v in saved.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def four_step_run(ray_local, make_train_cfg, tmp_path_factory):
    """One 4-step run checkpointed every 2 steps, trained once for both resubmission tests: each works on
    its own copy of the storage (`_copy_run`), so neither depends on the other or on their order."""
    storage = tmp_path_factory.mktemp("four-step-run")
    summary = _train(make_train_cfg(storage, **{"train.max_steps": 4, "train.checkpoint_every": 2}))
    return storage, summary


def _copy_run(four_step_run, dest: Path) -> dict:
    storage, summary = four_step_run
    shutil.copytree(storage, dest, dirs_exist_ok=True)
    return summary


def test_resubmitted_run_continues_from_its_checkpoint(four_step_run, make_train_cfg, tmp_path):
    first = _copy_run(four_step_run, tmp_path)
    assert first["steps"] == 4 and first["resumed_from_step"] is None
    again = _train(make_train_cfg(tmp_path, **{"train.max_steps": 6, "train.checkpoint_every": 2}))
    assert again["steps"] == 6 and again["resumed_from_step"] == 4
    rows = read_jsonl(tmp_path / "t" / "train" / "metrics.jsonl")
    starts = [r["resumed_from_step"] for r in rows if r.get("event") == "start"]
    assert starts == [0, 4]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resubmission_with_another_config_is_refused(four_step_run, make_train_cfg, tmp_path):
    from longctx_core.errors import LongctxError

    _copy_run(four_step_run, tmp_path)
    checkpoints = tmp_path / "t" / "train" / "ray" / "ray-train"
    kept = sorted(p.name for p in checkpoints.glob("checkpoint-*"))
    assert kept  # the copied run holds checkpoints of the first config
    with pytest.raises(LongctxError, match="different train/model/data config; set run.force=true"):
        _train(make_train_cfg(tmp_path, **{"train.max_steps": 2, "train.lr": 1e-4}))
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == kept  # the refusal touched nothing
    forced = _train(make_train_cfg(tmp_path, **{"train.max_steps": 2, "train.lr": 1e-4, "run.force": True}))
    assert forced["resumed_from_step"] is None and forced["steps"] == 2  # started over, not at step 4
    rows = read_jsonl(tmp_path / "t" / "train" / "metrics.jsonl")
    assert [r["resumed_from_step"] for r in rows if r.get("event") == "start"] == [0]


def test_synthesize_then_train_on_data_gen_output(ray_local, tmp_path, tiny_model_dir):
    """The data stage's Parquet (built-in world, tiny model) packed and trained on, end to end."""
    from longctx_core.config import load_config
    from ray_jobs import synthesize, train

    cfg = load_config(
        None,
        [
            f"run.storage_path={tmp_path}",
            "run.name=e2e",
            "data.num_samples=24",
            "data.eval_samples=0",
            "data.target_tokens=[384, 512]",
            "data.source.builtin.num_records=60",
            "train.max_seq_len=1024",
            "train.max_steps=3",
            "train.lr=1e-3",
            "model.gradient_checkpointing=false",
        ],
    )
    synthesize.run(cfg)
    summary = train.run(cfg)
    assert summary["steps"] == 3 and (Path(summary["adapter"]) / "adapter_config.json").is_file()
    rows = [r for r in read_jsonl(tmp_path / "e2e" / "train" / "metrics.jsonl") if "loss" in r]
    assert min(r["packing_efficiency"] for r in rows) > 0.5  # 384-512-token samples, 1024-token rows
