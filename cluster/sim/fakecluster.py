"""A local autoscaling Ray cluster whose worker node types mirror a launcher YAML (cluster/aws.yaml).

Ray's fake multi-node provider (`ray/autoscaler/_private/fake_multi_node/`, what `ray.cluster_utils.
AutoscalingCluster` and Ray's own autoscaler tests use) makes every "node" a real raylet on this machine, with
its own resources; the real autoscaler (v1, as on a launcher cluster) starts them for pending demand and stops
them after `idle_timeout_minutes`. AutoscalingCluster itself is not used: its start() and shutdown() run
`ray stop --force`, which kills every Ray process of the user on the machine, and the provider's defaults file
(example.yaml) is not in the wheel. Instead:

    types = sim_node_types("cluster/aws.yaml")             # ray.worker.cpu / ray.worker.gpu, scaled down
    config = fake_cluster_config(types, gcs_address, idle_timeout_s=20)   # what start_head writes
    head = start_head("cluster/aws.yaml", temp_dir, 20, dict(os.environ))  # up.sh --autoscaling-config=...
    ...
    stop_head(head)                                         # headctl: exactly this head and its fake nodes

The head comes from `cluster/local/up.sh` (token auth on, every server on 127.0.0.1 through Ray's single-node
switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which the autoscaler process and so every fake node inherit) on
free ports (headctl.side_by_side) and its own temp dir. Each fake node's processes descend from the head's
autoscaler, so they carry up.sh's LONGCTX_RAY_HEAD tag: headctl's check-bind and stop cover them too.

Scaling down: each node offers 1 CPU (the requests are fractional shares; logical CPUs are a scheduling
budget, not threads), and the GPU type offers 1 unit of the custom resource SIM_ACCELERATOR instead of 8 GPUs
(no GPU here; training workers ask for it through `train.accelerator_resource`), so the demo's 2 training
workers need 2 nodes and its 2 synthesis actors (1 CPU each while no CPU node is up) 2 CPU nodes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO / "cluster" / "local") not in sys.path:
    sys.path.insert(0, str(REPO / "cluster" / "local"))

import headctl  # noqa: E402

logger = logging.getLogger(__name__)

SIM_ACCELERATOR = "longctx_sim_gpu"
FAKE_HEAD_TYPE = "ray.head.default"  # the fake provider tags its head with this type name
NODE_CPUS = 1
MAX_PER_TYPE = 2
OBJECT_STORE_BYTES = 150 * 1024 * 1024  # per node; tiny demo blocks, and /dev/shm is shared by all nodes


@dataclass
class SimHead:
    """A running simulated cluster: where its head is and how to reach it."""

    temp_dir: Path
    env: dict[str, str]  # up.sh/down.sh/submit environment (ports, token file, temp dir)
    dashboard: str
    gcs_address: str
    config_path: Path
    token_path: Path

    @property
    def token(self) -> str:
        return self.token_path.read_text().strip()


def sim_node_types(
    launcher_yaml: str | Path, node_cpus: int = NODE_CPUS, max_per_type: int = MAX_PER_TYPE
) -> dict:
    """The worker node types of `launcher_yaml`, scaled down for one machine: same names, min_workers and
    (capped) max_workers; `node_cpus` CPUs each; a type with GPUs offers 1 unit of SIM_ACCELERATOR instead.
    Returns {"head": {name, resources}, "workers": {name: fake-provider node type}}."""
    raw = yaml.safe_load(Path(launcher_yaml).read_text())
    head_name = raw["head_node_type"]
    workers = {}
    for name, spec in raw["available_node_types"].items():
        if name == head_name:
            continue
        res = spec.get("resources") or {}
        sim = {"CPU": node_cpus, "object_store_memory": OBJECT_STORE_BYTES}
        if res.get("GPU"):
            sim[SIM_ACCELERATOR] = 1
        workers[name] = {
            "resources": sim,
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": min(int(spec.get("max_workers", raw.get("max_workers", 1))), max_per_type),
        }
    head_res = dict(raw["available_node_types"][head_name].get("resources") or {})
    return {"head": {"name": head_name, "resources": head_res}, "workers": workers}


def fake_cluster_config(types: dict, gcs_address: str, idle_timeout_s: float) -> dict:
    """A complete autoscaling config for Ray's fake multi-node provider (the monitor reads it as is: no
    defaults are merged in). The head's CPUs are the launcher head's (0: it takes no tasks)."""
    workers = types["workers"]
    return {
        "cluster_name": "longctx-sim",
        "max_workers": sum(t["max_workers"] for t in workers.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60.0,
        "docker": {},
        "provider": {
            # Ray's fake multi-node provider, reporting a node whose raylet died as terminated (provider/longctx_sim_provider.py)
            "type": "external",
            "module": "longctx_sim_provider.SimNodeProvider",
            "gcs_address": gcs_address,  # the provider's default is <ip>:6379; this head is on a free port
            "use_node_id_as_ip": True,  # every fake node has the same IP
            "disable_node_updaters": True,  # nothing to ssh into: the provider starts raylets itself
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            FAKE_HEAD_TYPE: {
                "resources": {"CPU": int(types["head"]["resources"].get("CPU", 0))},
                "node_config": {},
                "max_workers": 0,
            },
            **workers,
        },
        "head_node_type": FAKE_HEAD_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_head(
    launcher_yaml: str | Path,
    temp_dir: Path,
    idle_timeout_s: float,
    environ: dict[str, str],
    attempts: int = 3,
) -> SimHead:
    """Start the simulated cluster's head with cluster/local/up.sh; returns it (RuntimeError with up.sh's
    output if it fails; a start-up timeout is retried up to `attempts` times). Worker nodes start later,
    when the autoscaler sees demand."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    token_path = temp_dir.parent / "token"
    side_env, flags = headctl.side_by_side(temp_dir, token_path)
    gcs_address = f"127.0.0.1:{side_env['LONGCTX_RAY_PORT']}"
    types = sim_node_types(launcher_yaml)
    config = fake_cluster_config(types, gcs_address, idle_timeout_s)
    config_path = temp_dir.parent / "autoscaling.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env |= side_env
    # RAY_FAKE_CLUSTER: the provider refuses to run without it; the 1 s loop: scale decisions every second;
    # the dashboard's 60 s start-up limit is too short on a loaded 2-core machine (measured: ray start failed).
    up_env = env | {
        "RAY_FAKE_CLUSTER": "1",
        # the monitor imports the provider module from there
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(HERE / "provider"), environ.get("PYTHONPATH", "")) if p
        ),
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_DASHBOARD_STARTUP_TIMEOUT_S": environ.get("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "600"),
    }
    head_cpus = config["available_node_types"][FAKE_HEAD_TYPE]["resources"]["CPU"]
    flags += [
        f"--autoscaling-config={config_path}",
        f"--num-cpus={head_cpus}",
        f"--object-store-memory={OBJECT_STORE_BYTES}",
    ]
    for attempt in range(1, attempts + 1):
        up = subprocess.run(
            ["bash", str(REPO / "cluster/local/up.sh"), *flags],
            env=up_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if up.returncode == 0:
            break
        headctl.stop_head(temp_dir)  # up.sh cleaned up already; this makes sure before a retry
        tail = (up.stdout + up.stderr)[-2000:]
        # `ray start` waits a fixed 30 s for its raylet to register: a heavily loaded machine misses it.
        if attempt == attempts or "timed out during startup" not in tail:
            raise RuntimeError(f"up.sh failed ({up.returncode}): {tail}")
        logger.warning("ray start timed out (attempt %d of %d, machine busy); retrying", attempt, attempts)
    dashboard = f"http://127.0.0.1:{env['LONGCTX_DASHBOARD_PORT']}"
    return SimHead(temp_dir.resolve(), env, dashboard, gcs_address, config_path, token_path)


def stop_head(head: SimHead) -> int:
    """Stop the head and every fake node (all carry its tag); returns how many processes were stopped."""
    return headctl.stop_head(head.temp_dir)


def ray_env(head: SimHead) -> dict[str, str]:
    """Environment for a client of this head: token auth on, the head's token file."""
    return {**os.environ, **head.env, "RAY_AUTH_MODE": "token"}
