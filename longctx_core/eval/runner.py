"""The evaluate stage: check the models, build every task's prompts, run them per model on Ray, score, write.

    specs, prompts = check(cfg)   # before Ray: models, prompts, window, leaks
    summary = run(cfg, (specs, prompts))   # <run>/eval/{metrics.json, predictions.jsonl, report.md, plots/*.png}
                                # + the headline numbers as ray_longctx_evaluate_<name>{model, task} gauges

Everything that can be wrong with the input (a model folder that does not load, a grid length above a
model's scaled context, a missing benchmark file, a leaked training question) raises before Ray starts.
Grid lengths left unset are `eval.length_factors` x the original context, minus the reply budget so the
prompt and its reply fit the window, kept when within every model's scaled context.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from longctx_core.config import Config
from longctx_core.errors import LongctxError
from longctx_core.eval.models import ModelSpec, resolve_models
from longctx_core.eval.prompts import Prompt, check_window
from longctx_core.infra.layout import RunLayout
from longctx_core.infra.metrics import Metrics

logger = logging.getLogger(__name__)


def grid_lengths(
    explicit: list[int] | None, factors: list[float], original: int, limit: int, reply: int, key: str
):
    """Sorted lengths of a grid: `explicit` (each + `reply` must fit `limit`) or the factor defaults."""
    if explicit:
        over = [n for n in explicit if n + reply > limit]
        if over:
            raise LongctxError(
                f"{key}: {over} (+{reply} reply tokens) exceed the models' scaled context of {limit} tokens; "
                "shorten them or extend the context with model.rope"
            )
        return sorted(set(explicit))
    lengths = sorted({int(f * original) - reply for f in factors if f * original <= limit})
    if not lengths:
        raise LongctxError(
            f"eval.length_factors: none of {factors} x {original} tokens fits the scaled context {limit}"
        )
    return lengths


def _grids(cfg: Config, original: int, limit: int) -> dict[str, list[int]]:
    """The length grid of each enabled grid task, all checked before any prompt is built."""
    ev, grids = cfg.eval, {}
    for task, reply in (("qa", ev.max_new_tokens), ("passkey", ev.max_new_tokens), ("perplexity", 0)):
        section = getattr(ev, task)
        if section.enabled:
            grids[task] = grid_lengths(
                section.lengths, ev.length_factors, original, limit, reply, f"eval.{task}.lengths"
            )
    return grids


def check_qa_source(cfg: Config) -> None:
    """The QA task asks held-out questions of a QA source: `eval.qa.source`, else `data.source`. Imported chat
    or raw text has no questions; raises LongctxError naming the key (the pipeline calls this before Ray,
    long before its evaluate stage)."""
    if not cfg.eval.qa.enabled:
        return
    source = cfg.eval.qa.source or cfg.data.source
    if source.kind in ("chat", "text"):
        key = "eval.qa.source" if cfg.eval.qa.source else "data.source.kind"
        raise LongctxError(
            f"{key}: the qa evaluation needs a QA source (questions with evidence) but gets a {source.kind} "
            "source; set eval.qa.source (e.g. {kind: builtin} or the LitM/SQuAD files) or eval.qa.enabled=false"
        )


def _qa(cfg: Config, root: Path, tokenizer, lengths: list[int]) -> list[Prompt]:
    from longctx_core.eval.contexts import check_no_leak, held_out_records, qa_prompts, training_questions

    qa = cfg.eval.qa
    source = qa.source or cfg.data.source
    records, docs, langs = held_out_records(
        source, cfg.run.seed, cfg.data.eval_fraction, qa.num_questions, qa.pool_records
    )
    check_no_leak(records, training_questions(root), str(RunLayout(root).data.train))
    seed = cfg.run.seed + cfg.eval.seed
    return qa_prompts(tokenizer, records, docs, langs, lengths, qa.positions, seed, qa.num_questions)


def build_prompts(cfg: Config, root: Path, tokenizer, specs: list[ModelSpec]) -> list[Prompt]:
    """Every enabled task's prompts, checked against the smallest scaled context among the models."""
    from longctx_core.model.loading import check_model_config
    from longctx_core.model.rope import original_context

    ev, seed = cfg.eval, cfg.run.seed + cfg.eval.seed
    limit = min(s.limit for s in specs)
    original = min(original_context(cfg.model.rope, check_model_config(cfg.model)), limit)
    grids = _grids(cfg, original, limit)
    prompts: list[Prompt] = []
    if ev.qa.enabled:
        prompts += _qa(cfg, root, tokenizer, grids["qa"])
    if ev.passkey.enabled:
        from longctx_core.eval.passkey import haystack_units, passkey_prompts

        pk = ev.passkey
        prompts += passkey_prompts(
            tokenizer, grids["passkey"], pk.depths, pk.trials, haystack_units(pk.haystack), seed
        )
    if ev.perplexity.enabled:
        from longctx_core.eval.perplexity import perplexity_prompts

        pp = ev.perplexity
        prompts += perplexity_prompts(tokenizer, grids["perplexity"], pp.num_sequences, pp.path, seed)
    if ev.longbench.enabled:
        from longctx_core.eval.longbench import longbench_prompts

        lb = ev.longbench
        prompts += longbench_prompts(
            tokenizer, lb.subsets, lb.dataset, lb.path, lb.limit, lb.max_length, limit
        )
    if ev.litm.enabled:
        from longctx_core.eval.litm import litm_prompts

        lt = ev.litm
        litm = litm_prompts(tokenizer, lt.path, lt.num_docs, lt.gold_indices, lt.limit, lt.prompt)
        for p in litm:
            p.max_new_tokens = ev.max_new_tokens
        check_window(
            litm, limit, "eval.litm", "evaluate fewer documents (eval.litm.num_docs) or extend model.rope"
        )
        prompts += litm
    check_window([p for p in prompts if p.kind == "generate"], limit, "eval", "shorten the grid lengths")
    if not prompts:
        raise LongctxError("eval: the enabled tasks produced no prompts")
    return prompts


