"""Synthesize long multi-document QA samples ("paraphrase the original text") on Ray Data.

    python -m ray_jobs.synthesize --config ray_jobs/configs/demo_cpu.yaml data.num_samples=16
    ray job submit --working-dir . -- python -m ray_jobs.synthesize --config <preset.yaml>

Writes <run>/data/: train/*.parquet, eval/*.parquet, stats.json, plots/*.png, quarantine/rows.jsonl.
"""

from __future__ import annotations

import logging

from data_gen.import_pipeline import import_data, needs_import
from data_gen.pipeline import check_synthesis_inputs, synthesize
from longctx_core.cli import run_stage
from longctx_core.runs import prepare_run_dir

logger = logging.getLogger(__name__)


def run(cfg) -> dict:
    """Check inputs (no Ray yet), prepare the run folder, synthesize; returns the summary."""
    check_synthesis_inputs(cfg)
    root = prepare_run_dir(cfg, "synthesize")
    # Chat/text sources and mixtures are imported (a QA main source is still synthesized first).
    summary = import_data(cfg, root) if needs_import(cfg) else synthesize(cfg, root)
    logger.info("synthesize done: %s", summary)
    return summary


def main(argv=None):
    return run_stage("synthesize", run, argv)


if __name__ == "__main__":
    main()
