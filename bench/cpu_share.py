"""Who used the cores during a timed span: a background sampler of every process's CPU seconds, grouped by
role (this driver, Ray workers, Ray's own system processes, everything else on the machine).

    with CpuSampler() as cpu:
        ...                      # the timed work
    cpu.cores(t_first, t_last)   # {"driver": 0.12, "ray workers": 1.71, "ray system": 0.06, "other": 0.02}

`cores` is CPU seconds used in [t_first, t_last] (time.time() stamps, between the nearest samples) divided by
the span: 1.0 means one core busy the whole time. A 2-core machine's composers can only reach 2x if the
other roles sum to ~0, so this says where a parallel speed-up goes besides the composers themselves.
"""

from __future__ import annotations

import bisect
import os
import threading
import time

ROLES = ("driver", "ray workers", "ray system", "other")
_RAY_SYSTEM = ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent")


def role_of(pid: int, name: str, cmdline: str, driver: int) -> str:
    """The role of one process: this driver, a Ray worker (its title starts with `ray::`, e.g.
    `ray::MapWorker(...)`, `ray::IDLE`), one of Ray's system processes (GCS, raylet, dashboard and its
    agents, titled `ray::DashboardAgent` too, log monitor), or other."""
    if pid == driver:
        return "driver"
    title = name if name.startswith("ray::") else cmdline
    if title.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):  # Ray's own, titled like workers
        return "ray system"
    if title.startswith("ray::"):
        return "ray workers"
    if "ray" in cmdline and any(k in name or k in cmdline for k in _RAY_SYSTEM):
        return "ray system"
    return "other"


class CpuSampler:
    """Samples CPU seconds (user + system) of every process every `interval` seconds in a daemon thread;
    `cores(t0, t1)` gives the cores each role used between two stamps, each process under the role of its
    last reading (a Ray worker's title is set after it starts). A process that ends inside the span is
    charged up to its last reading (at most `interval` short)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        import psutil

        me, snap = os.getpid(), {}
        for p in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            info = p.info
            if info.get("cpu_times") is None:  # gone, or not ours to read
                continue
            cmd = " ".join(info.get("cmdline") or [])
            role = role_of(info["pid"], info.get("name") or "", cmd, me)
            snap[info["pid"]] = (role, info["cpu_times"].user + info["cpu_times"].system)
        return snap

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._snapshot()))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._snapshot()))

    def cores(self, t0: float, t1: float) -> dict[str, float]:
        """Cores used by each role between the samples nearest to `t0` and `t1` (t1 > t0)."""
        used = dict.fromkeys(ROLES, 0.0)
        for (role, _), value in self.cores_by_process(t0, t1).items():
            used[role] += value
        return used

    def cores_by_process(self, t0: float, t1: float) -> dict[tuple[str, int], float]:
        """Cores used by each process, keyed (role, pid), between the samples nearest to `t0` and `t1`: from
        its reading at the first sample (0 if it started later) to its reading at the last sample in which it
        appears (a process that ended inside the span keeps what it used)."""
        stamps = [t for t, _ in self.samples]
        i = max(0, min(len(stamps) - 2, bisect.bisect_left(stamps, t0)))
        j = max(i + 1, min(len(stamps) - 1, bisect.bisect_left(stamps, t1)))
        if j >= len(stamps):
            raise ValueError("CpuSampler: fewer than two samples in the span")
        start, last = self.samples[i][1], {}
        for _, snap in self.samples[i + 1 : j + 1]:
            last.update(snap)
        span = stamps[j] - stamps[i]
        return {
            (role, pid): max(0.0, seconds - start.get(pid, (role, 0.0))[1]) / span
            for pid, (role, seconds) in last.items()
        }
