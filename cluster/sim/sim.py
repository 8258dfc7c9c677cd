"""`make cluster-sim`: the demo pipeline on a local autoscaling cluster of simulated nodes, and its timeline.

    python cluster/sim/sim.py [dotted.key=value ...] [--config PRESET] [--artifacts DIR] [--no-browser]
    make cluster-sim ARGS="train.max_steps=6"

0. Check the config against the node types of cluster/aws.yaml (the same checks as `submit.py
   --cluster-yaml`: a request no node type holds, a run folder off the shared storage) and ask the pipeline's
   own `stage_is_done` what the job would run. A run folder already complete for this config runs nothing:
   the sim says so and starts no cluster (`run.force=true` redoes every stage, as for any pipeline run).
1. Start a head (cluster/local/up.sh: token auth, 127.0.0.1 only, CPU 0 like the launcher head) with Ray's
   fake multi-node autoscaler and worker node types read from cluster/aws.yaml (fakecluster.py): the CPU
   pool for synthesis and the "GPU" pool for training, both from zero, released after --idle-timeout-s.
2. Submit the pipeline with `ray job submit` (cluster/local/submit.py's building blocks). The training
   workers ask for the GPU pool's custom resource (train.accelerator_resource), the run folder is declared
   shared (run.shared_storage: every simulated node shares this disk).
3. While it runs, every couple of seconds: nodes per type (State API), the cluster's listening sockets, and
   the project's gauges from every node's Prometheus endpoint; a dashboard screenshot of the nodes while
   training has the cluster scaled up, and one of the Jobs page once the job SUCCEEDED (headless Chromium).
4. Wait for the autoscaler to bring the workers back to zero, print the timeline, write it with the
   screenshots to <run folder>/cluster_sim/, and stop the cluster (only its own processes; never `ray stop`).

Exit status 0 when the job SUCCEEDED, the workers returned to zero and nothing listened beyond loopback,
and 0 when nothing had to run (said in one line; no timeline is written); 2 with one line for a config the
cluster cannot run (nothing is started); 1 otherwise. The sim's temp folder (head, token, Ray's sockets) is
created under LONGCTX_SIM_TMPDIR, else /tmp.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (REPO, REPO / "cluster" / "local", HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import browser  # noqa: E402
import fakecluster  # noqa: E402
import watch  # noqa: E402
from ray.util.state.exception import RayStateApiException  # noqa: E402
from submit import _ray_cli, build_submission, submit  # noqa: E402

from longctx_core.config import Config, ConfigError, load_config, run_dir  # noqa: E402
from longctx_core.errors import LongctxError  # noqa: E402
from longctx_core.infra.layout import RunLayout  # noqa: E402
from longctx_core.infra.runtime import sync_auth_config  # noqa: E402
from longctx_core.runner.cli import fail  # noqa: E402
from longctx_core.runner.cluster_checks import ClusterSpec  # noqa: E402

logger = logging.getLogger("longctx.cluster_sim")

DEFAULT_CONFIG = "ray_jobs/configs/tiny_cpu.yaml"
LAUNCHER_YAML = REPO / "cluster" / "aws.yaml"
# The demo preset shrunk so the whole run, node start-ups included, takes minutes on 2 cores; ARGS override.
SMOKE = [
    "data.num_samples=32",  # enough work that both synthesis actors (one per CPU node) get some
    "data.target_tokens={min: 600, max: 1000}",
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.cpus_per_worker=0.5",  # a share of a 1-CPU simulated node (the default asks for up to 8)
    "eval.qa.num_questions=2",
    "eval.qa.positions=[0.0, 1.0]",
    "eval.length_factors=[1.0]",
    "eval.passkey.depths=[0.5]",
    "eval.perplexity.num_sequences=1",
    "eval.max_new_tokens=16",
]
RUN_FILES = (
    "config.yaml",
    "data/stats.json",
    "data/train",
    "train/metrics.jsonl",
    "train/adapter/adapter_config.json",
    "eval/metrics.json",
    "eval/report.md",
    "report.md",
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# The job's code, in place: every simulated node shares this disk, so the checkout is already "on every node"
# (Ray's local:// working dir). An uploaded package would be unpacked by each node's runtime-env agent into
# the one session dir all simulated nodes share, and Ray re-unpacks it in place (overwrite) on every node that
# joins: the directory the earlier nodes' workers run in vanishes under them (measured: the synthesis actors
# died with FileNotFoundError from os.getcwd()). A real cluster gives each node its own disk; the upload path
# itself is exercised by make submit (tests/cluster/test_cluster_pipeline_e2e.py).
WORKING_DIR = f"local://{REPO}"


def job_info(dashboard: str, token: str, job_id: str) -> dict:
    """The job API's record of `job_id` ({} while it is not known yet)."""
    req = urllib.request.Request(
        f"{dashboard}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def job_logs(dashboard: str, token: str, job_id: str) -> str:
    req = urllib.request.Request(
        f"{dashboard}/api/jobs/{job_id}/logs", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read()).get("logs", "")
    except (urllib.error.URLError, OSError, ValueError):
        return ""


def run_missing(run_dir: Path) -> list[str]:
    """The run-folder entries (`RunLayout`'s) that are absent."""
    missing = [rel for rel in RUN_FILES if not (run_dir / rel).exists()]
    if "data/train" not in missing and not list((run_dir / "data" / "train").glob("*.parquet")):
        missing.append("data/train/*.parquet")
    return missing


class Shooter:
    """Dashboard screenshots in a background thread, so the timeline keeps sampling meanwhile."""

    def __init__(self, head: fakecluster.SimHead, out_dir: Path, enabled: bool) -> None:
        self.head, self.out_dir, self.enabled = head, out_dir, enabled
        self.shots: list[dict] = []
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def take(self, pages: list[browser.Page]) -> None:
        if not self.enabled:
            return

        def work() -> None:
            try:
                self.shots += browser.shoot(self.head.dashboard, self.head.token, pages, self.out_dir)
            except (RuntimeError, OSError, TimeoutError) as exc:
                self.errors.append(f"{[p.name for p in pages]}: {exc}")
                logger.warning("dashboard screenshot failed: %s", exc)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait(self, timeout: float = 180.0) -> None:
        for thread in self.threads:
            thread.join(timeout)


@dataclass
class SimRun:
    """What one `make cluster-sim` runs: the run folder, the job's overrides and the simulated node types."""

    config: str
    overrides: list[str]
    run_dir: Path
    types: dict


@dataclass
class JobWatch:
    """How the job went, as the sampling loop saw it (times are time.time(); None: never happened)."""

    watcher: watch.Watcher
    t0: float
    status: str = "NOT SUBMITTED"
    done_at: float | None = None
    zero_at: float | None = None
    nodes_shot: bool = False


def plan_run(ns: argparse.Namespace) -> SimRun:
    """The run folder and the overrides of the job: the sim's own (shared storage, the simulated GPU pool's
    resource, the smoke sizes unless --full), then the user's."""
    given = dict(o.split("=", 1) for o in ns.overrides if "=" in o)
    storage = Path(given.get("run.storage_path", ns.storage)).resolve()
    run_name = given.get("run.name", ns.run_name)
    overrides = [
        f"run.name={run_name}",
        f"run.storage_path={storage}",
        f"run.shared_storage=[{storage}]",  # every simulated node shares this disk
        f"train.accelerator_resource={fakecluster.SIM_ACCELERATOR}",
        *(SMOKE if not ns.full else []),
        *ns.overrides,
    ]
    return SimRun(ns.config, overrides, storage / run_name, fakecluster.sim_node_types(LAUNCHER_YAML))


def pending_stages(cfg: Config) -> list[str]:
    """The pipeline stages the job would run in `cfg`'s run folder, by the pipeline's own `stage_is_done`
    (stage 1 of the two-stage recipe first): from the first stage not done on (a stage that runs makes the
    later ones run again), every one with run.force, [] when the folder is complete for this config.
    LongctxError when the folder holds outputs of another config (the job would refuse them too)."""
    from longctx_core.runner.markers import CHAIN, stage_is_done
    from longctx_core.runner.two_stage import PRETRAIN_STAGES, pretrain_config, sft_config

    stages = [f"pretrain {s}" for s in PRETRAIN_STAGES] * cfg.pretrain.enabled + list(CHAIN)
    if cfg.run.force:
        return stages
    done = []
    if cfg.pretrain.enabled:
        first = pretrain_config(cfg)
        done = [stage_is_done(first, run_dir(first), s) for s in PRETRAIN_STAGES]
        cfg = sft_config(cfg, RunLayout(run_dir(first)).train.adapter, redo=False)
    done += [stage_is_done(cfg, run_dir(cfg), s) for s in CHAIN]
    return stages[done.index(False) :] if False in done else []


def preflight(ns: argparse.Namespace, plan: SimRun) -> list[str]:
    """Everything checked before a cluster starts: the config against the simulated node types (known from the
    launcher YAML already) and what the job would run; returns `pending_stages`. ConfigError/LongctxError."""
    from longctx_core.runner.stages import get

    with tempfile.TemporaryDirectory(prefix="lcx-sim-check-") as tmp:
        spec_path = Path(tmp) / "node-types.yaml"
        spec = fakecluster.fake_cluster_config(plan.types, "127.0.0.1:0", ns.idle_timeout_s)
        spec_path.write_text(json.dumps(spec, indent=1))
        cluster = ClusterSpec.from_launcher_yaml(spec_path)
    build_submission(
        "pipeline", ns.config, plan.overrides, "http://127.0.0.1:8265", dict(os.environ), cluster
    )
    cfg = load_config(ns.config, plan.overrides, schema=get("pipeline").config_class())
    return pending_stages(cfg)


def nothing_ran(run_folder: Path) -> str:
    """What a run over a complete run folder says (no cluster started, no job submitted, no node scaled)."""
    return (
        f"longctx cluster-sim: nothing ran: {run_folder} is already complete for this config (every stage's "
        "outputs exist), so no cluster was started, no job submitted and no node scaled. To run it again: "
        'make cluster-sim ARGS="run.force=true" (redoes every stage in that folder), or another --run-name.'
    )


def start_sim_head(ns: argparse.Namespace, base: Path) -> fakecluster.SimHead:
    """Start the simulated cluster's head in `base` and make this process a token-auth client of it."""
    # This process is a State API client of the head, which wants its token (fakecluster.start_head). Set
    # here, not at import: importing this module (as the tests do) must not switch token auth on for the
    # importer, whose own local runtime would then refuse its driver.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(base / "token")
    sync_auth_config()
    logger.info("starting the simulated cluster (node types from %s) ...", LAUNCHER_YAML.relative_to(REPO))
    t_start = time.time()
    head = fakecluster.start_head(LAUNCHER_YAML, base / "ray", ns.idle_timeout_s, dict(os.environ))
    assert head.token_path == base / "token", head.token_path  # what this process's State API reads
    logger.info(
        "head up in %.0f s: %s (token auth on, 127.0.0.1 only)", time.time() - t_start, head.dashboard
    )
    return head


def submit_job(ns: argparse.Namespace, head: fakecluster.SimHead, plan: SimRun, job_id: str) -> None:
    """Submit the pipeline to the head without waiting (RuntimeError when `ray job submit` fails)."""
    cluster = ClusterSpec.from_launcher_yaml(head.config_path)
    sub = build_submission("pipeline", ns.config, plan.overrides, head.dashboard, dict(os.environ), cluster)
    # Ray Train's placement-group cleaner calls ray.init() with no address; with other Ray instances on
    # this machine it cannot tell which is its own (measured: "Found multiple active Ray instances").
    sub.runtime_env.setdefault("env_vars", {})["RAY_ADDRESS"] = head.gcs_address
    # Ray Data hands out work as soon as one pool actor is up. Each synthesis actor asks for a whole CPU
    # node here, so the second waits for the autoscaler, and on a fast run the first had finished all 32
    # samples before it came (seen once in CI: the second actor never placed). Waiting for the whole pool
    # is what shows the autoscaler serving a pool; on a real cluster the default (start at once) is kept.
    sub.runtime_env["env_vars"]["RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S"] = "600"
    code = submit(sub, _ray_cli(), job_id, no_wait=True, working_dir=WORKING_DIR)
    if code != 0:
        raise RuntimeError(f"ray job submit exited with {code}")


def sample_once(
    ns: argparse.Namespace, head: fakecluster.SimHead, job: JobWatch, job_id: str, gpu_type: str, shooter
) -> bool:
    """One sample of the cluster and the job (a screenshot when due); returns True when watching is over:
    the workers are back to zero after the job ended, or it is time to give up."""
    try:
        counts = job.watcher.poll()
    except (RayStateApiException, OSError) as exc:  # a busy dashboard: no sample this time
        logger.warning("sample skipped: %s", str(exc).splitlines()[0] if str(exc) else exc)
        counts = None
    workers = None if counts is None else sum(v for k, v in counts.items() if k != "head")
    if counts and not job.nodes_shot and counts.get(gpu_type, 0) >= 2:
        job.nodes_shot = True  # training has the GPU pool scaled up: photograph the nodes now
        shooter.take([browser.Page("cluster_nodes", "#/cluster", ["ALIVE"])])
    now = time.time()
    if job.done_at is None:
        job.status = job_info(head.dashboard, head.token, job_id).get("status", job.status)
        if job.status in TERMINAL:
            job.done_at = now
            logger.info("job %s after %.0f s; waiting for scale-down", job.status, now - job.t0)
            job.watcher.scrape()
            shooter.take([browser.Page("jobs", "#/jobs", [job_id, job.status])])
        elif now - job.t0 > ns.timeout_s:
            logger.error(
                "job still %s after %.0f s; giving up (it stops with the cluster)", job.status, ns.timeout_s
            )
            return True
        return False
    if workers == 0:
        job.zero_at = now
        return True
    if now - job.done_at > ns.idle_timeout_s + ns.scale_down_grace_s:
        logger.error("workers still up %.0f s after the job ended: %s", now - job.done_at, counts)
        return True
    return False


def watch_job(
    ns: argparse.Namespace, head: fakecluster.SimHead, plan: SimRun, job_id: str, shooter: Shooter
) -> JobWatch:
    """Submit the job, then sample every --every-s until the workers are back to zero (or giving up)."""
    w = watch.Watcher(head.temp_dir, head.dashboard, plan.types["workers"])
    w.poll()
    job = JobWatch(w, time.time())
    w.t0 = job.t0
    submit_job(ns, head, plan, job_id)
    logger.info("submitted %s; sampling the cluster every %.0f s", job_id, ns.every_s)
    gpu_type = next(
        n for n, t in plan.types["workers"].items() if fakecluster.SIM_ACCELERATOR in t["resources"]
    )
    while not sample_once(ns, head, job, job_id, gpu_type, shooter):
        time.sleep(ns.every_s)
    shooter.wait()
    w.finish()
    return job


def summarize(job: JobWatch, job_id: str, plan: SimRun, head: fakecluster.SimHead, shooter: Shooter) -> dict:
    """The timeline.json record of a watched job."""
    w, t0 = job.watcher, job.t0
    return {
        "job": {
            "id": job_id,
            "status": job.status,
            "seconds": round(job.done_at - t0, 1) if job.done_at else None,
        },
        "types": list(plan.types["workers"]),
        "node_types": plan.types,
        "samples": w.samples,
        "max_alive": w.max_alive(),
        "nodes": w.node_records(),
        "placement": w.placement(),
        "actors": w.actors,
        "gauges": w.gauges,
        "sockets_seen": len(w.sockets),
        "exposed_sockets": sorted(w.exposed),
        "rendezvous_sockets": sorted(w.rendezvous),
        "scaled_to_zero": job.zero_at is not None,
        "zero_at_s": round(job.zero_at - t0, 1) if job.zero_at else None,
        "screenshots": shooter.shots,
        "screenshot_errors": shooter.errors,
        "run_dir": str(plan.run_dir),
        "run_missing": run_missing(plan.run_dir),
        "dashboard": head.dashboard,
    }


def sim_temp_root() -> str:
    """Where the sim's temp folder goes: LONGCTX_SIM_TMPDIR, else /tmp (short: Ray's socket paths live below
    it, and a Unix socket path has at most 107 bytes)."""
    return os.environ.get("LONGCTX_SIM_TMPDIR") or "/tmp"


def run_sim(ns: argparse.Namespace) -> int:
    """Everything after argument parsing; returns the exit status."""
    plan = plan_run(ns)
    try:
        pending = preflight(ns, plan)
    except (ConfigError, LongctxError) as exc:
        fail("cluster-sim", str(exc), 2)
    if not pending:
        print(nothing_ran(plan.run_dir), flush=True)
        return 0
    logger.info("stages to run in %s: %s", plan.run_dir, ", ".join(pending))
    art = Path(ns.artifacts).resolve() if ns.artifacts else plan.run_dir / "cluster_sim"
    art.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="lcx-sim-", dir=sim_temp_root()))
    head = start_sim_head(ns, base)
    shooter, job_id = Shooter(head, art, ns.browser), f"lcx-sim-{uuid.uuid4().hex[:8]}"
    summary, status = {}, "NOT SUBMITTED"
    try:
        job = watch_job(ns, head, plan, job_id, shooter)
        (art / "job.log").write_text(job_logs(head.dashboard, head.token, job_id))
        summary, status = summarize(job, job_id, plan, head, shooter), job.status
    finally:
        stopped = fakecluster.stop_head(head)
        logger.info("stopped the simulated cluster (%d processes)", stopped)
    (art / "timeline.json").write_text(json.dumps(summary, indent=1, default=str))
    print(watch.render(summary), flush=True)
    print(f"\ntimeline and screenshots: {art}", flush=True)
    ok = status == "SUCCEEDED" and summary["scaled_to_zero"] and not summary["exposed_sockets"]
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make cluster-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides (after the sim's own)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"preset (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--storage", default=str(REPO / "runs"), help="run.storage_path (default <repo>/runs)"
    )
    parser.add_argument("--run-name", default="cluster-sim", help="run.name (default cluster-sim)")
    parser.add_argument(
        "--artifacts", help="timeline + screenshots folder (default <run folder>/cluster_sim)"
    )
    parser.add_argument("--idle-timeout-s", type=float, default=20.0, help="autoscaler idle timeout")
    parser.add_argument("--scale-down-grace-s", type=float, default=120.0, help="extra wait for zero workers")
    parser.add_argument("--timeout-s", type=float, default=1200.0, help="give up on the job after this")
    parser.add_argument("--every-s", type=float, default=2.0, help="sampling interval")
    parser.add_argument("--no-browser", dest="browser", action="store_false", help="skip the screenshots")
    parser.add_argument("--full", action="store_true", help="the preset as is, without the smoke sizes")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if ns.browser and not browser.find_chromium():
        logger.warning("no chromium on PATH: no dashboard screenshots (make setup-browser installs it)")
        ns.browser = False
    return run_sim(ns)


if __name__ == "__main__":
    sys.exit(main())
