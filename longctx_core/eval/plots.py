"""PNG plots of the measured numbers (matplotlib, Agg backend: no display needed).

- `qa_position.png`: accuracy vs gold position, one line per model x length.
- `litm_position.png`: accuracy vs gold index, one line per model x document count.
- `passkey_heatmap.png`: passkey accuracy over depth x length, one panel per model.
- `perplexity_position.png`: perplexity vs token position, one line per model x length.

Each `*_series` function returns exactly what its plot draws, so tests can compare it with metrics.json;
`line_figure` / `heatmap_figure` build the Figure that is saved, so tests can read the drawn data back.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from longctx_core.infra.plotting import pyplot

logger = logging.getLogger(__name__)


def line_series(cells: list[dict], x: str, group: tuple[str, ...], y: str) -> dict[str, tuple[list, list]]:
    """{label: (xs, ys)} with one line per distinct `group` values, points sorted by `x`."""
    lines: dict[str, list[tuple]] = defaultdict(list)
    for c in cells:
        label = " ".join(f"{g}={c[g]}" if g != "model" else str(c[g]) for g in group)
        lines[label].append((c[x], c[y]))
    return {k: ([p[0] for p in sorted(v)], [p[1] for p in sorted(v)]) for k, v in lines.items()}


def heatmap_series(cells: list[dict]) -> dict[str, tuple[list, list, list[list[float]]]]:
    """{model: (depths, lengths, accuracy[depth][length])} for the passkey grid (NaN where a cell is absent)."""
    out = {}
    for model in sorted({c["model"] for c in cells}):
        mine = [c for c in cells if c["model"] == model]
        depths = sorted({c["depth"] for c in mine})
        lengths = sorted({c["length"] for c in mine})
        value = {(c["depth"], c["length"]): c["accuracy"] for c in mine}
        grid = [[value.get((d, n), float("nan")) for n in lengths] for d in depths]
        out[model] = (depths, lengths, grid)
    return out


def line_figure(series, xlabel: str, ylabel: str, title: str, logy: bool = False):
    """The matplotlib Figure of a line plot: one line per `series` entry ({label: (xs, ys)}), as drawn into
    the PNG (the caller closes it)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap_figure(series):
    """The matplotlib Figure of the passkey heatmaps: one panel per model of `heatmap_series` (depth rows,
    length columns, accuracy written in each cell), as drawn into the PNG (the caller closes it)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.8), squeeze=False)
    for ax, (model, (depths, lengths, grid)) in zip(axes[0], series.items(), strict=True):
        im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="upper")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("key depth")
        ax.set_title(f"passkey accuracy: {model}")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return fig


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG at the plots' resolution (110 dpi) and close it; returns `path`."""
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _line_plot(series, path: Path, xlabel: str, ylabel: str, title: str, logy: bool = False) -> Path:
    return save_figure(line_figure(series, xlabel, ylabel, title, logy), path)


def _heatmap(series, path: Path) -> Path:
    return save_figure(heatmap_figure(series), path)


# Accuracy by gold position, one line per series: task -> (plot name, x, series keys, x label, title).
_LINE_PLOTS = {
    "qa": (
        "qa_position",
        "position",
        ("model", "length"),
        "gold document position (0 = first, 1 = last)",
        "Multi-document QA: accuracy by gold position",
    ),
    "litm": (
        "litm_position",
        "gold_index",
        ("model", "num_docs"),
        "gold document index (0-based)",
        "Lost in the Middle (NQ): accuracy by gold position",
    ),
}


def make_plots(metrics: dict, folder: Path) -> dict[str, Path]:
    """Draw every plot whose task ran; returns {plot name: PNG path}."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks, made = metrics["tasks"], {}
    for task, (name, x, keys, xlabel, title) in _LINE_PLOTS.items():
        if task in tasks:
            series = line_series(tasks[task]["cells"], x, keys, "accuracy")
            made[name] = _line_plot(series, folder / f"{name}.png", xlabel, "accuracy (sub-span EM)", title)
    if "passkey" in tasks:
        made["passkey_heatmap"] = _heatmap(
            heatmap_series(tasks["passkey"]["cells"]), folder / "passkey_heatmap.png"
        )
    if "perplexity" in tasks:
        made["perplexity_position"] = _line_plot(
            perplexity_series(tasks["perplexity"]["cells"]),
            folder / "perplexity_position.png",
            "token position (bucket start)",
            "perplexity",
            "Perplexity by position",
            logy=True,
        )
    logger.info("plots: %s", ", ".join(str(p) for p in made.values()))
    return made


def perplexity_series(cells: list[dict]) -> dict[str, tuple[list, list]]:
    """{model length=L: (bucket start positions, perplexity)}."""
    return line_series(cells, "start", ("model", "length"), "ppl")
