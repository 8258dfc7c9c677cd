"""Every stage by name: the table behind `python -m ray_jobs.<stage>`, the pipeline, the repro and
`make submit`.

    call("train", cfg)          # a stage on the Ray this process is connected to; returns its summary
    run_stage("train", argv)    # runner.cli: config, checks, then ray.init once, then the stage

Stages defined above this library register as entry points (pyproject.toml):

    [project.entry-points."longctx.stages"]
    synthesize = "data_gen.stage:STAGE"

A stage is two functions: `check(cfg)` does everything that needs no Ray (read the config's inputs, the
model's config, the data's schema) and may return what it found; `run(cfg, checked)` does the work on Ray
and returns the stage's summary. The runner calls `check` before it starts or joins Ray, so a bad input
fails in seconds with one line and no cluster resource is requested; inside the pipeline each stage's
check runs when the stage before it has written its outputs. Functions are named as "module:function" and
imported on use: the synthesize stage never loads DeepSpeed, and importing this table costs nothing.
"""

from __future__ import annotations

import functools
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


# The library's own stages. Stages built on it (synthesis in `data_gen`, the reproduction in `repro`) are
# found through the `longctx.stages` entry points in pyproject.toml, so this layer never names them.
CORE_STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("train", "longctx_core.train.driver:check", "longctx_core.train.driver:run"),
        Stage("evaluate", "longctx_core.eval.runner:check", "longctx_core.eval.runner:run"),
        Stage("pipeline", "longctx_core.runner.chain:check", "longctx_core.runner.chain:run"),
    )
}
ENTRY_POINT_GROUP = "longctx.stages"


@functools.cache
def all_stages() -> dict[str, Stage]:
    """Every stage: the core ones, then each installed `longctx.stages` entry point (a `Stage`)."""
    from importlib.metadata import entry_points

    found = dict(CORE_STAGES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        stage = ep.load()
        if not isinstance(stage, Stage) or stage.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a Stage named {ep.name!r}")
        found.setdefault(ep.name, stage)
    return found


def get(name: str) -> Stage:
    stages = all_stages()
    if name not in stages:
        raise KeyError(f"no stage '{name}' (stages: {', '.join(stages)})")
    return stages[name]


def call(name: str, cfg) -> dict:
    """Check and run stage `name` with `cfg` in this process, which is connected to Ray already (the stage
    runner, a test's Ray fixture, or the pipeline running its stages)."""
    stage = get(name)
    return stage.function("run")(cfg, stage.function("check")(cfg))
