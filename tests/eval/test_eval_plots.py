"""The evaluation's plots draw the numbers they are given: the lines and heatmap cells read back from the
Figure the PNG is saved from, and the PNG itself decoded (size, colours, each line's colour present)."""

from __future__ import annotations

import pytest

from longctx_core.eval import plots

# matplotlib's default colour cycle: the first four lines of a plot
CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def _qa_cells() -> list[dict]:
    """qa cells of two models x two lengths x three positions, accuracies chosen by hand."""
    acc = {
        ("base", 500): [0.5, 0.0, 1.0],
        ("base", 1012): [0.25, 0.75, 0.5],
        ("tuned", 500): [1.0, 1.0, 0.5],
        ("tuned", 1012): [0.0, 0.5, 0.25],
    }
    return [
        {"model": m, "length": n, "position": p, "accuracy": a, "n": 4}
        for (m, n), accs in acc.items()
        for p, a in zip([1.0, 0.0, 0.5], [accs[2], accs[0], accs[1]], strict=True)  # cells out of order
    ]


def test_line_figure_draws_exactly_the_cells(tmp_path, png_facts):
    series = plots.line_series(_qa_cells(), "position", ("model", "length"), "accuracy")
    fig = plots.line_figure(series, "gold position", "accuracy", "QA by position")
    ax = fig.axes[0]
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert drawn == {  # by hand from _qa_cells, points sorted by position
        "base length=500": ([0.0, 0.5, 1.0], [0.5, 0.0, 1.0]),
        "base length=1012": ([0.0, 0.5, 1.0], [0.25, 0.75, 0.5]),
        "tuned length=500": ([0.0, 0.5, 1.0], [1.0, 1.0, 0.5]),
        "tuned length=1012": ([0.0, 0.5, 1.0], [0.0, 0.5, 0.25]),
    }
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(drawn)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "gold position",
        "accuracy",
        "QA by position",
    )
    assert ax.get_yscale() == "linear"
    png = png_facts(plots.save_figure(fig, tmp_path / "qa.png")).assert_drawn(770, 462)
    for colour in CYCLE:  # every line (and its markers) is in the image
        assert png.near(colour) > 100, colour


def test_heatmap_figure_shows_the_grid(tmp_path, png_facts):
    cells = [
        {"model": "base", "depth": 0.0, "length": 500, "accuracy": 1.0},
        {"model": "base", "depth": 1.0, "length": 500, "accuracy": 0.0},
        {"model": "base", "depth": 0.0, "length": 1012, "accuracy": 0.5},  # (1.0, 1012) is absent
        {"model": "tuned", "depth": 0.0, "length": 500, "accuracy": 0.25},
        {"model": "tuned", "depth": 1.0, "length": 500, "accuracy": 0.75},
    ]
    fig = plots.heatmap_figure(plots.heatmap_series(cells))
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["passkey accuracy: base", "passkey accuracy: tuned"]
    base, tuned = (ax.images[0].get_array() for ax in panels)
    assert base.tolist() == [[1.0, 0.5], [0.0, None]]  # the absent cell: NaN, masked, left empty
    assert tuned.tolist() == [[0.25], [0.75]]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["500", "1012"]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["0", "1"]
    assert sorted(t.get_text() for t in panels[0].texts) == ["0.00", "0.50", "1.00", "nan"]
    png = png_facts(plots.save_figure(fig, tmp_path / "heat.png")).assert_drawn(990, 418, min_colours=50)
    assert png.near("#006837", tol=40) > 100  # RdYlGn at 1.0: the green cell is drawn


def test_make_plots_saves_the_figures_of_the_metrics(tmp_path):
    """make_plots' PNGs are byte for byte the figures built from metrics.json's cells (so the checks above
    hold for what the stage writes); perplexity is drawn on a log scale."""
    ppl = [
        {"model": "base", "length": 512, "start": s, "ppl": p}
        for s, p in ((0, 40.0), (128, 20.0), (256, 9.0))
    ]
    metrics = {"tasks": {"qa": {"cells": _qa_cells()}, "perplexity": {"cells": ppl}}}
    made = plots.make_plots(metrics, tmp_path / "plots")
    assert sorted(made) == ["perplexity_position", "qa_position"]
    qa = plots.line_figure(
        plots.line_series(_qa_cells(), "position", ("model", "length"), "accuracy"),
        "gold document position (0 = first, 1 = last)",
        "accuracy (sub-span EM)",
        "Multi-document QA: accuracy by gold position",
    )
    again = plots.save_figure(qa, tmp_path / "again.png")
    assert made["qa_position"].read_bytes() == again.read_bytes()
    fig = plots.line_figure(plots.perplexity_series(ppl), "x", "y", "t", logy=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()] == [
        ([0, 128, 256], [40.0, 20.0, 9.0])
    ]
    plots.pyplot().close(fig)


@pytest.mark.parametrize("name", ["blank", "flat"])
def test_png_check_refuses_an_empty_picture(tmp_path, png_facts, name):
    """The content check itself fails on a white or a one-colour image of the right size."""
    import matplotlib.image as mpimg
    import numpy as np

    img = np.ones((462, 770, 3)) if name == "blank" else np.full((462, 770, 3), 0.3)
    mpimg.imsave(tmp_path / "x.png", img)
    with pytest.raises(AssertionError):
        png_facts(tmp_path / "x.png").assert_drawn(770, 462)
