"""Evaluate base vs fine-tuned: accuracy by gold position x length, passkey heatmap, perplexity by position,
and (opt-in) LongBench / Lost-in-the-Middle, written to <run>/eval/.

python -m ray_jobs.evaluate --config ray_jobs/configs/demo_cpu.yaml eval.qa.num_questions=4
ray job submit --working-dir . -- python -m ray_jobs.evaluate --config <preset.yaml>
The stage itself is `longctx_core.eval.runner`; `longctx_core.runner.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.runner.cli import entrypoint

run, main = entrypoint("evaluate")

if __name__ == "__main__":
    main()
