"""The pipeline stage: [continued pre-training,] then synthesize -> train -> evaluate in one run folder,
skipping the stages already done for this config (`runner.markers`), then the top report (`runner.report`).

    python -m ray_jobs.pipeline --config ray_jobs/configs/demo_cpu.yaml     # check(cfg), then run(cfg) on Ray
"""

from __future__ import annotations

from longctx_core.config import Config
from longctx_core.runner.markers import CHAIN, run_stages
from longctx_core.runner.report import headline, write_top_report


def check(cfg: Config) -> None:
    """Everything the pipeline can check before Ray starts: the checkpoint's config against `model.rope`,
    that the data sources (stage 1's too) can be read. Raises LongctxError naming the key. (The later stages'
    own checks need the earlier stages' outputs: each runs when its stage is reached.)"""
    from longctx_core.eval.runner import check_qa_source
    from longctx_core.model.loading import check_model_config
    from longctx_core.runner.stages import get
    from longctx_core.runner.two_stage import pretrain_config

    check_synthesis = get("synthesize").function("check")
    check_model_config(cfg.model)
    check_synthesis(cfg)
    check_qa_source(cfg)
    if cfg.pretrain.enabled:
        check_synthesis(pretrain_config(cfg))


def run(cfg: Config, checked=None) -> dict:
    """The pipeline stage: [continued pre-training in <run>/pretrain/ when `pretrain.enabled`, then]
    synthesize -> train -> evaluate in the run folder, then the top report; prints where it all is and
    returns {run_dir, report, stages}."""
    from longctx_core.infra.runs import prepare_run_dir
    from longctx_core.runner.two_stage import run_pretrain

    root = prepare_run_dir(cfg, "pipeline")
    cfg, done = run_pretrain(cfg)
    done |= run_stages(cfg, root, CHAIN)[0]
    report = write_top_report(cfg, root, done)
    print(f"\nrun folder: {root}\nreport:     {report}")
    for line in headline(root):
        print(f"  {line}")
    return {"run_dir": str(root), "report": str(report), "stages": done}
