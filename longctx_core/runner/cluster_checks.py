"""Check a config against the cluster it is submitted to, before anything reaches that cluster.

Two mistakes cost nothing to make and hours to notice on an autoscaling cluster:

- **A request no node type can satisfy.** An actor asking for `{CPU: 8, GPU: 1}` on a cluster whose GPU
  type offers `{CPU: 4, GPU: 1}` is never placed and the autoscaler never starts a node for it: the job waits
  forever. `check_resources` compares every request a stage makes (synthesis actors, training workers and
  their data actors, evaluation actors) with the node types, and counts the nodes a gang of them needs.
- **Run files on a node's own disk.** With several nodes, a stage writes its outputs on the node it runs on
  and the next stage, on another node, finds nothing. `check_storage` refuses a `run.storage_path` (and
  `train.storage_path`) that is relative or outside every shared mount.

The node types come from a Ray cluster-launcher YAML (`cluster/aws.yaml`, `cluster/gcp.yaml`, or the config
`make cluster-sim` generates for Ray's fake multi-node provider, which has the same shape):

    cluster = ClusterSpec.from_launcher_yaml("cluster/aws.yaml")
    check_cluster(cfg, cluster, stage="pipeline")      # ConfigError, one line, naming request and node types

Requests are taken at their largest: what a stage asks for when the autoscaling cluster has no worker node
yet (`longctx_core.infra.resources.cpus_per_actor` then returns its cap), which is exactly when it must fit.
"""

from __future__ import annotations

import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from longctx_core.config import Config, ConfigError

logger = logging.getLogger(__name__)

# What each stage's actors ask for at most: cpus_per_actor's caps (longctx_core/infra/resources.py) as the call
# sites use them (data_gen/synthesis/composing.py, data_gen/importing/, longctx_core/train/packing.py via train.driver.train, eval/generate.py).
ACTOR_CPU_CAP = 1.0
TRAIN_WORKER_CPU_CAP = 8.0
STAGES_RUN = {
    "pipeline": ("synthesize", "train", "evaluate"),
    "synthesize": ("synthesize",),
    "train": ("train",),
    "evaluate": ("evaluate",),
}


@dataclass(frozen=True)
class NodeType:
    """One node type of a cluster: its Ray resources and how many of it the autoscaler may run."""

    name: str
    resources: dict[str, float]
    max_workers: int
    head: bool = False

    def fits(self, request: dict[str, float]) -> int:
        """How many of `request` one node of this type holds at once (0: none)."""
        counts = []
        for key, amount in request.items():
            if amount <= 0:
                continue
            have = float(self.resources.get(key, 0.0))
            counts.append(math.floor(have / amount + 1e-9))
        return min(counts) if counts else 1_000_000

    def describe(self) -> str:
        res = ", ".join(f"{k}: {_num(v)}" for k, v in sorted(self.resources.items()))
        return f"{self.name} {{{res}}}" + (" (head)" if self.head else f" x{self.max_workers}")


@dataclass(frozen=True)
class ClusterSpec:
    """The node types of a cluster and the folders every node mounts at the same path."""

    node_types: list[NodeType]
    shared_mounts: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def multi_node(self) -> bool:
        """True when the autoscaler may run any worker node next to the head."""
        return any(not t.head and t.max_workers > 0 for t in self.node_types)

    @classmethod
    def from_launcher_yaml(cls, path: str | Path) -> ClusterSpec:
        """Read `available_node_types` (resources, max_workers; the head type marked) and the shared mounts:
        the container side of every `-v host:container` in `docker.run_options`, which is how the launcher
        YAMLs put the shared file system into each node's container. ConfigError when the file has no node
        types."""
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"--cluster-yaml {path}: cannot read it ({exc})") from None
        types = raw.get("available_node_types") or {}
        if not isinstance(types, dict) or not types:
            raise ConfigError(f"--cluster-yaml {path}: no available_node_types")
        head = raw.get("head_node_type")
        node_types = [
            NodeType(
                name=str(name),
                resources={str(k): float(v) for k, v in (spec.get("resources") or {}).items()},
                max_workers=int(spec.get("max_workers", raw.get("max_workers", 0)) or 0),
                head=name == head,
            )
            for name, spec in types.items()
        ]
        return cls(node_types, docker_volume_targets(raw), str(path))

    def describe(self) -> str:
        return "; ".join(t.describe() for t in self.node_types)


@dataclass(frozen=True)
class Request:
    """A gang of `count` identical resource requests made by one stage (all must be placed at once)."""

    what: str
    keys: str
    resources: dict[str, float]
    count: int


