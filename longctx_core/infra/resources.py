"""Size Ray resource requests from what the cluster has, never a hard-coded 1 CPU each.

On a 2-CPU laptop, two trainer workers or two Ray Data actors at the default 1 CPU each leave nothing for
the read/write tasks that feed them, and the job hangs forever (measured with Ray 2.60 on 2 CPUs: at 0.5 CPU
each, both run). So every actor pool and trainer asks for a share of the cluster's CPUs, capped at `cap` per
actor.
"""

from __future__ import annotations

import math


def cpus_per_actor(n_actors: int, share: float = 0.5, cap: float = 1.0, total: float | None = None) -> float:
    """CPUs for each of `n_actors` so that together they take at most `share` of the cluster's CPUs.

    `total` defaults to `ray.cluster_resources()["CPU"]` (Ray must be initialised). Rounded down to 0.01,
    at least 0.01, at most `cap`. A cluster with no CPUs yet (an autoscaling cluster whose CPU workers
    start from zero, with a `CPU: 0` head) gets `cap` each, so the autoscaler adds nodes for the real demand.
    """
    if n_actors < 1:
        raise ValueError("n_actors must be >= 1")
    if total is None:
        import ray

        total = float(ray.cluster_resources().get("CPU", 0.0))
    if total <= 0:
        return cap
    per = math.floor(total * share / n_actors * 100) / 100
    return max(0.01, min(cap, per))
