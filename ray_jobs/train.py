"""Fine-tune the RoPE-extended model with (Q)LoRA on Ray Train + DeepSpeed, on the synthesized samples.

    python -m ray_jobs.train --config ray_jobs/configs/demo_cpu.yaml train.max_steps=5
    ray job submit --working-dir . -- python -m ray_jobs.train --config <preset.yaml>

Reads <run>/data/train/*.parquet (or train.data_path); writes <run>/train/: metrics.jsonl, adapter/ (a PEFT
folder), and the resumable checkpoints under ray/ (train.storage_path). A resubmitted run continues from
its last checkpoint; run.force=true starts over.
The stage itself is `longctx_core.train.driver`; `longctx_core.runner.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.runner.cli import entrypoint

run, main = entrypoint("train")

if __name__ == "__main__":
    main()