def docker_volume_targets(launcher: dict) -> list[str]:
    """Container paths of the `-v/--volume host:container[:opts]` bind mounts in `docker.run_options`."""
    options = (launcher.get("docker") or {}).get("run_options") or []
    tokens = [tok for opt in options for tok in shlex.split(str(opt))]
    specs = []
    for i, tok in enumerate(tokens):
        if tok in ("-v", "--volume") and i + 1 < len(tokens):
            specs.append(tokens[i + 1])
        elif tok.startswith("--volume="):
            specs.append(tok.split("=", 1)[1])
    return [
        spec.split(":")[1] for spec in specs if spec.count(":") >= 1 and spec.split(":")[1].startswith("/")
    ]


def resource_requests(cfg: Config, stage: str = "pipeline") -> list[Request]:
    """What the stages run by `stage` ask Ray for, at most (see the module docstring)."""
    stages = STAGES_RUN.get(stage, STAGES_RUN["pipeline"])
    t, out = cfg.train, []
    if "synthesize" in stages:
        out.append(
            Request("synthesis actor", "data.num_workers", {"CPU": ACTOR_CPU_CAP}, cfg.data.num_workers)
        )
    if "train" in stages:
        worker = {"CPU": t.cpus_per_worker or TRAIN_WORKER_CPU_CAP}
        keys = "train.num_workers, train.cpus_per_worker"
        if t.use_gpu:
            worker["GPU"] = 1.0
            keys += ", train.use_gpu"
        if t.accelerator_resource != "GPU":
            worker[t.accelerator_resource] = 1.0
            keys += ", train.accelerator_resource"
        out.append(Request("training worker", keys, worker, t.num_workers))
        out.append(
            Request("training data actor", "train.data_workers", {"CPU": ACTOR_CPU_CAP}, t.data_workers)
        )
    if "evaluate" in stages:
        ev = {"CPU": ACTOR_CPU_CAP, **({"GPU": 1.0} if cfg.eval.use_gpu else {})}
        out.append(Request("evaluation actor", "eval.num_workers, eval.use_gpu", ev, cfg.eval.num_workers))
    return out


def check_resources(cfg: Config, cluster: ClusterSpec, stage: str = "pipeline") -> None:
    """ConfigError (one line) for the first request that no node type can hold, or whose gang needs more
    nodes than the node types' `max_workers` allow."""
    for req in resource_requests(cfg, stage):
        fitting = [(t, t.fits(req.resources)) for t in cluster.node_types]
        fitting = [(t, n) for t, n in fitting if n > 0 and (t.head or t.max_workers > 0)]
        asked = "{" + ", ".join(f"{k}: {_num(v)}" for k, v in sorted(req.resources.items())) + "}"
        if not fitting:
            raise ConfigError(
                f"{req.keys}: each {req.what} asks for {asked}, which no node type of {cluster.source or 'the cluster'} "
                f"offers ({cluster.describe()}); it would wait forever"
            )
        capacity = sum(n * (1 if t.head else t.max_workers) for t, n in fitting)
        if capacity < req.count:
            raise ConfigError(
                f"{req.keys}: {req.count} {req.what}s of {asked} need more than the cluster can hold "
                f"({capacity} at most on {cluster.describe()}); they would wait forever"
            )


def _under(path: PurePosixPath, mounts: list[str]) -> bool:
    return any(path == PurePosixPath(m) or PurePosixPath(m) in path.parents for m in mounts)


def check_storage(cfg: Config, cluster: ClusterSpec) -> None:
    """On a multi-node cluster, ConfigError (one line) when `run.storage_path` or `train.storage_path` is
    not readable by every node: relative (each node resolves it in its own working dir) or an absolute path
    outside every shared mount (`run.shared_storage` plus the cluster's declared mounts). URIs (s3://,
    gs://, ...) pass: every node reaches them. A single-node cluster accepts any path."""
    if not cluster.multi_node:
        return
    mounts = [*cfg.run.shared_storage, *cluster.shared_mounts]
    shown = ", ".join(mounts) if mounts else "none declared"
    for key, value in (
        ("run.storage_path", cfg.run.storage_path),
        ("train.storage_path", cfg.train.storage_path),
    ):
        if not value or "://" in value:
            continue
        path = PurePosixPath(value)
        if not path.is_absolute():
            raise ConfigError(
                f"{key}: '{value}' is relative, so each of the cluster's nodes would write its own copy; use a "
                f"path on a shared mount ({shown}) or s3://..."
            )
        if not _under(path, mounts):
            raise ConfigError(
                f"{key}: {value} is on a node's own disk, not on a shared mount of this multi-node cluster "
                f"({shown}); put it under one, declare yours with run.shared_storage=[...], or use s3://..."
            )


def check_cluster(cfg: Config, cluster: ClusterSpec, stage: str = "pipeline") -> None:
    """Both checks, storage first (it needs no node type to be right)."""
    check_storage(cfg, cluster)
    check_resources(cfg, cluster, stage)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
