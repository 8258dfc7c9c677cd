"""`make repro` on a miniature, end to end through the real stages (synthesize, QLoRA train, evaluate) on
local Ray. Slow on 2 shared cores (Ray Train + DeepSpeed start-up per arm): opt in with -m slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_repro_base import mini_config  # the miniature preset shared by the repro tests


@pytest.mark.slow
def test_repro_runs_every_arm_and_writes_the_report(ray_local, tmp_path, monkeypatch):
    from ray_jobs.repro import run

    monkeypatch.setenv("LONGCTX_CACHE_DIR", str(tmp_path / "cache"))
    cfg = mini_config(
        f"run.storage_path={tmp_path}",
        "data.num_samples=8",
        "data.num_workers=1",
        "train.max_steps=2",
        "eval.num_workers=1",
        "eval.qa.num_questions=4",
        "eval.qa.positions=[0.0, 0.5, 1.0]",
        "eval.passkey.trials=1",
        "eval.passkey.depths=[0.5]",
        "repro.seeds=[0, 1]",
    )
    summary = run(cfg)
    root = tmp_path / "repro"
    # Each seed built its own base (repro.base_per_seed) and trained its arms on it.
    assert sorted(summary["bases"]) == [0, 1]
    assert summary["bases"][0]["dir"] != summary["bases"][1]["dir"]
    for seed, base in summary["bases"].items():
        for arm in ("paraphrase", "plain"):
            arms = root / "arms" / Path(base["dir"]).name
            assert (arms / f"{arm}-s{seed}" / "train" / "adapter" / "adapter_config.json").is_file()
    analysis = json.loads((root / "repro.json").read_text())["analysis"]
    assert analysis["models"] == ["base", "paraphrase", "plain"]
    long = analysis["accuracy"][str(analysis["long_length"])]
    assert set(long) == {"base", "paraphrase", "plain"}
    assert all(cell["n"] == 8 for model in long.values() for cell in model.values())  # 2 seeds x 4
    assert set(analysis["differences"]) == {"paraphrase - base", "plain - base", "paraphrase - plain"}
    text = (root / "report.md").read_text()
    assert "## Differences at" in text and summary["report"] == str(root / "report.md")
    assert "Toy base (seed 0): " in text and "Toy base (seed 1): " in text
    # A second run reuses every finished stage (resume) and rewrites the same report.
    again = run(cfg)
    assert again["report"] == summary["report"]
