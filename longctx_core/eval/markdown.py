"""`report.md`: the evaluation's tables (models side by side) with the plots embedded."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from longctx_core.eval import intervals


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a Markdown table; float cells to 3 decimals, anything else as `str`."""

    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def _pivot(cells: list[dict], row_keys: tuple[str, ...], col: str, value: str, count: str | None = "n"):
    """(column values, rows) of a pivot table: one row per `row_keys` values, one column per `col` value;
    cells show `value`, its 95% interval when the cell has `<value>_lo`/`<value>_hi`, and, when `count` is
    set, its count in parentheses."""
    cols = sorted({c[col] for c in cells})
    grid: dict[tuple, dict] = defaultdict(dict)
    for c in cells:
        text = f"{c[value]:.3f}"
        if f"{value}_lo" in c:
            text += f" [{c[f'{value}_lo']:.2f}, {c[f'{value}_hi']:.2f}]"
        text += f" ({c[count]})" if count else ""
        grid[tuple(c[k] for k in row_keys)][c[col]] = text
    rows = [[*map(_label, key), *(grid[key].get(v, "") for v in cols)] for key in sorted(grid, key=_order)]
    return cols, rows


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _order(key: tuple) -> tuple:
    """Sort key for mixed row keys: numbers numerically, before strings."""
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in key)


def interval_rows(task: dict) -> list[list[str]]:
    """Rows (model, group, metric, mean [95% interval] in points) of a task's pooled intervals, differences
    to the base model included."""
    rows = []
    for model, groups in task.get("intervals", {}).items():
        for group, metrics in groups.items():
            for metric, ci in metrics.items():
                rows.append([model, group, metric, intervals.fmt(ci), str(ci["n"])])
    return rows


def _qa_section(task: dict, title: str, col: str, row_key: str) -> list[str]:
    cols, rows = _pivot(task["cells"], ("model", row_key), col, "accuracy")
    out = [f"## {title}", "", f"Metric: {task['metric']}.", ""]
    out += ["Cells: accuracy [95% Wilson interval] (questions).", ""]
    out += [*markdown_table(["model", row_key, *[f"{col}={_label(c)}" for c in cols]], rows), ""]
    if task.get("intervals"):
        out += [
            "Pooled, in points, with 95% intervals from a bootstrap over questions (a question's positions "
            "resampled together; `_vs_` rows are paired differences on the same prompts):",
            "",
            *markdown_table(
                ["model", "prompts", "metric", "points [95% CI]", "questions"], interval_rows(task)
            ),
            "",
        ]
    if "faithful_any" in task["by_model"]:
        out += ["Quote faithfulness (share of replies; a quote counts when it is a verbatim substring):", ""]
        by = task["by_model"]
        rows = [
            [m, by["accuracy"][m], by["quoted"][m], by["faithful_any"][m], by["faithful_gold"][m]]
            for m in sorted(by["accuracy"])
        ]
        out += [
            *markdown_table(
                ["model", "accuracy", "quotes", "verbatim in a document", "verbatim in the gold"], rows
            ),
            "",
        ]
    return out


def render_report(metrics: dict, plots: dict[str, Path]) -> str:
    """The whole report as Markdown; `plots` are paths relative to the report's folder."""
    tasks = metrics["tasks"]
    out = ["# Evaluation report", ""]
    models = [[m["name"], m["kind"], m["limit"], m["path"] or "(base)"] for m in metrics["models"]]
    out += [*markdown_table(["model", "kind", "context", "path"], models), ""]
    if "qa" in tasks:
        out += _qa_section(tasks["qa"], "Multi-document QA by gold position", "position", "length")
        out += [f"![accuracy by position]({plots['qa_position']})", ""] if "qa_position" in plots else []
    if "litm" in tasks:
        out += _qa_section(tasks["litm"], "Lost in the Middle (NQ)", "gold_index", "num_docs")
        cols, rows = _pivot(
            tasks["litm"]["cells"], ("model", "num_docs"), "gold_index", "em_first_line", None
        )
        out += [
            "First-line EM (the paper's protocol):",
            "",
            *markdown_table(["model", "num_docs", *map(str, cols)], rows),
            "",
        ]
        out += [f"![LitM accuracy]({plots['litm_position']})", ""] if "litm_position" in plots else []
    if "passkey" in tasks:
        cols, rows = _pivot(tasks["passkey"]["cells"], ("model", "depth"), "length", "accuracy")
        out += [
            "## Passkey retrieval",
            "",
            "Cells: accuracy (count); rows: key depth, columns: prompt tokens.",
            "",
        ]
        out += [*markdown_table(["model", "depth", *map(str, cols)], rows), ""]
        out += [f"![passkey heatmap]({plots['passkey_heatmap']})", ""] if "passkey_heatmap" in plots else []
    if "perplexity" in tasks:
        cols, rows = _pivot(tasks["perplexity"]["cells"], ("model", "length"), "bucket", "ppl", None)
        b = len(cols)
        out += [
            "## Perplexity by position",
            "",
            f"Column k: targets at positions [k*L/{b}, (k+1)*L/{b}).",
            "",
        ]
        out += [*markdown_table(["model", "length", *map(str, cols)], rows), ""]
        out += (
            [f"![perplexity]({plots['perplexity_position']})", ""] if "perplexity_position" in plots else []
        )
    if "longbench" in tasks:
        cols, rows = _pivot(tasks["longbench"]["cells"], ("subset", "metric"), "model", "score")
        out += [
            "## LongBench",
            "",
            "LongBench protocol (its prompts, middle truncation, metrics); scores x100 (count).",
            "",
        ]
        if metrics.get("zh_tokenizer") == "char":
            out += [
                "Chinese metrics tokenised per character (`jieba` not installed): not comparable to published zh scores.",
                "",
            ]
        out += [*markdown_table(["subset", "metric", *cols], rows), ""]
    return "\n".join(out)
