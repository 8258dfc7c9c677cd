"""Resubmitting the pipeline with a larger `train.max_steps`: the train stage trains on from its checkpoint
(the stage marker and the checkpoint marker share one fingerprint, which leaves resubmission knobs out),
and evaluation runs again on the new adapter. The train stage alone resumes too, and a later pipeline run
picks its result up. A changed learning rate is still refused.

The demo preset shrunk to seconds per stage: 12 samples, 2-step increments, a 2-question evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx_core.infra.metrics import read_jsonl

pytestmark = pytest.mark.e2e  # a whole pipeline: make test-e2e (CI runs it after make test)

SMOKE = [
    "data.num_samples=12",
    "data.target_tokens={min: 600, max: 1000}",
    "train.checkpoint_every=2",
    "eval.qa.num_questions=2",
    "eval.qa.positions=[0.0, 1.0]",
    "eval.length_factors=[1.0]",
    "eval.passkey.enabled=false",
    "eval.perplexity.enabled=false",
    "eval.max_new_tokens=8",
]


def _cfg(storage: Path, *extra: str):
    from longctx_core.config import load_config

    return load_config(
        "ray_jobs/configs/tiny_cpu.yaml", [f"run.storage_path={storage}", "run.name=resume", *SMOKE, *extra]
    )


def _marker(root: Path, stage: str) -> dict:
    return json.loads((root / f".stage-{stage}.json").read_text())


def _adapter_bytes(root: Path) -> bytes:
    return (root / "train" / "adapter" / "adapter_model.safetensors").read_bytes()


def test_pipeline_rerun_with_more_steps_trains_on_and_re_evaluates(ray_local, tmp_path):
    from longctx_core.errors import LongctxError
    from longctx_core.fsio import digest
    from ray_jobs import pipeline
    from ray_jobs import train as train_stage

    root = tmp_path / "resume"
    first = pipeline.run(_cfg(tmp_path, "train.max_steps=2"))
    assert all(v.startswith("done") for v in first["stages"].values()), first
    assert _marker(root, "train")["summary"]["steps"] == 2
    adapter_2, eval_2 = _adapter_bytes(root), _marker(root, "evaluate")

    # The pipeline again, 2 more steps: no new data, training resumes at step 2, evaluation re-runs.
    second = pipeline.run(_cfg(tmp_path, "train.max_steps=4"))
    assert second["stages"]["synthesize"].startswith("skipped")
    assert second["stages"]["train"].startswith("done") and second["stages"]["evaluate"].startswith("done")
    summary = _marker(root, "train")["summary"]
    assert (summary["resumed_from_step"], summary["steps"]) == (2, 4)
    rows = read_jsonl(root / "train" / "metrics.jsonl")
    assert [r["resumed_from_step"] for r in rows if r.get("event") == "start"] == [0, 2]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert _adapter_bytes(root) != adapter_2
    eval_4 = _marker(root, "evaluate")
    assert eval_4 != eval_2 and eval_4["upstream"] == digest(_marker(root, "train"))

    # The train stage alone resumes as well (4 -> 6) ...
    alone = train_stage.run(_cfg(tmp_path, "train.max_steps=6"))
    assert (alone["resumed_from_step"], alone["steps"]) == (4, 6)
    adapter_6 = _adapter_bytes(root)
    # ... and the pipeline then finds nothing left to train, records step 6 and re-evaluates.
    third = pipeline.run(_cfg(tmp_path, "train.max_steps=6"))
    assert third["stages"]["train"].startswith("done") and third["stages"]["evaluate"].startswith("done")
    assert _marker(root, "train")["summary"]["steps"] == 6 and _adapter_bytes(root) == adapter_6
    assert [r["step"] for r in read_jsonl(root / "train" / "metrics.jsonl") if "loss" in r] == list(
        range(1, 7)
    )

    # Unchanged: everything is skipped. A changed learning rate changes outputs: refused.
    fourth = pipeline.run(_cfg(tmp_path, "train.max_steps=6"))
    assert all(v.startswith("skipped") for v in fourth["stages"].values()), fourth
    with pytest.raises(LongctxError, match="holds 'train' outputs made with a different config"):
        pipeline.run(_cfg(tmp_path, "train.max_steps=6", "train.lr=1e-4"))
