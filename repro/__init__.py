"""`make repro`: the method's finding at toy scale — does paraphrase-the-original-text training fix "lost in
the middle" after a RoPE extension? — with uncertainty. An experiment built on the library, not part of it.

    python -m ray_jobs.repro --config ray_jobs/configs/repro_cpu.yaml     (make repro; base only: make repro-base)

    config.py        the product config plus the `repro:` section, and its cross-section checks
    base/            the toy base chat model: a small Qwen2 trained at a short context L0 (a cached build step)
    arms.py          per-arm configs for the project's own stages, the held-out check, one seed's runs
    run.py           the whole reproduction: base, arms of every seed, report
    analysis.py      accuracy by gold position with bootstrap intervals over questions
    report.py        report.md, repro.json and the plot

    <run>/                                   (run.storage_path/run.name)
      arms/toybase-<hash>/<arm>-s<seed>/    synthesize + train of one QLoRA arm (a normal run folder)
      arms/toybase-<hash>/eval-s<seed>/eval/  one evaluation of base (YaRN x4) + every arm, same prompts
      report.md, repro.json, plots/*.png     the comparison, 95% bootstrap intervals over questions
"""
