"""The QLoRA arms: per-arm configs for the product's own stages (`longctx_core.runner.stages`), the check that
the evaluation questions stayed held out, and the runs of one seed.

Arms of one seed share `run.seed`, records, targets and steps (`data_gen` draws the answer style from its own
random stream, so the plain twin has the same contexts and questions). The base model is the toy base with
`model.rope` applied (YaRN x `repro.length_factor`) and no adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from longctx_core.config import Config, config_from_dict, run_dir
from longctx_core.infra.layout import RunLayout
from repro.config import ReproConfig

logger = logging.getLogger(__name__)


def stage_config(cfg: ReproConfig, edits: dict[str, object]) -> Config:
    """A product config for one of the project's stages: `cfg` without its `repro:` section (the stages,
    and the Ray Train workers that re-validate it, know only the product schema), with dotted-key `edits`
    (values may be lists/dicts, set as they are)."""
    tree = cfg.model_dump(mode="json", exclude={"repro"})
    for dotted, value in edits.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config_from_dict(tree)


def arms_root(cfg: ReproConfig, base_dir: Path) -> Path:
    """Where the arms of a toy base live: <run>/arms/<base folder name>/ (the name carries the base's recipe
    hash, so a rebuilt base never resumes from, or reuses data of, another base's arms)."""
    return run_dir(cfg) / "arms" / Path(base_dir).name


def _folder_and_base(cfg: ReproConfig, base_dir: Path, name: str, seed: int) -> dict[str, object]:
    """The edits every stage config of the repro shares: its run folder `name` under the base's arms, its
    seed, and the toy base as the checkpoint."""
    return {
        "run.storage_path": str(arms_root(cfg, base_dir)),
        "run.name": name,
        "run.seed": seed,
        "model.name_or_path": str(base_dir),
    }


def arm_config(cfg: ReproConfig, base_dir: Path, arm: str, seed: int) -> Config:
    """The config of one QLoRA arm: its own run folder, the arm's answer-style mix, `run.seed` = seed, the
    toy base as the checkpoint; everything else (steps, samples, lengths) as in the preset."""
    edits = _folder_and_base(cfg, base_dir, f"{arm}-s{seed}", seed)
    return stage_config(cfg, edits | {"data.answer_styles": dict(cfg.repro.arms[arm])})


def eval_config(cfg: ReproConfig, base_dir: Path, seed: int, adapters: dict[str, Path]) -> Config:
    """The config of the seed's evaluation: the extended base and every arm's adapter on the same prompts."""
    models = [{"name": "base", "kind": "base", "path": None}]
    models += [{"name": arm, "kind": "adapter", "path": str(path)} for arm, path in adapters.items()]
    return stage_config(cfg, _folder_and_base(cfg, base_dir, f"eval-s{seed}", seed) | {"eval.models": models})


def check_held_out(cfg: ReproConfig, seed: int, arm_roots: list[Path]) -> int:
    """Raise LongctxError when a question the evaluation of `seed` asks appears in any training stage: the
    toy base's training questions exclude them by construction (`heldout_questions`, checked here again)
    and every arm's `data/train` Parquet is read. Returns the number of questions checked."""
    from longctx_core.errors import LongctxError
    from longctx_core.eval.contexts import check_no_leak, held_out_records, question_key, training_questions
    from repro.base.worlds import heldout_questions

    qa = cfg.eval.qa
    records, _, _ = held_out_records(
        cfg.data.source, seed, cfg.data.eval_fraction, qa.num_questions, qa.pool_records
    )
    excluded = heldout_questions(cfg)
    missing = [r.question for r in records if question_key(r.question) not in excluded]
    if missing:
        raise LongctxError(
            f"repro: evaluation question {missing[0]!r} is not excluded from the toy base's data"
        )
    for root in arm_roots:
        found = training_questions(root)
        if found is None:
            raise LongctxError(f"repro: {root}/data/train holds no training data to check")
        check_no_leak(records, found, str(RunLayout(root).data.train))
    return len(records)


def _run_once(stage: str, cfg: Config) -> dict:
    """Run the product's `stage` in `cfg`'s run folder unless it already finished with the same config
    (resume); returns the stage's summary."""
    from longctx_core.runner.markers import run_stages, stage_summary

    root = run_dir(cfg)
    done, _ = run_stages(cfg, root, [stage], label=f"repro {cfg.run.name} ")
    logger.info("repro: %s", done)
    return stage_summary(root, stage)


def run_seed(cfg: ReproConfig, base_dir: Path, seed: int) -> Path:
    """Synthesize + train every arm of `seed`, check the held-out questions, evaluate base + arms together;
    returns the seed's evaluation folder."""
    adapters, roots = {}, []
    for arm in cfg.repro.arms:
        acfg = arm_config(cfg, base_dir, arm, seed)
        _run_once("synthesize", acfg)
        _run_once("train", acfg)
        roots.append(run_dir(acfg))
        adapters[arm] = RunLayout.of(acfg).train.adapter
    n = check_held_out(cfg, seed, roots)
    logger.info("repro: %d evaluation questions of seed %d are absent from every training stage", n, seed)
    ecfg = eval_config(cfg, base_dir, seed, adapters)
    _run_once("evaluate", ecfg)
    return RunLayout.of(ecfg).eval.dir
