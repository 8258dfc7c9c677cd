"""Thin entrypoints, one per stage: `python -m ray_jobs.<stage> --config PATH [dotted.key=value ...]`.

Each module is `run, main = entrypoint("<stage>")` (`longctx_core.runner.cli`): `main()` is the command line
(`run_stage`), `run(cfg)` checks and runs the stage on the Ray this process is connected to and returns its
summary. The stages themselves live in the library and the layers above it; `longctx_core.runner.stages`
finds them.
"""
