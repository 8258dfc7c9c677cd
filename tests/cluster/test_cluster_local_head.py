"""A REAL local Ray head through cluster/local/up.sh and down.sh (what make cluster-up / cluster-down run).

Free non-default ports, its own temp dir and token file (headctl.side_by_side): it neither collides with nor
touches a `make cluster-up` head, ~/.ray/auth_token, or other processes' `ray.init(address="local")`, and it
is stopped by its own tag, never with `ray stop` (which kills every Ray process of the user). Checked: the
job API refuses a request without a token (401) or with a wrong one (403); `ray job submit` (CLI,
RAY_AUTH_MODE=token) of a `python -c` job that logs a longctx gauge reaches SUCCEEDED through the job API;
the gauge is exported to Prometheus as `ray_longctx_<stage>_<key>`; no process of the head listens beyond
loopback; up.sh is idempotent; down.sh leaves no process, no open dashboard port and no stale
ray_current_cluster, while another program's `ray.init(address="local")`, started before the head and
running throughout, still runs a task afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from longctx_core.infra.metrics import _gauge_name

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")  # the venv's CLI, next to the interpreter running the tests


def _http(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """(status, body) of a GET, with a bearer token when given; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _scrape(url: str) -> str:
    """The metrics page's text, or "" while the head's exporter is not answering yet (a just-started
    metrics agent refuses or resets connections for a while; the caller polls)."""
    try:
        return _http(url)[1].decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def _wait_for(predicate, timeout: float, every: float = 0.5):
    """Poll `predicate()` until it returns something truthy (returned) or `timeout` passes (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def _job_code(stop_file: Path) -> str:
    """A trivial driver: connect, log one longctx gauge until told to stop, print a marker with the CPUs and
    the niceness a task of this head runs at."""
    return (
        "import pathlib, time, ray\n"
        "ray.init()\n"
        "from longctx_core.infra.metrics import Metrics\n"
        "m = Metrics('train', tags={'run': 'cluster-test'})\n"
        f"stop = pathlib.Path({str(stop_file)!r})\n"
        "end = time.time() + 60\n"
        "while time.time() < end and not stop.exists():\n"
        "    m.log({'loss': 1.25})\n"
        "    time.sleep(0.5)\n"
        "nice = ray.get(ray.remote(num_cpus=0)(lambda: __import__('os').nice(0)).remote())\n"
        "print('LCX-JOB-OK', int(ray.cluster_resources()['CPU']), 'worker-niceness', nice)\n"
    )


def _bystander_code(go_file: Path) -> str:
    """Another program's private runtime, `ray.init(address="local")`: it must survive our head's stop."""
    return (
        "import pathlib, time, ray\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
        "print('BYSTANDER-UP', flush=True)\n"
        f"go = pathlib.Path({str(go_file)!r})\n"
        "end = time.time() + 240\n"
        "while not go.exists() and time.time() < end:\n"
        "    time.sleep(0.5)\n"
        "print('BYSTANDER-OK', ray.get(ray.remote(lambda: 42).remote(), timeout=60), flush=True)\n"
        "ray.shutdown()\n"
    )


@pytest.mark.timeout(300)
@pytest.mark.e2e
def test_local_head_token_auth_loopback_only_and_a_real_job(headctl):
    base = Path(tempfile.mkdtemp(prefix="lcx-", dir="/tmp"))  # short: Ray's socket paths live below it
    temp_dir = (base / "ray").resolve()
    token_path = base / "token"
    side_env, flags = headctl.side_by_side(temp_dir, token_path)
    plain_env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")
    }
    env = plain_env | side_env
    flags += ["--num-cpus=1", "--object-store-memory=100000000"]
    dashboard = f"http://127.0.0.1:{env['LONGCTX_DASHBOARD_PORT']}"
    gcs_address = f"127.0.0.1:{env['LONGCTX_RAY_PORT']}"
    metrics_port = next(f.split("=")[1] for f in flags if f.startswith("--metrics-export-port="))
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    bystander_out = base / "bystander.out"
    t0 = time.monotonic()
    with bystander_out.open("w") as out:
        bystander = subprocess.Popen(
            [sys.executable, "-c", _bystander_code(base / "go")],
            env=plain_env,  # none of our head's settings: an unrelated program
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        up = subprocess.run(
            ["bash", str(REPO / "cluster/local/up.sh"), *flags],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert f"dashboard   {dashboard}" in up.stdout
        # up.sh made the token itself: private, and never printed
        token = token_path.read_text().strip()
        assert len(token) == 64 and stat.S_IMODE(token_path.stat().st_mode) & 0o077 == 0
        assert token not in up.stdout + up.stderr
        assert (temp_dir / "ray_current_cluster").read_text().strip() == gcs_address
        logger.info("head up after %.1f s", time.monotonic() - t0)
        again = subprocess.run(
            ["bash", str(REPO / "cluster/local/up.sh")], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 0 and "running" in again.stdout + again.stderr  # idempotent, no 2nd head

        # --- token auth: no token -> 401, a wrong token -> 403, the right one -> 200
        status, body = _http(f"{dashboard}/api/jobs/")
        assert status == 401, body[:200]
        assert _http(f"{dashboard}/api/jobs/", token="0" * 64)[0] == 403
        assert _http(f"{dashboard}/api/version", token=token)[0] == 200

        # --- a real job through the `ray job submit` CLI
        job_id = f"lcx-test-{uuid.uuid4().hex[:8]}"
        stop_file = base / "stop"
        submit = subprocess.run(
            [str(RAY), "job", "submit", "--address", dashboard, "--submission-id", job_id, "--no-wait"]
            + ["--working-dir", str(REPO), "--runtime-env", str(REPO / "cluster/runtime_env.yaml")]
            + ["--", "python", "-c", _job_code(stop_file)],
            env={**env, "RAY_AUTH_MODE": "token"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]

        # the project's gauge reaches Prometheus under Ray's `ray_` prefix (what cluster/grafana charts)
        exported = f"ray_{_gauge_name('train', 'loss')}{{"
        scraped = _wait_for(lambda: exported in _scrape(metrics_url), timeout=60)
        logger.info("job submitted, gauge scraped=%s after %.1f s", bool(scraped), time.monotonic() - t0)

        # --- nothing of this head (job workers included) listens beyond loopback
        procs = headctl.head_processes(str(temp_dir))
        sockets = headctl.listening_sockets({p.pid for p in procs})
        assert any(port == int(env["LONGCTX_DASHBOARD_PORT"]) for _, port, _ in sockets)
        assert [s for s in sockets if not headctl.is_loopback(s[0])] == []
        assert headctl.exposed_sockets(temp_dir) == []

        stop_file.touch()

        def finished():
            code, raw = _http(f"{dashboard}/api/jobs/{job_id}", token=token)
            info = json.loads(raw) if code == 200 else {}
            return info if info.get("status") in ("SUCCEEDED", "FAILED", "STOPPED") else None

        info = _wait_for(finished, timeout=90)
        logs = json.loads(_http(f"{dashboard}/api/jobs/{job_id}/logs", token=token)[1]).get("logs", "")
        assert info and info["status"] == "SUCCEEDED", (info, logs[-2000:])
        assert "LCX-JOB-OK 1 worker-niceness 0" in logs  # the head starts workers at 0, not Ray's 15
        logger.info("job %s after %.1f s", info["status"], time.monotonic() - t0)
        assert scraped, f"{exported} never appeared at {metrics_url}"

        # --- down.sh stops exactly this head and cleans its address file
        down = subprocess.run(
            ["bash", str(REPO / "cluster/local/down.sh")], env=env, capture_output=True, text=True, timeout=90
        )
        assert down.returncode == 0, down.stderr
        assert "stopped the Ray head" in down.stdout + down.stderr
        assert headctl.head_processes(str(temp_dir)) == []
        assert not (temp_dir / "ray_current_cluster").exists()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(env["LONGCTX_DASHBOARD_PORT"])), timeout=2).close()
        default_file = Path("/tmp/ray/ray_current_cluster")  # what a plain `ray.init()` would follow
        assert not default_file.exists() or default_file.read_text().strip() != gcs_address
        logger.info("head down after %.1f s", time.monotonic() - t0)

        # --- another program's ray.init(address="local"), running all along, still works
        (base / "go").touch()
        bystander.wait(timeout=120)
        said = bystander_out.read_text()
        assert "BYSTANDER-UP" in said and "BYSTANDER-OK 42" in said, said[-2000:]
    finally:
        headctl.stop_head(temp_dir, grace_s=3.0)  # no-op when down.sh worked; never leaves a head behind
        if bystander.poll() is None:
            bystander.terminate()
            bystander.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
