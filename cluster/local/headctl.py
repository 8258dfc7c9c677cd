"""Find, check and stop ONE local Ray head (the one `cluster/local/up.sh` started), never anyone else's.

    python cluster/local/headctl.py stop --temp-dir .cache/ray        # what `make cluster-down` runs
    python cluster/local/headctl.py check-bind --temp-dir .cache/ray  # exit 1 if anything listens off loopback
    python cluster/local/headctl.py status --temp-dir .cache/ray

Why not `ray stop`: it kills every raylet/gcs_server/dashboard of the user on the machine (it matches
process names), so it also kills a test's or a colleague's `ray.init(address="local")`. up.sh starts the head
with the environment variable LONGCTX_RAY_HEAD=<its temp dir>; every Ray process of that head inherits it
(or descends from one that does: Ray renames some processes with setproctitle, which overwrites their
/proc environ), so the head is found exactly, stopped in Ray's own order (raylet, then the rest, then the
GCS), and its `ray_current_cluster` file is removed (`ray stop` only removes the one under /tmp/ray).

Stdlib + psutil (a Ray dependency) only: it must run before/without the project being importable.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

MARKER_ENV = "LONGCTX_RAY_HEAD"
STATE_FILE = "longctx-head.env"
ADDRESS_FILE = "ray_current_cluster"


def _environ(proc: psutil.Process) -> dict[str, str]:
    """The process's environment, or {} when it is gone, a zombie or not ours to read."""
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def head_processes(marker: str) -> list[psutil.Process]:
    """Live processes of the head tagged `marker` (its absolute temp dir) and all their descendants,
    sorted by pid; never this process or its ancestors (a job that stops its own head must survive the scan)."""
    roots = [p for p in psutil.process_iter() if _environ(p).get(MARKER_ENV) == marker]
    found: dict[int, psutil.Process] = {p.pid: p for p in roots}
    for root in roots:
        try:
            found.update({c.pid: c for c in root.children(recursive=True)})
        except psutil.Error:
            continue
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    return sorted((p for pid, p in found.items() if pid not in spared and _alive(p)), key=lambda p: p.pid)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def _terminate(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM `procs`, wait up to `grace_s`, SIGKILL what is left (zombies count as gone)."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    alive = [p for p in alive if _alive(p)]
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2.0)


def stop_head(temp_dir: str | Path, grace_s: float = 8.0) -> int:
    """Stop the head whose temp dir is `temp_dir`; return how many processes it had (0: none running).

    Order as in `ray stop`: raylet first (its agents fate-share with it), the GCS last. Removes the head's
    `ray_current_cluster` and the state file written by up.sh, so a later start or `ray.init` finds nothing
    stale.
    """
    temp = Path(temp_dir).resolve()
    procs = head_processes(str(temp))
    raylets = [p for p in procs if _name(p) == "raylet"]
    gcs = [p for p in procs if _name(p) == "gcs_server"]
    rest = [p for p in procs if p not in raylets and p not in gcs]
    for group in (raylets, rest, gcs):
        if group:
            _terminate(group, grace_s / 3)
    leftovers = head_processes(str(temp))
    if leftovers:  # children spawned while we were stopping (a worker the raylet was starting)
        _terminate(leftovers, 2.0)
    for name in (ADDRESS_FILE, STATE_FILE):
        (temp / name).unlink(missing_ok=True)
    return len(procs)


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(ip, port, pid) of every TCP socket in LISTEN state owned by one of `pids` (asked process by process:
    a machine-wide scan needs root on macOS, one's own processes never do)."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            conns = (
                proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections()
            )
        except psutil.Error:  # exited meanwhile
            continue
        out += [(c.laddr.ip, c.laddr.port, pid) for c in conns if c.status == psutil.CONN_LISTEN and c.laddr]
    return sorted(out)


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.0.0.1); False for wildcards."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def exposed_sockets(temp_dir: str | Path) -> list[tuple[str, int, int]]:
    """Listening sockets of the head at `temp_dir` that are reachable from outside this machine."""
    pids = {p.pid for p in head_processes(str(Path(temp_dir).resolve()))}
    return [s for s in listening_sockets(pids) if not is_loopback(s[0])]


# `ray start` flags whose defaults are fixed ports (or ports another head on this machine may hold).
_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)
# up.sh's own port knobs, and Ray's fixed metric ports of the autoscaler and the dashboard.
_PORT_ENV = (
    "LONGCTX_RAY_PORT",
    "LONGCTX_DASHBOARD_PORT",
    "LONGCTX_RAY_CLIENT_PORT",
    "AUTOSCALER_METRIC_PORT",
    "DASHBOARD_METRIC_PORT",
)


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago (all held at once while picking)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def side_by_side(temp_dir: str | Path, token_path: str | Path) -> tuple[dict[str, str], list[str]]:
    """Settings for a head that must coexist with others on this machine (tests, a second checkout): its own
    temp dir and token file, and free ports for every Ray server. Returns (environment for up.sh, down.sh and
    submit.sh; extra `up.sh` flags). The job API is http://127.0.0.1:<env LONGCTX_DASHBOARD_PORT>, Prometheus
    metrics are on the `--metrics-export-port` flag's port."""
    ports = free_ports(len(_PORT_ENV) + len(_PORT_FLAGS))
    env = {"LONGCTX_RAY_TEMP_DIR": str(Path(temp_dir).resolve()), "RAY_AUTH_TOKEN_PATH": str(token_path)}
    env |= {name: str(port) for name, port in zip(_PORT_ENV, ports, strict=False)}
    flags = [f"--{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports[len(_PORT_ENV) :], strict=True)]
    return env, flags


def read_state(temp_dir: str | Path) -> dict[str, str]:
    """KEY=VALUE pairs that up.sh wrote next to the head ({} when no head was started there)."""
    path = Path(temp_dir) / STATE_FILE
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="headctl.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("stop", "status", "check-bind"))
    parser.add_argument("--temp-dir", required=True, help="the head's --temp-dir (its identity)")
    parser.add_argument("--grace", type=float, default=8.0, help="seconds for a graceful stop")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    temp = Path(ns.temp_dir).resolve()
    if ns.command == "stop":
        n = stop_head(temp, ns.grace)
        if n:
            logger.info("stopped the Ray head at %s (%d processes)", temp, n)
        else:
            logger.info("no Ray head running at %s", temp)
        return 0
    procs = head_processes(str(temp))
    if ns.command == "status":
        url = read_state(temp).get("DASHBOARD_URL", "?")
        state = f"running, {len(procs)} processes, {url}" if procs else "down"
        logger.info("Ray head at %s: %s", temp, state)
        return 0 if procs else 3
    if not procs:
        logger.error("no Ray head running at %s", temp)
        return 1
    exposed = exposed_sockets(temp)
    for ip, port, pid in exposed:
        logger.error("listening beyond loopback: %s:%d (pid %d)", ip, port, pid)
    return 1 if exposed else 0


if __name__ == "__main__":
    sys.exit(main())
