"""`make submit` (cluster/local/submit.sh -> submit.py): what it sends to `ray job submit`, checked without a
cluster; the real submission through the CLI is in test_cluster_local_head.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = "ray_jobs/configs/tiny_cpu.yaml"
FAKE_SECRET = "hf_" + "x" * 30  # the shape of a Hugging Face token; not a real one


def _submit(cmd: list[str], tmp_path: Path, timeout: int, **env: str) -> subprocess.CompletedProcess:
    """Run `cmd` in the checkout against a head temp dir of our own (none running there)."""
    full_env = {**os.environ, "LONGCTX_RAY_TEMP_DIR": str(tmp_path / "ray"), **env}
    full_env.pop("RAY_API_SERVER_ADDRESS", None)
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def _run_submit(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the real script as `make submit` does."""
    return _submit(["bash", str(REPO / "cluster/local/submit.sh"), *args], tmp_path, 120, **env)


def test_local_head_submission_writes_into_this_checkout(submit_mod):
    sub = submit_mod.build_submission(
        "pipeline", DEMO, ["train.max_steps=2"], "http://127.0.0.1:8265", {"HOME": "/x"}
    )
    assert sub.entrypoint[:5] == ["python", "-m", "ray_jobs.pipeline", "--config", DEMO]
    assert sub.entrypoint[5] == "train.max_steps=2"
    # the job runs in Ray's unpacked copy of the working dir: a relative storage_path would land there
    assert sub.entrypoint[6] == f"run.storage_path={(REPO / 'runs').resolve()}"
    assert sub.runtime_env["excludes"] and sub.runtime_env["env_vars"]["PYTHONUNBUFFERED"] == "1"
    assert sub.forwarded == []


def test_remote_or_explicit_storage_path_is_left_alone(submit_mod):
    remote = submit_mod.build_submission("pipeline", DEMO, [], "http://10.1.2.3:8265", {})
    assert not any(a.startswith("run.storage_path=") for a in remote.entrypoint)
    mine = submit_mod.build_submission(
        "pipeline", DEMO, ["run.storage_path=/mnt/shared/runs"], "127.0.0.1:8265", {}
    )
    assert [a for a in mine.entrypoint if a.startswith("run.storage_path=")] == [
        "run.storage_path=/mnt/shared/runs"
    ]


def test_secrets_are_forwarded_only_when_set(submit_mod):
    env = {"HF_TOKEN": FAKE_SECRET, "HF_HUB_OFFLINE": "1", "AWS_SECRET_ACCESS_KEY": "nope", "HF_ENDPOINT": ""}
    runtime_env, forwarded = submit_mod.build_runtime_env(env)
    assert forwarded == ["HF_TOKEN"]
    assert runtime_env["env_vars"]["HF_TOKEN"] == FAKE_SECRET
    # offline mode is the demo's, not the cluster's; cloud keys never travel with a job
    assert not {"HF_HUB_OFFLINE", "AWS_SECRET_ACCESS_KEY", "HF_ENDPOINT"} & set(runtime_env["env_vars"])
    assert submit_mod.build_runtime_env({})[1] == []


def test_address_precedence(submit_mod, headctl, tmp_path):
    assert submit_mod.resolve_address(None, {}, tmp_path) == "http://127.0.0.1:8265"
    (tmp_path / headctl.STATE_FILE).write_text("DASHBOARD_URL=http://127.0.0.1:38999\n")
    assert submit_mod.resolve_address(None, {}, tmp_path) == "http://127.0.0.1:38999"
    env = {"RAY_API_SERVER_ADDRESS": "http://127.0.0.1:1234"}
    assert submit_mod.resolve_address(None, env, tmp_path) == "http://127.0.0.1:1234"
    assert submit_mod.resolve_address("http://h:1", env, tmp_path) == "http://h:1"
    assert submit_mod.is_loopback_url("127.0.0.1:8265") and submit_mod.is_loopback_url(
        "http://localhost:8265"
    )
    assert not submit_mod.is_loopback_url("http://10.0.0.1:8265")


def test_bad_config_fails_in_one_line_before_reaching_any_cluster(tmp_path):
    # port 9 (discard) has no job server: reaching it would give a connection error, not this message
    res = _run_submit(["pipeline", DEMO, "train.lrr=1", "--address", "http://127.0.0.1:9"], tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "longctx submit: error: invalid config: unknown config key 'train.lrr' (did you mean 'train.lr'?)"
    ]
    res = _run_submit(["nostage", DEMO], tmp_path)
    assert res.returncode == 2 and "stage 'nostage' is not one of the built stages" in res.stderr
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((REPO / DEMO).read_text())
    res = _run_submit(["pipeline", str(outside), "--dry-run"], tmp_path)
    assert res.returncode == 2 and "outside the working dir" in res.stderr


def test_dry_run_prints_the_ray_job_submit_command_without_secret_values(tmp_path):
    res = _run_submit(["pipeline", DEMO, "data.num_samples=8", "--dry-run"], tmp_path, HF_TOKEN=FAKE_SECRET)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert FAKE_SECRET not in out and "forwarding from this shell as env_vars: HF_TOKEN" in out
    cmd = next(line for line in out.splitlines() if line.startswith("+ RAY_AUTH_MODE=token "))
    assert " job submit --address http://127.0.0.1:8265 --working-dir " in cmd
    assert " --runtime-env " in cmd
    assert cmd.endswith(
        f"-- python -m ray_jobs.pipeline --config {DEMO} data.num_samples=8 "
        f"run.storage_path={(REPO / 'runs').resolve()}"
    )


@pytest.mark.parametrize("script", ["up.sh", "down.sh", "submit.sh", "common.sh"])
def test_shell_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(REPO / "cluster/local" / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _make_submit(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`make submit ...` without re-running make setup; a dry run prints the `ray job submit` command."""
    make = ["make", "-s", "-o", ".venv/.longctx-installed", "submit", f"CONFIG={DEMO}", *args]
    return _submit(make, tmp_path, 300)


def test_make_submit_passes_args_to_the_job(tmp_path):
    """`make submit ... ARGS=...` reaches the job's command line (as REPRO_ARGS does for make repro)."""
    res = _make_submit(tmp_path, "STAGE=train", "ARGS=train.max_steps=4 --dry-run")
    assert res.returncode == 0, res.stderr
    cmd = next(line for line in (res.stdout + res.stderr).splitlines() if line.startswith("+ RAY_AUTH_MODE"))
    assert f"-- python -m ray_jobs.train --config {DEMO} train.max_steps=4 " in cmd
    bad = _make_submit(tmp_path, "ARGS=train.max_stepz=4 --dry-run")
    assert bad.returncode != 0 and "unknown config key 'train.max_stepz'" in bad.stderr
