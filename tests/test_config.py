"""The typed config: presets validate, overrides apply, bad input fails with one line naming the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from longctx_core.config import Config, ConfigError, load_config, run_dir
from repro.config import ReproConfig

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "ray_jobs" / "configs").glob("*.yaml"))


def test_presets_exist():
    assert any(p.name == "tiny_cpu.yaml" for p in PRESETS)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_shipped_preset_validates(preset):
    # The experiment's preset adds `repro:` to the product schema (repro/config.py); the others are product.
    cfg = load_config(preset, schema=ReproConfig if preset.name == "repro_cpu.yaml" else Config)
    assert cfg.run.name
    # Style rule 2: a preset's first lines are the exact command that runs it.
    head = preset.read_text().splitlines()[:5]
    assert any("python -m ray_jobs." in line and str(preset.relative_to(REPO)) in line for line in head), head


def test_dotted_overrides_apply_with_yaml_types():
    cfg = load_config(
        REPO / "ray_jobs/configs/tiny_cpu.yaml",
        [
            "train.max_steps=5",
            "data.num_samples=16",
            "model.lora.target_modules=[q_proj, v_proj]",
            "run.name=x",
        ],
    )
    assert cfg.train.max_steps == 5
    assert cfg.data.num_samples == 16
    assert cfg.model.lora.target_modules == ["q_proj", "v_proj"]
    assert run_dir(cfg).name == "x"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lrr=1e-4"], "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
        (["model.lora.rr=8"], "unknown config key 'model.lora.rr' (did you mean 'model.lora.r'?)"),
        (["train.max_steps=many"], "train.max_steps: Input should be a valid integer"),
        (["model.tiny.hidden_size=130"], "model.tiny.hidden_size: must be divisible by num_attention_heads"),
        (["data.source.kind=jsonl"], "data.source.path: is required when source.kind is 'jsonl'"),
        (
            ["model.attn_implementation=flash_attention_2"],
            "model.attn_implementation: flash_attention_2 needs train.use_gpu=true",
        ),
        (["train"], "override 'train' is not of the form dotted.key=value"),
        (["train.max_steps.x=1"], "'train.max_steps' is not a section"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "ray_jobs/configs/tiny_cpu.yaml", overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"num_worker": 2}}))
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.num_worker' \(did you mean 'train.num_workers'\?\)"
    ):
        load_config(bad)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "ray_jobs/configs/tiny_cpu.yaml", [f"run.storage_path={tmp_path}"])
    again = type(cfg).model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_entrypoint_fails_before_ray_with_one_line(tmp_path):
    """A bad key exits 2 with one stderr line, and no Ray session was started (no ray.init)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray_jobs.pipeline",
            "--config",
            "ray_jobs/configs/tiny_cpu.yaml",
            "data.num_sample=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        "longctx pipeline: error: invalid config: unknown config key 'data.num_sample' "
        "(did you mean 'data.num_samples'?)"
    )
    assert "Ray instance" not in proc.stdout + proc.stderr  # ray.init() logs this when it starts one
