"""Reproduce the method's finding at toy scale on CPU: toy base chat model (cached), RoPE YaRN x4, QLoRA on
paraphrase vs plain twin data, evaluation by gold position with bootstrap intervals.

    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml                    (make repro)
    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml repro.only_base=true   (make repro-base)

Writes <run>/report.md, repro.json, plots/ and one run folder per arm under <run>/arms/ (see `repro`).
The stage itself is `repro.run`; `longctx_core.runner.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.runner.cli import entrypoint

run, main = entrypoint("repro")

if __name__ == "__main__":
    main()
