"""Scoring model outputs and writing the evaluation folder: predictions, metrics by grid cell, plots, report.

    records, metrics = score_run(prompts, outputs_by_model, models)   # what the evaluate stage calls:
        # records = score_outputs(...): one dict per (model, prompt), the rows of predictions.jsonl
        # metrics = aggregate(records, models): every cell of every grid, with counts (metrics.json)
    write_outputs(out_dir, records, metrics)    # predictions.jsonl, metrics.json, plots, report.md

`score_run` is the seam between the models and the files: it sees only reply strings (and per-position
losses), so hand-made replies through it give exactly the numbers a model with those replies would get.

Cells: qa by (model, length, position); passkey by (model, length, depth); perplexity by (model, length,
bucket); longbench by (model, subset); litm by (model, num_docs, gold_index). Accuracy-type numbers are
means in [0, 1] next to their counts; LongBench tables show x100 like the benchmark's own.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from pathlib import Path

from longctx_core.eval import intervals, scoring
from longctx_core.eval.perplexity import summarize_buckets
from longctx_core.eval.prompts import Prompt

logger = logging.getLogger(__name__)

CELL_KEYS = {
    "qa": ("length", "position"),
    "passkey": ("length", "depth"),
    "perplexity": ("length",),
    "longbench": ("subset",),
    "litm": ("num_docs", "gold_index"),
}
_RATES = ("exact", "em_first_line", "quoted", "faithful_any", "faithful_gold", "near_miss")
# The base model of a comparison: every other model's accuracy is also reported as a paired difference to it.
BASE_KIND = "base"


def score_one(prompt: Prompt, out: dict) -> dict:
    """The predictions.jsonl record of one model output: reply, parsed answer, score and the task's extras."""
    rec = {
        "prompt_id": prompt.prompt_id,
        "task": prompt.task,
        **prompt.cell,
        # the unit a bootstrap resamples: a question asked at several positions and lengths is one unit
        "question_id": str(prompt.extra.get("record_id", prompt.prompt_id)),
        "prompt_tokens": prompt.n_tokens,
        "seconds": float(out.get("seconds", 0.0)),
    }
    if prompt.task == "perplexity":
        sums, counts = out["nll"]
        nll = sum(sums) / max(1, sum(counts))
        return rec | {
            "nll": nll,
            "ppl": math.exp(nll),
            "score": nll,
            "bucket_sums": sums,
            "bucket_counts": counts,
        }
    reply = out["reply"]
    rec |= {"reply": reply, "new_tokens": out["new_tokens"], "answers": prompt.answers}
    if prompt.task in ("qa", "litm"):
        parsed, em = scoring.answer_em(reply, prompt.answers, prompt.lang)
        quotes = scoring.quote_faithfulness(reply, prompt.extra["docs"], prompt.extra["gold"], prompt.lang)
        first = scoring.best_subspan_em(scoring.first_line(reply), prompt.answers)
        exact = scoring.exact_match(parsed, prompt.answers)
        rec |= {"answer": parsed, "score": em, "exact": exact, "em_first_line": first}
        rec["gold"] = prompt.extra["gold"]
        rec |= {k: float(v) for k, v in quotes.items() if k != "n_quotes"} | {"n_quotes": quotes["n_quotes"]}
    elif prompt.task == "passkey":
        numbers = re.findall(r"\d+", reply)
        rec |= {
            "answer": numbers[0] if numbers else "",
            "score": scoring.passkey_correct(reply, prompt.answers[0]),
        }
    elif prompt.task == "longbench":
        rec |= {
            "answer": reply.strip(),
            "score": scoring.longbench_score(prompt.cell["subset"], reply, prompt.answers),
        }
        rec["truncated"] = bool(prompt.extra.get("truncated"))
    return rec


def score_outputs(prompts: list[Prompt], outputs: dict[str, dict[str, dict]]) -> list[dict]:
    """Score every model's outputs; `outputs` is {model name: {prompt id: output}}."""
    records = []
    for model, outs in outputs.items():
        for p in prompts:
            records.append({"model": model, **score_one(p, outs[p.prompt_id])})
    return records


