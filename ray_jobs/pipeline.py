"""synthesize → train → evaluate (base vs fine-tuned) in one run folder, resumable.

    python -m ray_jobs.pipeline --config ray_jobs/configs/demo_cpu.yaml          # = make demo
    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python -m ray_jobs.pipeline --config ray_jobs/configs/<preset>.yaml

Stages whose outputs exist (made with the same config) are skipped, so a resubmitted pipeline continues
where it stopped; `run.force=true` redoes them.
The stage itself is `longctx_core.runner.chain`; `longctx_core.runner.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.runner.cli import entrypoint

run, main = entrypoint("pipeline")

if __name__ == "__main__":
    main()
