"""bench.cpu_share: roles of real processes, and the cores a busy child process is charged with."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu_share import ROLES, CpuSampler, role_of


def test_roles_of_ray_process_titles():
    me = os.getpid()
    assert role_of(me, "python", "python -m bench.bench_synthesis", me) == "driver"
    assert role_of(7, "ray::MapWorker(MapBatches(ComposeActor))", "ray::MapWorker", me) == "ray workers"
    assert role_of(7, "python3", "ray::IDLE", me) == "ray workers"
    gcs = "/x/site-packages/ray/core/src/ray/gcs/gcs_server --gcs_server_port=0"
    assert role_of(7, "gcs_server", gcs, me) == "ray system"
    raylet = "/x/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=127.0.0.1"
    assert role_of(7, "raylet", raylet, me) == "ray system"
    agent = "python -u /x/site-packages/ray/dashboard/agent.py --node-ip-address=127.0.0.1"
    assert role_of(7, "python", agent, me) == "ray system"
    assert role_of(7, "ray::DashboardAgent", "ray::DashboardAgent", me) == "ray system"
    assert role_of(7, "python", "python -m repro.base.train", me) == "other"


def test_a_busy_child_is_charged_about_one_core_and_the_roles_add_up():
    """A child spinning for ~1.5 s, ended before the span does, is charged most of one core of the span; the
    roles sum the processes and never exceed the machine."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    with CpuSampler(interval=0.1) as cpu:
        time.sleep(0.2)
        t0 = time.time()
        child = subprocess.Popen([sys.executable, "-c", spin])
        child.wait()
        t1 = time.time()
        time.sleep(0.3)
    assert child.returncode == 0
    by_process = cpu.cores_by_process(t0, t1)
    assert 0.5 < by_process[("other", child.pid)] <= 1.1, by_process[("other", child.pid)]
    used = cpu.cores(t0, t1)
    assert set(used) == set(ROLES)
    assert abs(sum(used.values()) - sum(by_process.values())) < 1e-9
    assert sum(used.values()) <= os.cpu_count() + 0.2, used
