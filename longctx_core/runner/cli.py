"""What every `python -m ray_jobs.<stage>` shares: argument parsing, config loading, logging, exit codes.

    python -m ray_jobs.train --config ray_jobs/configs/demo_cpu.yaml train.max_steps=5

Exit status 0 on success; 2 with one line `longctx <stage>: error: <reason>` for a bad config or bad input
(before any Ray resource is requested); 1 for an unexpected failure (traceback, then the same one line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from longctx_core.config import ConfigError, load_config
from longctx_core.errors import LongctxError

logger = logging.getLogger(__name__)

# Quiet, offline-safe defaults for every stage; a user's environment wins.
_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",  # one tokenizer per Ray actor; its own thread pool would oversubscribe
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_DEDUP_LOGS": "1",
    # Ray Train's default 60 s for a worker group to start is too short for GPU nodes autoscaling from zero
    # and for a loaded 2-core laptop.
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
}


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def parse_args(stage: str, argv: Sequence[str] | None = None) -> tuple[str | None, list[str]]:
    parser = argparse.ArgumentParser(
        prog=f"python -m ray_jobs.{stage}",
        description=f"longctx {stage} stage. Overrides are dotted keys: train.max_steps=5 data.num_samples=16",
    )
    parser.add_argument("--config", help="YAML preset (ray_jobs/configs/*.yaml); unset = all defaults")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides applied on top of the YAML")
    ns = parser.parse_args(argv)
    return ns.config, list(ns.overrides)


def fail(stage: str, reason: str, code: int) -> None:
    print(f"longctx {stage}: error: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def run_stage(name: str, argv: Sequence[str] | None = None) -> object:
    """The stage runner behind every `python -m ray_jobs.<name>`: parse and validate the config against the
    stage's schema, run the stage's checks, and only then start or join Ray (`ensure_ray`, the one place a
    stage process initialises Ray) and run the stage (`longctx_core.runner.stages`); a local runtime started here is
    shut down at the end with all its processes (`shutdown_ray`), a joined cluster or a runtime already
    running in this process is left as it was. Exits 2 with one line on a bad config or input, 1 on anything
    unexpected."""
    from longctx_core.infra.runtime import ensure_ray, shutdown_ray
    from longctx_core.runner.stages import get

    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    stage = get(name)
    config_path, overrides = parse_args(name, argv)
    try:
        cfg = load_config(config_path, overrides, schema=stage.config_class())
    except ConfigError as exc:
        fail(name, f"invalid config: {exc}", 2)
    setup_logging(cfg.run.log_level)
    ray_mode = None
    try:
        checked = stage.function("check")(cfg)  # no Ray yet: a bad input costs seconds and no resources
        # inside `ray job submit` this joins the cluster; locally a loopback-only runtime
        ray_mode = ensure_ray()
        return stage.function("run")(cfg, checked)
    except (ConfigError, LongctxError) as exc:
        fail(name, str(exc), 2)
    except KeyboardInterrupt:
        fail(name, "interrupted", 130)
    except Exception as exc:  # unexpected: keep the traceback for the user, end with the one-line reason
        traceback.print_exc()
        fail(name, f"{type(exc).__name__}: {exc}".splitlines()[0], 1)
    finally:
        if ray_mode == "local":  # the runtime started here ends here, every process of it (runtime.py)
            shutdown_ray()
    return None


def entrypoint(name: str):
    """A `ray_jobs/<name>.py` module's two functions: `run(cfg)` (the stage on the Ray this process is
    connected to; returns its summary) and `main(argv)` (the command line: `run_stage`).

        run, main = entrypoint("train")
    """
    from longctx_core.runner.stages import call

    def run(cfg) -> dict:
        return call(name, cfg)

    def main(argv: Sequence[str] | None = None) -> object:
        return run_stage(name, argv)

    run.__name__, main.__name__ = f"run_{name}", f"main_{name}"
    return run, main
