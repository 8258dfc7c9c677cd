"""Thin entrypoints, one per stage: `python -m ray_jobs.<stage> --config PATH [dotted.key=value ...]`.

Each module is `main()` = `longctx_core.cli.run_stage("<stage>")` and `run(cfg)` = `longctx_core.stages.call`
(check + run on the Ray this process is connected to; returns the stage's summary). The stages themselves
live in the library; `longctx_core/stages.py` says where.
"""