def log_headline(run_name: str, metrics: dict) -> int:
    """metrics.json's headline numbers (`tasks.<task>.by_model`: accuracy, faithfulness rates, NLL, LongBench
    score) as one metrics row per (task, model), labelled with both: log lines and the
    `ray_longctx_evaluate_<name>` gauges the Grafana dashboard charts. Returns the number of rows."""
    sink = Metrics("evaluate", tags={"run": run_name})
    rows = 0
    for task, section in metrics["tasks"].items():
        by_model = section["by_model"]  # {name: {model: value}}
        for model in sorted({m for per_model in by_model.values() for m in per_model}):
            values = {name: per_model[model] for name, per_model in by_model.items() if model in per_model}
            sink.log(values, tags={"model": model, "task": task})
            rows += 1
    return rows


def headline_lines(metrics: dict) -> list[str]:
    """The evaluation's printout: per task the first headline number of each model, and for tasks with
    intervals each model's pooled accuracy (and exact match) per group with its 95% interval, in points."""
    from longctx_core.eval.intervals import fmt

    lines = []
    for task, section in metrics["tasks"].items():
        if not section.get("intervals"):
            first = next(iter(section["by_model"].values()))
            lines.append(f"  {task}: " + ", ".join(f"{m}={v:.3f}" for m, v in first.items()))
            continue
        for model, groups in section["intervals"].items():
            for group, ci in groups.items():
                parts = [f"{metric} {fmt(value)}" for metric, value in ci.items()]
                lines.append(f"  {task} {model:<8} {group:<12} " + "  ".join(parts))
    for model, t in metrics.get("timing", {}).items():
        lines.append(f"  time {model}: {t['wall_s']:.0f} s, {t['seconds_per_prompt']:.1f} s per prompt")
    return lines


def check(cfg: Config) -> tuple[list[ModelSpec], list[Prompt]]:
    """Everything before Ray: the models resolve and load their configs, every task's prompts build and fit
    every model's window, no evaluation question was trained on; returns (model specs, prompts)."""
    from longctx_core.model.loading import load_tokenizer

    check_qa_source(cfg)
    root = RunLayout.of(cfg).root
    specs = resolve_models(cfg, root)
    return specs, build_prompts(cfg, root, load_tokenizer(cfg.model), specs)


def run(cfg: Config, checked: tuple[list[ModelSpec], list[Prompt]] | None = None) -> dict:
    """The evaluate stage on a connected Ray: every model on every prompt, scored and written to
    <run>/eval/; prints and returns a summary (paths, prompt count, headline numbers per model)."""
    from longctx_core.eval.generate import run_prompts
    from longctx_core.eval.report import score_run, write_outputs
    from longctx_core.eval.scoring import zh_tokenizer
    from longctx_core.infra.runs import prepare_run_dir

    specs, prompts = checked or check(cfg)
    out = RunLayout(prepare_run_dir(cfg, "evaluate")).eval
    outputs, timing = {}, {}
    for spec in specs:
        t0 = time.perf_counter()
        outputs[spec.name] = run_prompts(cfg, spec, prompts)
        new_tokens = sum(o["new_tokens"] for o in outputs[spec.name].values())
        wall = time.perf_counter() - t0
        timing[spec.name] = {
            "wall_s": wall,
            "new_tokens": new_tokens,
            "prompts": len(prompts),
            # model load and actor start-up included: what a user waits per prompt
            "seconds_per_prompt": wall / max(1, len(prompts)),
        }
    extra = {
        "run": cfg.run.name,
        "num_prompts": len(prompts),
        "zh_tokenizer": zh_tokenizer(),
        "timing": timing,
    }
    records, metrics = score_run(prompts, outputs, [asdict(s) for s in specs], extra)
    paths = write_outputs(out.dir, records, metrics)
    log_headline(cfg.run.name, metrics)
    headline = {task: m["by_model"] for task, m in metrics["tasks"].items()}
    logger.info("evaluation written to %s: %s", out.dir, headline)
    print(f"evaluation: {out.dir}")
    for line in headline_lines(metrics):
        print(line)
    return {
        "eval_dir": str(out.dir),
        "num_prompts": len(prompts),
        "files": {k: str(v) for k, v in paths.items()},
        "by_model": headline,
    }
