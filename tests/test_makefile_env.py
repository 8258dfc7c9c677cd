"""The Makefile keeps the hub reachable for a user's own model: only the embedded demo runs offline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _make(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.pop("MAKEFLAGS", None)
    out = subprocess.run(["make", "-s", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def test_no_target_exports_hf_hub_offline():
    """A head started by make cluster-up, and every job it runs, inherits make's environment: a real
    preset's `make submit` to it must be able to download its checkpoint."""
    seen = _make("--eval", 'longctx-env-probe: ; @echo "[$$HF_HUB_OFFLINE]"', "longctx-env-probe")
    assert seen.strip() == "[]"


def test_only_the_shipped_demo_runs_offline():
    demo = _make("-n", "demo").strip().splitlines()[-1]
    assert demo.startswith("HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} ") and "demo_cpu.yaml" in demo
    own = _make("-n", "demo", "CONFIG=ray_jobs/configs/qwen25_7b_yarn64k.yaml").strip().splitlines()[-1]
    assert "HF_HUB_OFFLINE" not in own and own.endswith("--config ray_jobs/configs/qwen25_7b_yarn64k.yaml")
