"""Every stage by name: the one table behind `python -m ray_jobs.<stage>`, the pipeline, the repro and
`make submit`.

    call("train", cfg)                  # a stage on the Ray this process is connected to; returns its summary
    run_stage("train", argv)            # longctx_core.cli: config, checks, then ray.init once, then the stage

A stage is two functions: `check(cfg)` does everything that needs no Ray (read the config's inputs, the
model's config, the data's schema) and may return what it found; `run(cfg, checked)` does the work on Ray
and returns the stage's summary. The runner calls `check` before it starts or joins Ray, so a bad input
fails in seconds with one line and no cluster resource is requested; inside the pipeline each stage's
check runs when the stage before it has written its outputs. Functions are named as "module:function" and
imported on use: the synthesize stage never loads DeepSpeed, and importing this table costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    check: str  # "module:function", fn(cfg) -> checked (anything the run needs), no Ray
    run: str  # "module:function", fn(cfg, checked) -> summary dict, Ray up
    schema: str = "longctx_core.config:Config"  # the config class its --config is validated against

    def function(self, which: str) -> Callable:
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)

    def config_class(self) -> type:
        return self.function("schema")


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("synthesize", "data_gen.stage:check", "data_gen.stage:run"),
        Stage("train", "longctx_core.train.driver:check", "longctx_core.train.driver:run"),
        Stage("evaluate", "longctx_core.eval.runner:check", "longctx_core.eval.runner:run"),
        Stage("pipeline", "longctx_core.pipeline:check", "longctx_core.pipeline:run"),
        Stage("repro", "repro.run:check", "repro.run:run", schema="repro.config:ReproConfig"),
    )
}


def get(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"no stage '{name}' (stages: {', '.join(STAGES)})")
    return STAGES[name]


def call(name: str, cfg) -> dict:
    """Check and run stage `name` with `cfg` in this process, which is connected to Ray already (the stage
    runner, a test's Ray fixture, or the pipeline running its stages)."""
    stage = get(name)
    return stage.function("run")(cfg, stage.function("check")(cfg))
