"""Synthesize multi-document QA samples on Ray Data (or import chat/text data) into the run folder.

    python -m ray_jobs.synthesize --config ray_jobs/configs/demo_cpu.yaml data.num_samples=16
    ray job submit --working-dir . -- python -m ray_jobs.synthesize --config <preset.yaml>

Writes <run>/data/: train/*.parquet, eval/*.parquet, stats.json, plots/*.png, quarantine/rows.jsonl.
The stage itself is `data_gen.stage`; `longctx_core.runner.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.runner.cli import entrypoint

run, main = entrypoint("synthesize")

if __name__ == "__main__":
    main()
