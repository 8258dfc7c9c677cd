"""Thin entrypoints, one per stage: `python -m ray_jobs.<stage> --config PATH [dotted.key=value ...]`.

Each stage module exposes `run(cfg) -> dict` (a summary; the pipeline calls it in-process) and `main()`.
"""
