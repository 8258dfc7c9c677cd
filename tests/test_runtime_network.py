"""A stage run without a cluster address starts a Ray runtime that listens on 127.0.0.1 only.

The real entrypoint (`python -m ray_jobs.synthesize` on the CPU demo preset, 8 samples) runs as a subprocess
with no RAY_ADDRESS, so it starts its own runtime through `longctx_core.infra.runtime.ensure_ray`. While it runs,
the test lists, every few tenths of a second, the listening TCP sockets of every process in its tree (the
driver, the GCS, the raylet, the dashboard and its agents, the runtime-env agent, the Ray Data workers) and
keeps the union. It fails on any address that is not loopback, and it also fails if it never saw the GCS
and the raylet listen (a run too short to observe proves nothing). A second test checks that a driver given
a loopback RAY_ADDRESS joins that runtime (Ray would otherwise dial the LAN address and hang).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def _headctl():
    """cluster/local/headctl.py (not a package): its socket listing and loopback test, reused here."""
    spec = importlib.util.spec_from_file_location(
        "longctx_headctl_for_tests", REPO / "cluster/local/headctl.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(pid: int) -> dict[int, str]:
    """pid -> process name for `pid` and all its live descendants ({} once it has exited)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    names = {}
    for proc in procs:
        try:
            names[proc.pid] = proc.name()
        except psutil.Error:  # exited between listing and asking
            continue
    return names


def _kill(pids) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:  # already gone
            continue


@pytest.mark.timeout(480)
@pytest.mark.e2e
def test_a_stage_local_runtime_listens_on_loopback_only(tmp_path, tiny_model_dir):
    # tiny_model_dir: the tiny checkpoint is built (once, cached) before the stage, not inside it
    headctl = _headctl()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster: the local path
    cmd = [
        sys.executable,
        "-m",
        "ray_jobs.synthesize",
        "--config",
        "ray_jobs/configs/tiny_cpu.yaml",
        "data.num_samples=8",
        f"run.storage_path={tmp_path}",
        "run.name=net",
    ]
    log = tmp_path / "stage.log"
    seen: dict[tuple[str, int], str] = {}  # (ip, port) -> "name[pid]"
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and time.monotonic() - t0 < 420:
                names = _tree(proc.pid)
                for ip, port, pid in headctl.listening_sockets(set(names)):
                    seen.setdefault((ip, port), f"{names.get(pid, '?')}[{pid}]")
                time.sleep(0.3)
        finally:
            if proc.poll() is None:  # timed out: stop the stage and the runtime it started, nothing else
                _kill(_tree(proc.pid))
            proc.wait(timeout=30)
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    # Token auth is left as Ray sets it (ensure_ray never turns it off); Ray prints its notice only on some
    # starts, so the log line is not a reliable check and is not asserted here.
    owners = {owner.split("[")[0] for owner in seen.values()}
    assert {"gcs_server", "raylet"} <= owners, f"never saw the runtime listen: {sorted(seen.items())}"
    exposed = sorted((ip, port, owner) for (ip, port), owner in seen.items() if not headctl.is_loopback(ip))
    assert not exposed, f"listening beyond loopback: {exposed}"
    shown = ", ".join(f"{owner.split('[')[0]}@{ip}:{port}" for (ip, port), owner in sorted(seen.items()))
    print(f"{len(seen)} listening sockets in {time.monotonic() - t0:.0f} s, all on loopback: {shown}")


@pytest.mark.timeout(300)
def test_a_driver_joins_a_loopback_cluster_address(ray_local):
    """RAY_ADDRESS=127.0.0.1:<port> (e.g. the `make cluster-up` head) joins that runtime. A plain
    `ray.init()` swaps 127.0.0.1 for the LAN address, where a loopback-only GCS does not listen, and retries
    for minutes: the subprocess timeout below catches that."""
    node = ray_local._private.worker.global_worker.node
    assert node.node_ip_address == "127.0.0.1"
    code = (
        "import ray\n"
        "from longctx_core.infra.runtime import ensure_ray\n"
        "print('MODE', ensure_ray(), ray.get_runtime_context().get_node_id(), flush=True)\n"
    )
    env = dict(os.environ, RAY_ADDRESS=node.address)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=150
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"MODE cluster {node.node_id}" in out.stdout


@pytest.mark.timeout(300)
def test_token_auth_switched_on_after_ray_is_imported(tmp_path):
    """Ray reads RAY_AUTH_MODE into the process's config at import; the runtime it spawns reads the
    environment. Switched on in between (what importing cluster/sim/sim.py did to the whole test session),
    the new GCS wanted a token the driver never sent: "Failed to start GCS ... InvalidAuthToken". Importing
    the sim must leave the environment alone, and a local start after a late switch must work, with token
    auth on. A fresh HOME: no ~/.ray/auth_token of this machine's takes part."""
    token = tmp_path / "token"
    token.write_text("0123456789abcdef" * 4)
    code = (
        "import os, sys\n"
        "import ray\n"
        "sys.path.insert(0, 'cluster/sim')\n"
        "import sim\n"
        "assert 'RAY_AUTH_MODE' not in os.environ, 'importing the sim switched token auth on'\n"
        "os.environ['RAY_AUTH_MODE'] = 'token'\n"
        f"os.environ['RAY_AUTH_TOKEN_PATH'] = {str(token)!r}\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "from longctx_core.infra.runtime import ensure_ray\n"
        "ensure_ray(local=True, num_cpus=1, include_dashboard=False)\n"
        "assert get_authentication_mode() == AuthenticationMode.TOKEN\n"
        "print('TASK', ray.get(ray.remote(lambda: 41 + 1).remote()), flush=True)\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["HOME"] = str(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TASK 42" in out.stdout


def test_local_workers_run_at_the_drivers_niceness(ray_local, monkeypatch):
    """Ray starts workers at niceness 15 by default; a local runtime's start at 0 (so they do not yield the
    cores to every other process on the machine). LONGCTX_WORKER_NICENESS changes it; nonsense is refused."""
    from longctx_core.infra.runtime import worker_niceness

    @ray_local.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray_local.get(niceness.remote()) == 0
    monkeypatch.setenv("LONGCTX_WORKER_NICENESS", "10")
    assert worker_niceness() == 10
    for bad in ("high", "20", "-1"):
        monkeypatch.setenv("LONGCTX_WORKER_NICENESS", bad)
        with pytest.raises(ValueError, match="LONGCTX_WORKER_NICENESS"):
            worker_niceness()
