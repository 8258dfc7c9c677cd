"""matplotlib for the PNGs that stages write (eval plots, data plots, the repro report)."""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot` on the Agg backend: headless Ray workers have no display for an interactive one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
