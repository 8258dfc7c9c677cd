"""The one way every stage gets Ray: join the cluster it was given, else start a private loopback runtime.

    ensure_ray()                                  # stage code: RAY_ADDRESS / `ray job submit` -> that cluster
    ensure_ray(local=True, num_cpus=2, include_dashboard=False)   # tests: always a private local runtime
    shutdown_ray()                                # at the end: ray.shutdown(), then nothing of ours survives

Why not a plain `ray.init()`:
- Locally it starts a runtime whose GCS, raylet, dashboard agent, runtime-env agent and workers listen on
  all interfaces (only the dashboard stays on 127.0.0.1). Ray binds each server to loopback only when the
  node's IP is 127.0.0.1, and it swaps a loopback node IP for the LAN address unless its single-node switch,
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, is set (`ray._private.services.get_node_ip_address` /
  `resolve_ip_for_localhost`; the agents then bind 127.0.0.1 because `is_localhost(node_ip)`). Ray reads that
  switch once, into `ray._private.ray_constants.ENABLE_RAY_CLUSTER`, when `ray` is first imported, which is
  usually long before a stage starts Ray; so the local start sets both the environment variable (for every
  process the runtime spawns) and the constant (for this process) around `ray.init`, and puts both back after.
  `cluster/local/up.sh` does the same for `ray start` (`--node-ip-address=127.0.0.1` + the variable).
- With no address, `ray.init()` also follows `/tmp/ray/ray_current_cluster` to whatever `ray start` cluster
  ran last on the machine (another user's, a stale one, a `make cluster-up` head). A stage run without
  RAY_ADDRESS therefore always starts its own runtime (`address="local"`); to run on the local head, submit
  (`make submit`) or say so: `RAY_ADDRESS=127.0.0.1:6379 python -m ray_jobs.train ...`.
- The same swap hits a driver joining a loopback address (`RAY_ADDRESS=127.0.0.1:6379`): `ray.init` would
  dial the LAN address, where a loopback-only head does not listen, and wait for minutes; so joining a
  loopback address turns the switch on as well. (A job submitted to the `make cluster-up` head inherits the
  variable from the head, which up.sh starts with it.)
- Ray reads its token-auth settings (RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) into this process's
  config when `ray` is first imported, while the processes a runtime spawns read them from the environment
  at their start. A variable set in between (by a test, a tool, a library imported later) gives a GCS that
  wants a token and a driver that sends none: "Failed to start GCS ... InvalidAuthToken ... RAY_AUTH_MODE is
  currently 'disabled'" (measured). `sync_auth_config` re-reads them, and `ensure_ray` calls it first.
- Ray starts every worker process (actors and tasks) at niceness 15 (its `worker_niceness`; Ray chose it so
  a CPU spike in the workers cannot starve the GCS of a big cluster), below the driver and its own servers
  at 0. On a machine shared with anything else the workers then get the cores last: beside one busy
  single-thread program, the 2-actor synthesis bench got 0.91 of the 2 cores at 15 and 1.24 at 0 (steady
  speed-up over the loop 0.64x vs 0.93x, medians of 3 pairs; on an idle machine no difference). A local
  runtime starts its workers at 0 (`worker_niceness`; LONGCTX_WORKER_NICENESS changes it); a cluster keeps
  Ray's default, since its nodes run nothing else.
- `ray.shutdown()` stops the servers a local runtime started, and the raylet its workers, but a process
  that left the tree on its own (a worker orphaned by a raylet that was killed before it could end it, a
  worker's daemonised child, a dashboard helper) outlives it, reparented to init, holding its memory. Such
  a process still has the session folder on its command line or a log file of it open (a worker's stdout
  and stderr go to `<session>/logs/worker-*.out|err`, and its children inherit them). `shutdown_ray` ends a
  runtime `ensure_ray` started: `ray.shutdown()`, then every process of that session (found by its folder)
  still alive after a short grace period is terminated. Every stage run from the command line ends with it
  (`longctx_core.runner.cli.run_stage`); a cluster it joined is left alone.
Token authentication stays as Ray 2.60 sets it; nothing here turns it off.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Ray's single-node switch (ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR): "0" keeps a loopback
# node IP, so every server of the node binds to 127.0.0.1.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# The session folder of the local runtime ensure_ray started in this process (None: none, or joined a cluster).
_local_session: str | None = None


def _loopback(address: str) -> bool:
    """True for a `host:port` cluster address whose host is this machine's loopback (127.0.0.0/8, ::1,
    localhost); False for `auto`, `ray://...` and every other host."""
    if "://" in address or ":" not in address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: not ours to resolve here
        return False


@contextlib.contextmanager
def _single_node_switch():
    """Ray's single-node switch on for the block, put back after: the environment variable (inherited by
    every process Ray spawns meanwhile) and `ray_constants.ENABLE_RAY_CLUSTER` (read by this process's
    `ray.init`, which would otherwise replace 127.0.0.1 by the LAN address: the node IP of a new runtime, and
    the host of a loopback cluster address, whose GCS then cannot be reached)."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(SINGLE_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_NODE_ENV, None)
        else:
            os.environ[SINGLE_NODE_ENV] = saved_env


