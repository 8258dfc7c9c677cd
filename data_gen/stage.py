"""The synthesize stage (`python -m ray_jobs.synthesize`): QA samples synthesized on Ray Data, or chat/text
sources and mixtures imported, into <run>/data/."""

from __future__ import annotations

import logging

from longctx_core.runner.stages import Stage

logger = logging.getLogger(__name__)


def check(cfg) -> None:
    """Before Ray: the sources can be read (the config schema checked the rest)."""
    from data_gen.importing import check_import_inputs, needs_import
    from data_gen.synthesis import check_synthesis_inputs

    check_synthesis_inputs(cfg)
    if needs_import(cfg):
        check_import_inputs(cfg)


def run(cfg, checked=None) -> dict:
    """Prepare the run folder and write <run>/data/; returns the summary."""
    from data_gen.importing import import_data, needs_import
    from data_gen.synthesis import synthesize
    from longctx_core.infra.runs import prepare_run_dir

    root = prepare_run_dir(cfg, "synthesize")
    # Chat/text sources and mixtures are imported (a QA main source is still synthesized first).
    summary = import_data(cfg, root) if needs_import(cfg) else synthesize(cfg, root)
    logger.info("synthesize done: %s", summary)
    return summary


# Registered as the `synthesize` entry point of `longctx.stages` (pyproject.toml).
STAGE = Stage("synthesize", "data_gen.stage:check", "data_gen.stage:run")
