"""Evaluate base vs fine-tuned: accuracy by gold position x length, passkey heatmap, perplexity by position,
and (opt-in) LongBench / Lost-in-the-Middle, written to <run>/eval/.

python -m ray_jobs.evaluate --config ray_jobs/configs/demo_cpu.yaml eval.qa.num_questions=4
ray job submit --working-dir . -- python -m ray_jobs.evaluate --config <preset.yaml>
"""

from __future__ import annotations

import logging

from longctx_core.cli import run_stage
from longctx_core.config import Config

logger = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    from longctx_core.eval.runner import evaluate

    summary = evaluate(cfg)
    print(f"evaluation: {summary['eval_dir']}")
    for task, numbers in summary["by_model"].items():
        headline = next(iter(numbers.values()))
        print(f"  {task}: " + ", ".join(f"{model}={value:.3f}" for model, value in headline.items()))
    return summary


def main(argv=None) -> None:
    run_stage("evaluate", run, argv)


if __name__ == "__main__":
    main()
