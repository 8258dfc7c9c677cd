"""Submit a longctx stage to a Ray cluster with the real `ray job submit` CLI (what `make submit` runs).

    python cluster/local/submit.py pipeline ray_jobs/configs/demo_cpu.yaml [dotted.key=value ...]
        [--address http://127.0.0.1:8265] [--no-wait] [--submission-id ID] [--dry-run] [--cluster-yaml PATH]

Before anything reaches the cluster the config is loaded and validated here, so a bad key fails in one
line with exit status 2. Then it runs

    RAY_AUTH_MODE=token ray job submit --address URL --working-dir <repo> --runtime-env <env.yaml> \
        -- python -m ray_jobs.<stage> --config <config> [overrides]

where <env.yaml> is cluster/runtime_env.yaml plus, as env_vars, the secrets named in FORWARD_ENV that are
set in this shell (names are printed, values never; the file is private and deleted afterwards).
On a head at a loopback address (the laptop head from up.sh) a relative `run.storage_path` is made absolute,
because the job runs inside Ray's unpacked copy of the working dir and would otherwise write its run folder
there instead of into this checkout. With --cluster-yaml (the cluster's launcher YAML) the config is checked
against its node types first: a resource request no node type can hold, or a run folder off the shared
mounts of a multi-node cluster, fails in one line (exit 2) and nothing is submitted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO = Path(__file__).resolve().parents[2]
# Run as a script from any checkout: the project and headctl.py (beside this file) must import.
for _path in (REPO, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from headctl import read_state  # noqa: E402

from longctx_core.config import ConfigError, load_config  # noqa: E402
from longctx_core.runner.cli import fail  # noqa: E402
from longctx_core.runner.cluster_checks import ClusterSpec, check_cluster  # noqa: E402
from longctx_core.runner.stages import all_stages  # noqa: E402

logger = logging.getLogger("longctx.submit")

RUNTIME_ENV = REPO / "cluster" / "runtime_env.yaml"
# Forwarded only when set. HF_HUB_OFFLINE is deliberately absent: the offline demo sets it for itself,
# and a cloud job must still be able to download its checkpoint.
FORWARD_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


@dataclass
class Submission:
    """What `ray job submit` gets (job API address, entrypoint argv, runtime env) and what to tell the user."""

    address: str
    entrypoint: list[str]
    runtime_env: dict
    forwarded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def resolve_address(cli_address: str | None, environ: dict[str, str], temp_dir: Path | None) -> str:
    """The job API URL: --address, else RAY_API_SERVER_ADDRESS, else the up.sh head, else the default."""
    if cli_address:
        return cli_address
    if environ.get("RAY_API_SERVER_ADDRESS"):
        return environ["RAY_API_SERVER_ADDRESS"]
    url = read_state(temp_dir).get("DASHBOARD_URL") if temp_dir is not None else None
    return url or DEFAULT_ADDRESS


def is_loopback_url(address: str) -> bool:
    """True when the job API is on this machine (127.x, localhost, ::1)."""
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def build_runtime_env(environ: dict[str, str], base: Path = RUNTIME_ENV) -> tuple[dict, list[str]]:
    """The runtime env of cluster/runtime_env.yaml plus the FORWARD_ENV secrets set in `environ`;
    returns it and the names that were forwarded."""
    runtime_env = yaml.safe_load(base.read_text()) or {}
    env_vars = dict(runtime_env.get("env_vars") or {})
    forwarded = [name for name in FORWARD_ENV if environ.get(name)]
    env_vars.update({name: environ[name] for name in forwarded})
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env, forwarded


def _repo_relative(config: str) -> str:
    """`config` as a POSIX path relative to the working dir; ConfigError when it lies outside (the job
    only sees what the upload carries)."""
    path = Path(config).expanduser().resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        raise ConfigError(
            f"config {config} is outside the working dir {REPO}; copy it under ray_jobs/configs/ "
            "(the job only sees files uploaded with the working dir)"
        ) from None


def build_submission(
    stage: str,
    config: str,
    overrides: list[str],
    address: str,
    environ: dict[str, str],
    cluster: ClusterSpec | None = None,
) -> Submission:
    """Validate the stage and config locally (ConfigError on any problem) and assemble the submission.

    With `cluster` (the node types of a launcher YAML, or of make cluster-sim) the config is also checked
    against it: every resource request fits a node type, and on several nodes the run folder is on a
    shared mount (longctx_core/runner/cluster_checks.py)."""
    stages = all_stages()
    if stage not in stages:
        raise ConfigError(f"stage '{stage}' is not one of the built stages: {', '.join(stages)}")
    try:
        cfg = load_config(config, overrides, schema=stages[stage].config_class())
    except ConfigError as exc:
        raise ConfigError(f"invalid config: {exc}") from None
    overrides = list(overrides)
    notes = []
    storage = cfg.run.storage_path
    user_set = any(o.split("=", 1)[0].strip() == "run.storage_path" for o in overrides)
    # A loopback address with a cluster YAML is a tunnel to remote nodes: their disks are not this one.
    local_head = is_loopback_url(address) and cluster is None
    if local_head and "://" not in storage and not Path(storage).expanduser().is_absolute():
        if not user_set:
            absolute = (REPO / storage).expanduser().resolve()  # relative to the working dir, as in the job
            overrides.append(f"run.storage_path={absolute}")
            notes.append(f"run.storage_path '{storage}' -> {absolute} (the local head shares this disk)")
    if cluster is not None:
        check_cluster(cfg, cluster, stage)
    runtime_env, forwarded = build_runtime_env(environ)
    entrypoint = ["python", "-m", f"ray_jobs.{stage}", "--config", _repo_relative(config), *overrides]
    return Submission(address, entrypoint, runtime_env, forwarded, notes)


def submit(
    sub: Submission,
    ray_cli: str,
    submission_id: str | None,
    no_wait: bool,
    dry_run: bool = False,
    working_dir: str | None = None,
) -> int:
    """Run `ray job submit` for `sub` (token auth on) and return its exit status (0 for a dry run, which
    only prints the command). `working_dir` defaults to this checkout, uploaded with the job; make
    cluster-sim passes `local://<checkout>` (every simulated node already has it, see cluster/sim/sim.py)."""
    with tempfile.TemporaryDirectory(prefix="longctx-submit-") as tmp:
        env_file = Path(tmp) / "runtime_env.yaml"
        env_file.touch(mode=0o600)  # may hold forwarded secrets: private, and gone when this returns
        env_file.write_text(yaml.safe_dump(sub.runtime_env, sort_keys=False))
        argv = [ray_cli, "job", "submit", "--address", sub.address, "--working-dir", working_dir or str(REPO)]
        argv += ["--runtime-env", str(env_file)]
        argv += ["--submission-id", submission_id] if submission_id else []
        argv += ["--no-wait"] if no_wait else []
        argv += ["--", *sub.entrypoint]
        logger.info("dashboard: %s (Jobs view; the browser asks for `ray get-auth-token`)", sub.address)
        logger.info("+ RAY_AUTH_MODE=token %s", shlex.join(argv))
        if dry_run:
            return 0
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        return subprocess.run(argv, cwd=REPO, env=env, check=False).returncode


def _ray_cli() -> str:
    """The `ray` next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.is_file() else (shutil.which("ray") or "ray")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/local/submit.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help=f"one of {', '.join(all_stages())}")
    parser.add_argument(
        "config", help="YAML preset inside the working dir, e.g. ray_jobs/configs/demo_cpu.yaml"
    )
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    parser.add_argument("--address", help=f"job API URL (default: the up.sh head or {DEFAULT_ADDRESS})")
    parser.add_argument("--submission-id", help="name the job (default: Ray picks raysubmit_...)")
    parser.add_argument("--no-wait", action="store_true", help="return after submitting; do not stream logs")
    parser.add_argument("--temp-dir", type=Path, help="the up.sh head's temp dir (to find its address)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the command only")
    parser.add_argument(
        "--cluster-yaml",
        type=Path,
        help="the cluster's launcher YAML (cluster/aws.yaml, ...): check resource requests and shared storage "
        "against its node types before submitting",
    )
    ns = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    address = resolve_address(ns.address, dict(os.environ), ns.temp_dir)
    try:
        cluster = ClusterSpec.from_launcher_yaml(ns.cluster_yaml) if ns.cluster_yaml else None
        sub = build_submission(ns.stage, ns.config, ns.overrides, address, dict(os.environ), cluster)
    except ConfigError as exc:
        fail("submit", str(exc), 2)
    for note in sub.notes:
        logger.info("note: %s", note)
    if sub.forwarded:
        logger.info("forwarding from this shell as env_vars: %s", ", ".join(sub.forwarded))
    code = submit(sub, _ray_cli(), ns.submission_id, ns.no_wait, ns.dry_run)
    if code == 0 and ns.no_wait:
        logger.info("watch: RAY_AUTH_MODE=token ray job logs -f <submission-id> --address %s", address)
    return code


if __name__ == "__main__":
    sys.exit(main())
