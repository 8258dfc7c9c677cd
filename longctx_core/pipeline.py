"""Chaining stages in one run folder: which stages are done, skipping them on resubmission, the top report.

    python -m ray_jobs.pipeline --config ray_jobs/configs/demo_cpu.yaml     # check(cfg), then run(cfg) on Ray

A stage counts as done when its final output exists (`stage_output`) and the `.stage-<name>.json` marker
written after it succeeded carries the same config fingerprint. Outputs from a different config are an
error rather than a silent reuse: pass `run.force=true` or choose another `run.name`.

Resubmission knobs (`RESUBMISSION_KNOBS`: `train.max_steps`, checkpointing, logging, resources) are left
out of the fingerprint, here and in the train stage's checkpoint marker (`train.state.fingerprint` is the
train stage's fingerprint), so a resubmission may change them:
- a finished train stage whose `train.max_steps` grew is not done: it runs again and resumes from its
  last checkpoint;
- a stage whose predecessor re-ran since (its marker records the predecessor's marker digest) is not done
  either: evaluation runs again on the new adapter.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from longctx_core.config import Config
from longctx_core.errors import LongctxError
from longctx_core.fsio import digest, recover
from longctx_core.layout import RunLayout

logger = logging.getLogger(__name__)

STAGES = ("synthesize", "train", "evaluate")
# Config sections that determine each stage's outputs (a stage also depends on the ones before it).
STAGE_INPUTS = {
    "synthesize": ("data",),
    "train": ("data", "model", "train"),
    "evaluate": ("data", "model", "train", "eval"),
}


# `train` keys a run may change on resubmission: how long to train, how often to checkpoint and log, how
# failures and resources are handled. They change neither the steps already taken nor their results.
# (`epochs`, `num_workers`, `lr` etc. do: they stay in the fingerprint.)
RESUBMISSION_KNOBS = (
    "max_steps",
    "max_failures",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "storage_path",
    "cpus_per_worker",
    "peak_tflops",
)


def stage_fingerprint(cfg: Config, stage: str) -> str:
    """Hash of the config sections (and seed) that decide `stage`'s outputs, less `RESUBMISSION_KNOBS`;
    returns 16 hex digits."""
    dumped = cfg.model_dump(mode="json")
    relevant = {k: dumped[k] for k in STAGE_INPUTS[stage]} | {"seed": cfg.run.seed}
    if "train" in relevant:
        relevant["train"] = {k: v for k, v in relevant["train"].items() if k not in RESUBMISSION_KNOBS}
    # Synthesis counts tokens with the model's tokenizer: another tokenizer means other samples.
    relevant["tokenizer"] = [cfg.model.name_or_path, cfg.model.tokenizer, dumped["model"]["tiny"]]
    return digest(relevant)


def stage_output(root: Path, stage: str) -> Path:
    """The file `stage` writes last: its presence means the stage finished."""
    layout = RunLayout(root)
    return {
        "synthesize": layout.data.stats,
        "train": layout.train.adapter / "adapter_config.json",
        "evaluate": layout.eval.metrics,
    }[stage]


def _marker(root: Path, stage: str) -> Path:
    return RunLayout(root).marker(stage)


def _upstream(root: Path, stage: str) -> str | None:
    """Digest of the marker of the stage before `stage` (None for the first stage or when it has none):
    it changes whenever that stage re-runs."""
    i = STAGES.index(stage)
    if i == 0 or not _marker(root, STAGES[i - 1]).is_file():
        return None
    return digest(json.loads(_marker(root, STAGES[i - 1]).read_text()))


def stage_is_done(cfg: Config, root: Path, stage: str) -> bool:
    """True when `stage` finished with this config, after the current run of the stage before it, and (for
    train) took all of `train.max_steps`; raises if it finished with a different config."""
    if stage == "train":
        recover(RunLayout(root).train.adapter)  # a crash mid-replacement of the adapter: put one back first
    if not stage_output(root, stage).is_file() or not _marker(root, stage).is_file():
        return False
    marker = json.loads(_marker(root, stage).read_text())
    if marker.get("fingerprint") != stage_fingerprint(cfg, stage):
        raise LongctxError(
            f"{root} holds '{stage}' outputs made with a different config; "
            "set run.force=true to redo them or pick another run.name"
        )
    if marker.get("upstream") != _upstream(root, stage):
        logger.info("%s: the stage before it ran again since; running it again", stage)
        return False
    steps, wanted = marker.get("summary", {}).get("steps"), cfg.train.max_steps
    if stage == "train" and wanted and steps is not None and steps < wanted:
        logger.info(
            "train: %d of train.max_steps=%d steps done; training on from the checkpoint", steps, wanted
        )
        return False
    return True


def mark_stage_done(cfg: Config, root: Path, stage: str, summary: dict) -> None:
    """Write `stage`'s marker: its fingerprint, its summary and the digest of the previous stage's marker."""
    marker = {
        "fingerprint": stage_fingerprint(cfg, stage),
        "upstream": _upstream(root, stage),
        "summary": summary,
    }
    _marker(root, stage).write_text(json.dumps(marker, default=str, indent=2))


def stage_summary(root: Path, stage: str) -> dict:
    marker = _marker(root, stage)
    return json.loads(marker.read_text()).get("summary", {}) if marker.is_file() else {}


def check(cfg: Config) -> None:
    """Everything the pipeline can check before Ray starts: the checkpoint's config against `model.rope`,
    that the data sources (stage 1's too) can be read. Raises LongctxError naming the key. (The later stages'
    own checks need the earlier stages' outputs: each runs when its stage is reached.)"""
    from data_gen.pipeline import check_synthesis_inputs
    from longctx_core.eval.runner import check_qa_source
    from longctx_core.modeling import check_model_config
    from longctx_core.two_stage import pretrain_config

    check_model_config(cfg.model)
    check_synthesis_inputs(cfg)
    check_qa_source(cfg)
    if cfg.pretrain.enabled:
        check_synthesis_inputs(pretrain_config(cfg))


def run_stages(cfg: Config, root: Path, stages, label: str = "") -> tuple[dict[str, str], bool]:
    """Run `stages` in order in the run folder `root` on a connected Ray, skipping each one whose outputs
    exist for this config (`stage_is_done`); returns ({label + stage: "done in N s" | "skipped ..."}, whether
    any stage ran)."""
    from longctx_core.stages import call

    done: dict[str, str] = {}
    ran = False
    for stage in stages:
        key = f"{label}{stage}"
        if not cfg.run.force and stage_is_done(cfg, root, stage):
            logger.info("=== %s: outputs exist for this config, skipped (run.force=true redoes it) ===", key)
            done[key] = "skipped (outputs exist)"
            continue
        logger.info("=== %s ===", key)
        t0 = time.perf_counter()
        summary = call(stage, cfg)
        mark_stage_done(cfg, root, stage, summary)
        done[key] = f"done in {time.perf_counter() - t0:.0f} s"
        ran = True
    return done, ran


def run(cfg: Config, checked=None) -> dict:
    """The pipeline stage: [continued pre-training in <run>/pretrain/ when `pretrain.enabled`, then]
    synthesize -> train -> evaluate in the run folder, then the top report; prints where it all is and
    returns {run_dir, report, stages}."""
    from longctx_core.runs import prepare_run_dir
    from longctx_core.two_stage import run_pretrain

    root = prepare_run_dir(cfg, "pipeline")
    cfg, done = run_pretrain(cfg)
    done |= run_stages(cfg, root, STAGES)[0]
    report = write_top_report(cfg, root, done)
    print(f"\nrun folder: {root}\nreport:     {report}")
    for line in headline(root):
        print(f"  {line}")
    return {"run_dir": str(root), "report": str(report), "stages": done}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def headline(root: Path) -> list[str]:
    """The few numbers a user wants first, read back from the stages' own output files (stage 1 of the
    two-stage recipe first, as `pretrain data:` / `pretrain train:`, when the run has one)."""
    from longctx_core.metrics import read_jsonl

    layout, lines = RunLayout(root), []
    runs = [("pretrain ", layout.pretrain)] if layout.pretrain.root.is_dir() else []
    for label, run in runs + [("", layout)]:
        stats = _read_json(run.data.stats)
        if stats:
            tok = stats.get("tokens", {})
            lines.append(
                f"{label}data: {stats.get('num_samples')} samples, tokens min/median/max "
                f"{tok.get('min')}/{tok.get('median')}/{tok.get('max')}, "
                f"{stats.get('samples_per_second') or 0:.2f} samples/s, "
                f"quarantined {sum(stats.get('quarantined', {}).values())}"
            )
        steps = [r for r in read_jsonl(run.train.metrics) if "loss" in r and "step" in r]
        if steps:
            lines.append(
                f"{label}train: {len(steps)} logged steps, loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}"
                + (f", {steps[-1]['tokens_per_s']:.0f} tokens/s" if "tokens_per_s" in steps[-1] else "")
            )
    metrics = _read_json(layout.eval.metrics)
    for task, m in metrics.get("tasks", {}).items():
        for name, by_model in m.get("by_model", {}).items():
            shown = ", ".join(f"{model} {value:.3f}" for model, value in by_model.items())
            lines.append(f"eval {task} {name}: {shown}")
    return lines


def _links(layout: RunLayout, stage: str) -> list[Path]:
    return {
        "synthesize": [
            layout.data.stats,
            layout.data.plots,
            layout.data.train,
            layout.data.eval,
            layout.data.quarantine,
        ],
        "train": [layout.train.metrics, layout.train.adapter],
        "evaluate": [layout.eval.report, layout.eval.metrics, layout.eval.predictions, layout.eval.plots],
    }[stage]


def write_top_report(cfg: Config, root: Path, done: dict[str, str]) -> Path:
    """`<run>/report.md`: what ran (stage 1 of the two-stage recipe too), the headline numbers, links to
    every stage's outputs and, once an adapter exists, how to use the model with its trained RoPE."""
    from longctx_core.two_stage import PRETRAIN_STAGES

    layout = RunLayout(root)
    out = [f"# longctx run `{cfg.run.name}`", "", "Config: [config.yaml](config.yaml)", "", "## Stages", ""]
    stages = [("pretrain ", layout.pretrain, s) for s in PRETRAIN_STAGES if f"pretrain {s}" in done]
    stages += [("", layout, s) for s in STAGES]
    for label, run, stage in stages:
        out.append(f"- **{label}{stage}**: {done.get(label + stage, 'not run')}")
        for path in _links(run, stage):
            if path.exists():
                link = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
                out.append(f"  - [{link}]({link})")
    out += ["", "## Headline numbers", ""] + [f"- {line}" for line in headline(root)]
    plots = sorted(layout.eval.plots.glob("*.png")) + sorted(layout.data.plots.glob("*.png"))
    if plots:
        out += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(root)})" for p in plots]
    if stage_output(root, "train").is_file():
        from longctx_core.modeling import usage_markdown

        out += [""] + usage_markdown(layout.train.adapter)
    layout.report.write_text("\n".join(out) + "\n")
    return layout.report
