"""Uncertainty for accuracies: every rate the evaluation prints carries a 95% interval.

- A grid cell (one model, one length, one position) asks each question once: its correct answers are a
  binomial count, and `wilson` gives the Wilson score interval (sound at n = 6 and at 0% or 100%, where the
  normal approximation collapses to a zero-width interval).
- A pooled rate (a model over all cells, or one length) asks the same question at several positions, so the
  answers are not independent: `cluster_bootstrap` resamples whole questions.
- A difference between two models on the same prompts (tuned - base) is paired: `cluster_bootstrap` of the
  per-prompt differences, questions resampled together.

    >>> wilson(3, 6)["lo"] < 0.5 < wilson(3, 6)["hi"]
    True
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
RESAMPLES = 2000


def wilson(correct: float, n: int, z: float = Z95) -> dict:
    """{"mean", "lo", "hi", "n"}: `correct`/`n` with its Wilson score interval (n = 0: NaNs)."""
    if n <= 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"mean": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half), "n": n}


def cluster_bootstrap(
    values: Sequence[float], clusters: Sequence, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """{"mean", "lo", "hi", "n"}: the mean of `values` with a 95% percentile-bootstrap interval that draws
    whole clusters (a question's answers at every position stay together) with replacement; `n` counts
    clusters. One cluster, or none, gives the mean with a NaN interval."""
    groups: dict = defaultdict(list)
    for v, c in zip(values, clusters, strict=True):
        groups[c].append(float(v))
    if not groups:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    sums = np.array([sum(g) for g in groups.values()])
    counts = np.array([len(g) for g in groups.values()])
    mean = float(sums.sum() / counts.sum())
    if len(groups) < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": len(groups)}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": len(groups)}


def fmt(interval: dict, scale: float = 100.0, digits: int = 1) -> str:
    """'48.3 [30.1, 66.9]' (x `scale`); a NaN bound prints as '?'."""

    def num(x: float) -> str:
        return "?" if math.isnan(x) else f"{x * scale:.{digits}f}"

    return f"{num(interval['mean'])} [{num(interval['lo'])}, {num(interval['hi'])}]"