def worker_niceness() -> int:
    """The niceness of a local runtime's workers: LONGCTX_WORKER_NICENESS, else 0 (Ray's default is 15).
    At 15 every actor and task yields the cores to anything at 0 (this driver's own threads, Ray's servers,
    any other program), so on a shared laptop or a 2-core box the workers doing the work starve first (see
    the module note)."""
    raw = os.environ.get("LONGCTX_WORKER_NICENESS", "0").strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"LONGCTX_WORKER_NICENESS: expected an integer 0-19, got {raw!r}") from None
    if not 0 <= value <= 19:
        raise ValueError(f"LONGCTX_WORKER_NICENESS: expected an integer 0-19, got {value}")
    return value


def sync_auth_config() -> None:
    """Make this process's Ray use the token-auth settings of the environment as it is now (see the module
    note); the processes Ray starts from here on read the same. Ray's own tests reset it the same way
    (`ray._private.authentication_test_utils.reset_auth_token_state`)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ensure_ray(local: bool | None = None, **local_init_kwargs) -> str:
    """Make sure this process is connected to Ray; returns "existing", "cluster" or "local".

    - Already initialised: nothing is done ("existing").
    - `local` is None and RAY_ADDRESS is set (by the user, or by `ray job submit` for a job's driver):
      `ray.init()` joins that cluster with no resource arguments (passing any there is a ValueError)
      ("cluster"); a loopback address (a `make cluster-up` head: 127.0.0.1:6379) is kept as loopback.
      `local_init_kwargs` are not used then.
    - Otherwise (`local=True`, no RAY_ADDRESS, or RAY_ADDRESS=local): a new private runtime whose every
      server listens on 127.0.0.1 only, token auth on, workers at `worker_niceness()`, started with
      `ray.init(address="local", **local_init_kwargs)` ("local").
    """
    import ray

    if ray.is_initialized():
        return "existing"
    sync_auth_config()
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if local is None and address and address != "local":
        logger.info("joining the Ray cluster at RAY_ADDRESS=%s", address)
        with _single_node_switch() if _loopback(address) else contextlib.nullcontext():
            ray.init()
        return "cluster"
    # address="local": never RAY_ADDRESS nor ray_current_cluster (ray.init reads both for address=None).
    kwargs = {"dashboard_host": LOOPBACK, **local_init_kwargs}
    kwargs["_system_config"] = {"worker_niceness": worker_niceness(), **kwargs.get("_system_config", {})}
    with _single_node_switch():
        ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
    node = ray._private.worker.global_worker.node
    global _local_session
    _local_session = node.get_session_dir_path()
    logger.info(
        "started a local Ray runtime bound to %s (session %s)", node.node_ip_address, node.session_name
    )
    return "local"


def _names_folder(args: list[str], folder: str) -> bool:
    return any(a == folder or a.endswith(("=" + folder, " " + folder)) or folder + "/" in a for a in args)


def session_processes(session_dir: str) -> list:
    """The live processes (psutil) of the Ray session in `session_dir`, this process excluded: every one whose
    command line names the folder (Ray's servers and agents) or that holds a file in it open (workers log
    there, and their children inherit those descriptors). Processes that cannot be read are skipped."""
    import psutil

    prefix, found = session_dir.rstrip("/") + "/", []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if _names_folder(proc.cmdline(), prefix[:-1]) or any(
                f.path.startswith(prefix) for f in proc.open_files()
            ):
                found.append(proc)
        except psutil.Error:  # gone meanwhile, a zombie, or another user's
            continue
    return found


def _end(procs: list, grace_s: float) -> list[int]:
    """Wait up to `grace_s` for `procs` to exit, then SIGTERM the rest and SIGKILL what is left 3 s later;
    returns the pids that had to be signalled."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, stubborn = psutil.wait_procs(alive, timeout=3)
    for proc in stubborn:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(stubborn, timeout=3)
    return [p.pid for p in alive]


def shutdown_ray(grace_s: float = 5.0) -> list[int]:
    """Disconnect from Ray; when `ensure_ray` started the runtime here, also make sure none of its processes
    survives (see the module note): `ray.shutdown()`, then every process of its session still alive after
    `grace_s` is terminated (logged as a warning). Returns the pids that had to be ended."""
    import ray

    global _local_session
    session, _local_session = _local_session, None
    ray.shutdown()
    if session is None:
        return []
    ended = _end(session_processes(session), grace_s)
    ended += _end(session_processes(session), 0.0)  # orphans of the ones just ended
    if ended:
        logger.warning(
            "ended %d process(es) of the local Ray runtime that outlived its shutdown (session %s): pids %s",
            len(ended),
            session,
            ended,
        )
    return ended
