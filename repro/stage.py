"""The repro stage (`python -m ray_jobs.repro`, `make repro`), registered as the `repro` entry point of
`longctx.stages` (pyproject.toml). Importing it loads nothing of the reproduction itself."""

from longctx_core.runner.stages import Stage

STAGE = Stage("repro", "repro.run:check", "repro.run:run", schema="repro.config:ReproConfig")
