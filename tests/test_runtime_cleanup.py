"""Nothing of a stage's local Ray runtime outlives the stage (`longctx_core.infra.runtime.shutdown_ray`).

Each run here gets its own Ray temp folder (RAY_TMPDIR, short: Ray's socket paths live below it), so its
processes are told apart from every other Ray runtime on the machine (other tests, other checkouts) by that
folder alone: a process belongs to the run when its command line names the folder (Ray's servers and agents)
or it holds a file in it open (every worker, whatever its title, and the children it starts, which inherit
its log files as stdout and stderr). Names such as `ray::IDLE` are never enough on their own.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
GRACE_S = 10.0  # what a process of the runtime may take to exit after the stage has


def _of_folder(folder: Path) -> dict[int, str]:
    """{pid: "name cmdline"} of the live processes that name `folder` or have a file under it open."""
    prefix, found = str(folder) + "/", {}
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            cmd = " ".join(proc.cmdline())
            if (
                prefix in cmd
                or str(folder) in cmd.split()
                or any(f.path.startswith(prefix) for f in proc.open_files())
            ):
                found[proc.pid] = f"{proc.name()} {cmd}"[:200]
        except psutil.Error:  # gone meanwhile, a zombie, or another user's
            continue
    return found


def _survivors(folder: Path, grace_s: float = GRACE_S) -> dict[int, str]:
    """The processes of `folder` still alive once `grace_s` has passed ({} as soon as there are none)."""
    end = time.monotonic() + grace_s
    while (left := _of_folder(folder)) and time.monotonic() < end:
        time.sleep(0.5)
    return left


def _end(pids) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue


@pytest.fixture
def ray_tmp():
    """A private, short Ray temp folder; whatever still runs from it at the end is killed."""
    folder = Path(tempfile.mkdtemp(prefix="lcx-rt-", dir="/tmp"))
    yield folder
    _end(_of_folder(folder))
    shutil.rmtree(folder, ignore_errors=True)


def _env(ray_tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster: the local path
    return env | {"RAY_TMPDIR": str(ray_tmp)}


@pytest.mark.timeout(300)
def test_shutdown_ends_a_process_that_left_the_runtimes_tree(ray_tmp):
    """A task starts a daemon (`setsid sleep 600 &` from a shell that exits at once): reparented to init and
    in a session of its own, so out of reach of the raylet, which ends each worker's process group and
    children, but holding the worker's log files. The runtime's shutdown must end it too, and nothing of the
    session may be left."""
    code = (
        "import subprocess, ray\n"
        "from longctx_core.infra.runtime import ensure_ray, shutdown_ray\n"
        "ensure_ray(local=True, num_cpus=1, include_dashboard=False)\n"
        "@ray.remote(num_cpus=0.5)\n"
        "def daemon():\n"
        # the daemon: in a session of its own (no process-group kill reaches it), its stdout and stderr the
        # worker's log file (the worker's stderr), not the pipe read here
        "    cmd = ['bash', '-c', 'setsid sleep 600 >&2 & echo $!']\n"
        "    return int(subprocess.run(cmd, stdout=subprocess.PIPE, text=True).stdout)\n"
        "print('DAEMON', ray.get(daemon.remote()), flush=True)\n"
        "print('ENDED', shutdown_ray(grace_s=2.0), flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(ray_tmp), capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(
        line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("DAEMON", "ENDED"))
    )
    daemon = int(lines["DAEMON"])
    assert daemon in ast.literal_eval(
        lines["ENDED"]
    )  # it outlived ray.shutdown() and its grace, and was ended
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE
    assert list((ray_tmp / "ray").glob("session_*/logs")), "no session was started under RAY_TMPDIR"
    assert _survivors(ray_tmp) == {}


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_stage_run_leaves_no_process_of_its_runtime(tmp_path, ray_tmp, tiny_model_dir):
    """`python -m ray_jobs.synthesize` on the tiny preset (its Ray Data actors, MapWorker(ComposeActor)):
    once it has exited, no process of the runtime it started survives the grace period."""
    cmd = [sys.executable, "-m", "ray_jobs.synthesize", "--config", "ray_jobs/configs/tiny_cpu.yaml"]
    cmd += ["data.num_samples=6", f"run.storage_path={tmp_path}", "run.name=reap"]
    out = subprocess.run(cmd, cwd=REPO, env=_env(ray_tmp), capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    sessions = list((ray_tmp / "ray").glob("session_2*"))
    assert len(sessions) == 1, sessions  # the stage's own runtime, in the private folder
    logs = [p.name for p in (sessions[0] / "logs").iterdir()]
    assert any(n.startswith("worker-") for n in logs), logs  # it ran workers (the synthesis actors)
    assert _survivors(ray_tmp) == {}