def score_run(
    prompts: list[Prompt], outputs: dict[str, dict[str, dict]], models: list[dict], extra: dict | None = None
) -> tuple[list[dict], dict]:
    """The evaluate stage's scoring, from each model's raw outputs ({model: {prompt id: {"reply",
    "new_tokens", "nll"}}}) to (predictions.jsonl records, metrics.json); `models` are the metrics' model
    entries, `extra` more top-level metrics keys."""
    records = score_outputs(prompts, outputs)
    return records, aggregate(records, models, extra)


def _group(records: list[dict], task: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["task"] == task:
            groups[(r["model"], *(r[k] for k in CELL_KEYS[task]))].append(r)
    return dict(
        sorted(groups.items(), key=lambda kv: tuple(str(x) if isinstance(x, str) else x for x in kv[0]))
    )


def _answer_cells(records: list[dict], task: str) -> list[dict]:
    """Accuracy cells (counts, mean score with its Wilson interval, the task's rates, seconds per prompt)
    of a generation task."""
    cells = []
    for key, rows in _group(records, task).items():
        n = len(rows)
        correct = sum(r["score"] for r in rows)
        ci = intervals.wilson(correct, n)
        cell = {"model": key[0], **dict(zip(CELL_KEYS[task], key[1:], strict=True)), "n": n}
        cell |= {
            "correct": correct,
            "accuracy": correct / n,
            "accuracy_lo": ci["lo"],
            "accuracy_hi": ci["hi"],
        }
        cell |= {k: sum(r[k] for r in rows) / n for k in _RATES if k in rows[0]}
        cell["prompt_tokens_mean"] = sum(r["prompt_tokens"] for r in rows) / n
        cell["seconds_per_prompt"] = sum(r.get("seconds", 0.0) for r in rows) / n
        cells.append(cell)
    return cells


def _pooled(rows: list[dict], key: str) -> dict:
    """Mean of `key` over `rows` with a question-clustered bootstrap interval."""
    return intervals.cluster_bootstrap([r[key] for r in rows], [r["question_id"] for r in rows])


def _paired(rows: list[dict], base_rows: list[dict], key: str) -> dict:
    """Mean of (model - base) over the prompts both answered, questions resampled together."""
    base = {r["prompt_id"]: r[key] for r in base_rows}
    both = [r for r in rows if r["prompt_id"] in base]
    return intervals.cluster_bootstrap(
        [r[key] - base[r["prompt_id"]] for r in both], [r["question_id"] for r in both]
    )


def answer_intervals(records: list[dict], task: str, models: list[dict]) -> dict:
    """Pooled rates with 95% intervals, per model: over all prompts ("all") and per first cell key (e.g.
    "length=1024"), for the lenient `accuracy` and, where scored, the strict `exact`; and each non-base
    model's paired difference to the base model (`vs_<base name>`). Returns {model: {group: {metric: ci}}}."""
    first = CELL_KEYS[task][0]
    rows_of: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["task"] == task:
            rows_of[r["model"]].append(r)
    base = next((m["name"] for m in models if m.get("kind") == BASE_KIND and m["name"] in rows_of), None)
    metrics = [("accuracy", "score")] + ([("exact", "exact")] if task in ("qa", "litm") else [])
    out: dict = {}
    for model, rows in rows_of.items():
        groups = {"all": rows}
        for value in sorted({r[first] for r in rows}):
            groups[f"{first}={value}"] = [r for r in rows if r[first] == value]
        out[model] = {}
        for group, grows in groups.items():
            entry = {name: _pooled(grows, key) for name, key in metrics}
            if base and model != base:
                bases = [r for r in rows_of[base] if group == "all" or r[first] == grows[0][first]]
                entry |= {f"{name}_vs_{base}": _paired(grows, bases, key) for name, key in metrics}
            out[model][group] = entry
    return out


def _perplexity_cells(records: list[dict]) -> list[dict]:
    cells = []
    for (model, length), rows in _group(records, "perplexity").items():
        for b in summarize_buckets(
            [r["bucket_sums"] for r in rows], [r["bucket_counts"] for r in rows], length
        ):
            cells.append({"model": model, "length": length, "sequences": len(rows), **b})
    return cells


def _longbench_cells(records: list[dict]) -> list[dict]:
    cells = []
    for (model, subset), rows in _group(records, "longbench").items():
        n = len(rows)
        cells.append(
            {
                "model": model,
                "subset": subset,
                "metric": scoring.LONGBENCH_METRICS[subset][0],
                "n": n,
                "score": 100 * sum(r["score"] for r in rows) / n,
                "truncated": sum(r["truncated"] for r in rows),
            }
        )
    return cells


def _by_model(cells: list[dict], value: str, weight: str = "n") -> dict[str, float]:
    """Count-weighted mean of `value` per model over its cells."""
    tot, w = defaultdict(float), defaultdict(float)
    for c in cells:
        if not (isinstance(c[value], float) and math.isnan(c[value])):
            tot[c["model"]] += c[value] * c[weight]
            w[c["model"]] += c[weight]
    return {m: tot[m] / w[m] for m in tot if w[m]}


def aggregate(records: list[dict], models: list[dict], extra: dict | None = None) -> dict:
    """metrics.json: every cell of every task that ran, with counts, plus per-model summaries."""
    tasks = {r["task"] for r in records}
    out: dict = {"models": models, **(extra or {}), "tasks": {}}
    for task in ("qa", "passkey", "litm"):
        if task in tasks:
            cells = _answer_cells(records, task)
            summary = {"accuracy": _by_model(cells, "accuracy")}
            for rate in ("exact", "faithful_any", "faithful_gold", "quoted"):
                if cells and rate in cells[0]:
                    summary[rate] = _by_model(cells, rate)
            out["tasks"][task] = {
                "cells": cells,
                "by_model": summary,
                "intervals": answer_intervals(records, task, models),
            }
    if "qa" in out["tasks"]:
        out["tasks"]["qa"]["metric"] = (
            "accuracy: lenient, a gold answer appears in the reply's answer part (best_subspan_em, Lost in the "
            "Middle); exact: the answer part equals a gold answer (both SQuAD-normalised)"
        )
    if "litm" in out["tasks"]:
        out["tasks"]["litm"]["metric"] = "best_subspan_em; em_first_line = the paper's protocol (first line)"
    if "perplexity" in tasks:
        cells = _perplexity_cells(records)
        out["tasks"]["perplexity"] = {"cells": cells, "by_model": {"nll": _by_model(cells, "nll", "tokens")}}
    if "longbench" in tasks:
        cells = _longbench_cells(records)
        out["tasks"]["longbench"] = {"cells": cells, "by_model": {"score": _by_model(cells, "score")}}
    return out


# ---- writing --------------------------------------------------------------------------------------------


def write_predictions(path: Path, records: list[dict]) -> None:
    """One JSON object per (model, prompt); bucket sums stay in metrics.json's cells."""
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            row = {k: v for k, v in r.items() if k not in ("bucket_sums", "bucket_counts")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_outputs(out_dir: Path, records: list[dict], metrics: dict) -> dict[str, Path]:
    """predictions.jsonl, metrics.json, plots/*.png and report.md under `out_dir`; returns the paths."""
    from longctx_core.eval import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.jsonl", records)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=float))
    made = plots.make_plots(metrics, out_dir / "plots")
    from longctx_core.eval.markdown import render_report

    report = render_report(metrics, {k: p.relative_to(out_dir) for k, p in made.items()})
    adapters = [m["path"] for m in metrics.get("models", []) if m.get("kind") == "adapter" and m.get("path")]
    if adapters:
        from longctx_core.model.finetuned import usage_markdown

        report = report.rstrip("\n") + "\n\n" + "\n".join(usage_markdown(adapters[0])) + "\n"
    (out_dir / "report.md").write_text(report)
    return {
        "predictions": out_dir / "predictions.jsonl",
        "metrics": out_dir / "metrics.json",
        "report": out_dir / "report.md",
        **made,
    }
