"""The run folder's top report (`<run>/report.md`) and the headline numbers printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

from longctx_core.config import Config
from longctx_core.infra.layout import RunLayout
from longctx_core.runner.markers import CHAIN, stage_output


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def headline(root: Path) -> list[str]:
    """The few numbers a user wants first, read back from the stages' own output files (stage 1 of the
    two-stage recipe first, as `pretrain data:` / `pretrain train:`, when the run has one)."""
    from longctx_core.infra.metrics import read_jsonl

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
    from longctx_core.runner.two_stage import PRETRAIN_STAGES

    layout = RunLayout(root)
    out = [f"# longctx run `{cfg.run.name}`", "", "Config: [config.yaml](config.yaml)", "", "## Stages", ""]
    stages = [("pretrain ", layout.pretrain, s) for s in PRETRAIN_STAGES if f"pretrain {s}" in done]
    stages += [("", layout, s) for s in CHAIN]
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
        from longctx_core.model.finetuned import usage_markdown

        out += [""] + usage_markdown(layout.train.adapter)
    layout.report.write_text("\n".join(out) + "\n")
    return layout.report
