"""Reproduce the method's finding at toy scale on CPU: toy base chat model (cached), RoPE YaRN x4, QLoRA on
paraphrase vs plain twin data, evaluation by gold position with bootstrap intervals.

    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml                    (make repro)
    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml repro.only_base=true   (make repro-base)

Writes <run>/report.md, repro.json, plots/ and one run folder per arm under <run>/arms/ (see `repro`).
The stage itself is `repro.run`; `longctx_core.cli.run_stage` checks the config, then starts Ray.
"""

from longctx_core.cli import run_stage
from longctx_core.stages import call


def run(cfg) -> dict:
    return call("repro", cfg)


def main(argv=None):
    return run_stage("repro", argv)


if __name__ == "__main__":
    main()
