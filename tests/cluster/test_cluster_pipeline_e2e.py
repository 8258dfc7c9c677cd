"""The product end to end, as a user runs it on a cluster: a real local head (`cluster/local/up.sh`), the tiny
pipeline submitted with the `ray job submit` CLI (`cluster/local/submit.sh`), SUCCEEDED read back through
the authenticated job API, and a run folder holding the data, the adapter and the evaluation report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # a whole pipeline: make test-e2e (CI runs it after make test)

REPO = Path(__file__).resolve().parents[2]

# The demo preset, shrunk to a smoke run: a few samples, steps and questions.
SMOKE = [
    "data.num_samples=12",
    "data.target_tokens={min: 600, max: 1000}",
    "train.max_steps=3",
    "train.checkpoint_every=0",
    "eval.qa.num_questions=2",
    "eval.qa.positions=[0.0, 0.5, 1.0]",
    "eval.length_factors=[1.0, 2.0]",
    "eval.passkey.depths=[0.0, 1.0]",
    "eval.perplexity.num_sequences=1",
    "eval.max_new_tokens=24",
]


def _job_status(dashboard: str, token: str, job_id: str) -> dict:
    req = urllib.request.Request(
        f"{dashboard}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(900)
def test_pipeline_submitted_to_a_real_head_succeeds(headctl):
    base = Path(tempfile.mkdtemp(prefix="lcx-e2e-", dir="/tmp"))  # short: Ray's socket paths live below it
    temp_dir = (base / "ray").resolve()
    side_env, flags = headctl.side_by_side(temp_dir, base / "token")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env |= side_env
    dashboard = f"http://127.0.0.1:{env['LONGCTX_DASHBOARD_PORT']}"
    runs = base / "runs"
    job_id = f"lcx-e2e-{uuid.uuid4().hex[:8]}"
    try:
        up = subprocess.run(
            ["bash", "cluster/local/up.sh", *flags, "--num-cpus=2"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        t0 = time.monotonic()
        submit = subprocess.run(
            [
                "bash",
                "cluster/local/submit.sh",
                "pipeline",
                "ray_jobs/configs/tiny_cpu.yaml",
                f"run.storage_path={runs}",
                "run.name=e2e",
                *SMOKE,
                "--submission-id",
                job_id,
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=800,
        )
        logs = submit.stdout[-6000:] + submit.stderr[-3000:]
        assert submit.returncode == 0, logs
        token = (base / "token").read_text().strip()
        status = _job_status(dashboard, token, job_id)
        assert status["status"] == "SUCCEEDED", status
        print(f"pipeline job SUCCEEDED in {time.monotonic() - t0:.0f} s")
    finally:
        headctl.stop_head(temp_dir)

    run = runs / "e2e"
    assert (run / "config.yaml").is_file()
    assert list((run / "data" / "train").glob("*.parquet"))
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["num_samples"] > 0
    assert (run / "train" / "adapter" / "adapter_config.json").is_file()
    assert (run / "train" / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["tasks"]) >= {"qa", "passkey", "perplexity"}
    assert (run / "eval" / "report.md").is_file() and list((run / "eval" / "plots").glob("*.png"))
    report = (run / "report.md").read_text()
    assert "eval/report.md" in report and "train/adapter/" in report
    shutil.rmtree(base, ignore_errors=True)
