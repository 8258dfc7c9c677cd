"""The synthesize stage (`python -m ray_jobs.synthesize`; `longctx_core.stages`): QA samples synthesized on
Ray Data, or chat/text sources and mixtures imported, into <run>/data/."""

from __future__ import annotations

import logging

from data_gen.import_pipeline import import_data, needs_import
from data_gen.pipeline import check_synthesis_inputs, synthesize
from longctx_core.runs import prepare_run_dir

logger = logging.getLogger(__name__)


def check(cfg) -> None:
    """Before Ray: the sources can be read (the config schema checked the rest)."""
    check_synthesis_inputs(cfg)


def run(cfg, checked=None) -> dict:
    """Prepare the run folder and write <run>/data/; returns the summary."""
    root = prepare_run_dir(cfg, "synthesize")
    # Chat/text sources and mixtures are imported (a QA main source is still synthesized first).
    summary = import_data(cfg, root) if needs_import(cfg) else synthesize(cfg, root)
    logger.info("synthesize done: %s", summary)
    return summary
